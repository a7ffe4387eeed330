"""Keeps secrets out of everything a person or a log sees.

A Redactor masks every occurrence of its secrets, in every form a receiver may echo them in
(see `secret_forms`), and the passwords of URLs. It runs in time linear in the text: all the
forms of all the secrets are found in one pass of an Aho-Corasick automaton (the Rust
`aho-corasick` crate, through the pinned `ahocorasick-rs` wheel: a regular expression of
thousands of alternatives takes seconds to compile and is tried branch by branch at every
position, and the engine builds one Redactor per failing batch).

Short secrets are masked too, however short: a user-configured secret must never appear, so a
one-character secret masks that character everywhere, and every base64 word in which it could
hide. That garbles messages, which is the price of a one-character secret.
"""

from __future__ import annotations

import contextlib
import re
from base64 import b64encode
from bisect import bisect_left
from collections.abc import Iterable
from itertools import chain
from urllib.parse import parse_qs, unquote, urlsplit

from ahocorasick_rs import AhoCorasick, Implementation, MatchKind

from ebbtide.config.secret_forms import forms_of

MASK = "***"
# The mask must share no character with any form of a secret: otherwise masking could leave
# (or build, next to a neighbour) a secret. "*" unless a secret contains it.
_MASK_CHARACTERS = "*¤•^!" + "".join(map(chr, range(0x2580, 0x25A0)))
# Anchored on "://" (a literal the engine finds fast) rather than on the scheme: a pattern that
# starts with `[a-z][a-z0-9+.-]*` rescans a long word from each of its letters. The user and
# password stop at "/", "?", "#" and spaces, as a URL's authority does, so each "://" looks at
# most up to the next one.
_URL_PASSWORD = re.compile(r"://(?P<user>[^:/?#\s]*):(?P<pw>[^/?#\s]+)@")
# Base64 text as it travels: both alphabets, padding, percent-escapes, JSON-escaped slashes.
_BASE64_WORD = re.compile(r"[A-Za-z0-9+/=_%\\-]*")
_MIN_CUT = 4
# Forms longer than this are found by pieces of `_PIECE` characters every `_STRIDE` (at most
# `_MAX_PIECES` of them): an echo of such a form that holds one of its pieces, as any echo of
# its beginning does, is masked as far as it agrees with the form.
_LONG, _PIECE, _STRIDE, _MAX_PIECES = 1024, 64, 256, 64
_SURROGATES = dict.fromkeys(range(0xD800, 0xE000), 0xFFFD)


class Redactor:
    """Masks known secret values, in every form they may come back in, and URL passwords."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = frozenset(s for s in secrets if s)
        forms = [forms_of(s) for s in self.secrets]
        base64 = set().union(*(f.base64 for f in forms))
        plain = set().union(*(f.plain for f in forms)) - base64
        # One-character secrets can match at every position: a character class masks their
        # runs at the speed of `re`, after the automaton has matched the longer forms.
        single = {p for p in plain if len(p) == 1}
        plain = {_searchable(p) for p in plain - single}
        long = {p for p in plain if len(p) > _LONG}
        # Base64 forms come last: a match of one masks its whole word.
        self._patterns = [*sorted(plain - long), *_base64_pieces(base64)]
        self._base64_from = len(plain - long)
        # Long plain forms are found by their pieces, each match widened to as far as the text
        # agrees with a form holding it; without overlaps, a periodic text gives few matches.
        self._places = _places(long)
        self.mask = _mask_for([*self._patterns, *self._places, *single])
        self._matcher = _automaton(self._patterns, MatchKind.Standard)
        self._piece_matcher = _automaton(list(self._places), MatchKind.LeftmostFirst)
        self._pieces = list(self._places)
        # For `cut_off`: which forms start a given text.
        self._sorted = sorted([*self._patterns, *self._pieces])
        self._longest = max(map(len, self._sorted), default=0)
        self._single = (
            re.compile(f"[{''.join(map(re.escape, sorted(single)))}]+") if single else None
        )

    def with_values(self, values: Iterable[str]) -> Redactor:
        """This Redactor's secrets and `values` (a record's sensitive values, say)."""
        more = self.secrets | {v for v in values if v}
        return self if more == self.secrets else Redactor(more)

    def __call__(self, text: str) -> str:
        text = self._masked(text)
        if self._single is not None:
            text = self._single.sub(self.mask, text)
        return _URL_PASSWORD.sub(lambda m: f"://{m['user']}:{self.mask}@", text)

    def cut_off(self, text: str) -> str:
        """Masks `text`, which someone else may have cut short (an excerpt of a body): a form
        of a secret whose first characters end it is masked too. Below 4 characters such a
        beginning says too little of a secret to give up the end of every message for it."""
        text = self(text)
        for size in range(min(self._longest - 1, len(text)), _MIN_CUT - 1, -1):
            tail = text[-size:]
            at = bisect_left(self._sorted, tail)
            if at < len(self._sorted) and self._sorted[at].startswith(tail):
                return text[:-size] + self.mask
        return text

    def _masked(self, text: str) -> str:
        spans = self._spans(text)
        if not spans:
            return text
        parts: list[str] = []
        done = 0
        for start, end in _union(spans):
            parts += [text[done:start], self.mask]
            done = end
        parts.append(text[done:])
        return "".join(parts)

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Every match, base64 ones widened to their word, pieces to their form's echo."""
        spans: list[tuple[int, int]] = []
        searchable = _searchable(text)
        if self._matcher is not None:
            words = _Words(text)
            for pattern, start, end in self._matcher.find_matches_as_indexes(searchable, True):
                spans.append(
                    words.around(start, end) if pattern >= self._base64_from else (start, end)
                )
        if self._piece_matcher is not None:
            agreed = (0, 0)
            for pattern, start, end in self._piece_matcher.find_matches_as_indexes(searchable):
                if not (agreed[0] <= start and end <= agreed[1]):  # other pieces of one echo
                    places = self._places[self._pieces[pattern]]
                    agreed = _agreeing(searchable, start, end, places)
                spans.append(agreed)
        return spans


def _searchable(text: str) -> str:
    """The text as the automaton can read it: Rust strings hold no lone surrogates (a JSON
    escape such as \\udc80 makes one), so each becomes U+FFFD, one character for one to keep
    every position."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.translate(_SURROGATES)
    return text


def _automaton(patterns: list[str], kind: MatchKind) -> AhoCorasick | None:
    # A contiguous NFA: the DFA the library picks for small sets grows with the patterns.
    if not patterns:
        return None
    return AhoCorasick(patterns, matchkind=kind, implementation=Implementation.ContiguousNFA)


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted disjoint regions covering the spans (nearly sorted already: a cheap sort)."""
    spans.sort()
    regions = [spans[0]]
    for start, end in spans[1:]:
        if start <= regions[-1][1]:
            if end > regions[-1][1]:
                regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return regions


def _places(forms: set[str]) -> dict[str, list[tuple[str, int]]]:
    """Each piece of the long forms, with where it sits in which of them."""
    places: dict[str, list[tuple[str, int]]] = {}
    for form in sorted(forms):
        for piece, offset in _pieces(form):
            places.setdefault(piece, []).append((form, offset))
    return places


def _base64_pieces(forms: set[str]) -> list[str]:
    return sorted({piece for form in forms for piece, _ in _pieces(form)})


def _pieces(form: str) -> list[tuple[str, int]]:
    """What the automaton looks for to find `form`: itself, or for a long one (a big sensitive
    value) pieces of it every `_STRIDE` characters. An automaton grows with what it looks for,
    and holding a megabyte value whole takes seconds and a gigabyte."""
    if len(form) <= _LONG:
        return [(form, 0)]
    stride = max(_STRIDE, len(form) // _MAX_PIECES)
    offsets = [*range(0, len(form) - _PIECE, stride), len(form) - _PIECE]
    return [(form[at : at + _PIECE], at) for at in offsets]


def _agreeing(text: str, start: int, end: int, places: list[tuple[str, int]]) -> tuple[int, int]:
    """Where `text` agrees with the long forms around a piece of them found at `start:end`:
    the whole form, or as much of it as the text holds (an echo cut short)."""
    before = max(_common(text, start, form, at, forward=False) for form, at in places)
    after = max(_common(text, end, form, at + end - start, forward=True) for form, at in places)
    return start - before, end + after


def _common(a: str, i: int, b: str, j: int, *, forward: bool) -> int:
    """How many characters `a` and `b` share after (or before) positions `i` and `j`; slices
    compare in C, so a binary search over their length stays fast on long values."""
    low, high = 0, min(len(a) - i, len(b) - j) if forward else min(i, j)
    while low < high:
        size = (low + high + 1) // 2
        same = a[i : i + size] == b[j : j + size] if forward else a[i - size : i] == b[j - size : j]
        low, high = (size, high) if same else (low, size - 1)
    return low


class _Words:
    """The base64 word around a match: masked whole, since all of it encodes the secret's
    surroundings and the edges of the secret itself."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._reversed: str | None = None
        self._last = (0, 0)  # matches inside the last word found need no new scan

    def around(self, start: int, end: int) -> tuple[int, int]:
        if self._last[0] <= start and end <= self._last[1]:
            return self._last
        if self._reversed is None:
            self._reversed = self.text[::-1]
        size = len(self.text)
        before = _BASE64_WORD.match(self._reversed, size - start)
        after = _BASE64_WORD.match(self.text, end)
        assert before is not None and after is not None  # `*` always matches
        self._last = (size - before.end(), after.end())
        return self._last


def _mask_for(patterns: list[str]) -> str:
    used = set().union(*patterns) if patterns else set()
    # Past the usual ones, any character no secret uses will do: there is always one.
    candidates = chain(_MASK_CHARACTERS, map(chr, range(0xE000, 0x110000)))
    return next(c for c in candidates if c not in used) * 3


def basic_credentials(url: str) -> list[str]:
    """The `Authorization: Basic` value an HTTP client makes of a URL's user and password.

    A server echoing that header base64-encodes it again: only this value, as a secret of its
    own, is found inside the second layer.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    if parts.password is None:
        return []
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password)}"
    values = set()
    for encoding in ("utf-8", "latin-1"):  # aiohttp and requests encode it as Latin-1
        with contextlib.suppress(UnicodeEncodeError):
            values.add(b64encode(pair.encode(encoding)).decode())
    return sorted(values)


def url_redactor(url: str) -> Redactor:
    """Masks the URL's password wherever a driver message might repeat it."""
    try:
        parts = urlsplit(url)
        given = [parts.password or ""] + parse_qs(parts.query).get("password", [])
    except ValueError:
        given = []
    return Redactor([s for p in given for s in (p, unquote(p))])
