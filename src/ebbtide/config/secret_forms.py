"""Every form in which a secret can come back in a text: raw, escaped, percent-encoded, base64.

A receiver that echoes a request repeats what it got in its own encoding: JSON-escaped inside
its error body, percent-encoded in a URL it quotes, base64 inside an `Authorization: Basic`
header. Each form is a literal to look for; base64 forms are flagged, because a base64 match
masks the whole base64 token around it (the rest of it still encodes the secret's neighbours,
and bits of the secret itself at its edges).
"""

from __future__ import annotations

import contextlib
import html
import itertools
import json
import re
from base64 import b64encode
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, quote_plus

_STANDARD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_URLSAFE = _STANDARD[:62] + "-_"
# A base64 core this long is specific enough to stand for the secret; a shorter one would
# match most words, so short secrets list their edge characters too (see _base64_forms).
_MIN_CORE = 4
# From 4 bytes on, every alignment has a core of 4 characters or more (computed directly; the
# bit by bit enumeration below is for the few edge characters of shorter data).
_LONG_DATA = 4
_TO_URLSAFE = str.maketrans("+/", "-_")
_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")
_JSON_HEX = re.compile(r"\\u[0-9a-f]{4}")


@dataclass(frozen=True)
class Forms:
    """The literals standing for one secret: plain forms, and forms inside base64 text."""

    plain: frozenset[str]
    base64: frozenset[str]


def forms_of(secret: str) -> Forms:
    """Every literal under which `secret` may reappear in a text."""
    # Sensitive values repeat across records and runs; a long one is not worth keeping.
    return _cached_forms(secret) if len(secret) <= 1024 else _forms(secret)


@lru_cache(maxsize=8192)
def _cached_forms(secret: str) -> Forms:
    return _forms(secret)


def _forms(secret: str) -> Forms:
    plain = {secret, " ".join(secret.split())}  # a receiver may collapse whitespace
    plain |= _json_forms(secret)
    plain |= _percent_forms(secret)
    plain.add(html.escape(secret))
    base64 = set()
    for data in _encoded(secret):
        for form in _base64_forms(data):
            base64 |= _escaped_base64(form)
    plain.discard("")
    return Forms(frozenset(plain), frozenset(base64))


def _encoded(secret: str) -> set[bytes]:
    """The secret's bytes: UTF-8, and Latin-1 as HTTP clients encode Basic credentials."""
    encoded = {secret.encode("utf-8", "surrogatepass")}
    with contextlib.suppress(UnicodeEncodeError):
        encoded.add(secret.encode("latin-1"))
    return encoded


def _json_forms(secret: str) -> set[str]:
    escaped = {json.dumps(secret, ensure_ascii=a)[1:-1] for a in (True, False)}
    escaped |= {_JSON_HEX.sub(lambda m: m[0][:2] + m[0][2:].upper(), e) for e in escaped}
    escaped |= {e.replace("/", "\\/") for e in escaped}  # PHP and others escape the slash
    twice = {json.dumps(e, ensure_ascii=a)[1:-1] for e in escaped for a in (True, False)}
    return escaped | twice  # JSON quoted inside a JSON string: an echoed request body


def _percent_forms(secret: str) -> set[str]:
    encoded = {
        encode(secret, safe=safe, errors="surrogatepass")
        for encode in (quote, quote_plus)
        for safe in ("", "/")
    }
    return encoded | {_PERCENT_HEX.sub(lambda m: m[0].lower(), e) for e in encoded}


def _escaped_base64(form: str) -> set[str]:
    """Base64 text as a URL or a JSON string may carry it."""
    variants = {form, form.replace("/", "\\/")}
    quoted = quote(form, safe="")
    return variants | {quoted, _PERCENT_HEX.sub(lambda m: m[0].lower(), quoted)}


def _base64_forms(data: bytes) -> set[str]:
    """What base64 text containing `data` at any offset must contain, in both alphabets.

    Base64 turns 3 bytes into 4 characters, so `data` starts at one of 3 alignments within a
    group. For each, the characters whose 6 bits all come from `data` (its core) are the same
    whatever surrounds it. The characters at either edge mix in the neighbours' bits: when the
    core is too short to be specific, every possible edge character is listed instead.
    """
    forms: set[str] = set()
    for offset in range(3):
        for alphabet in (_STANDARD, _URLSAFE):
            forms |= _aligned(data, offset, alphabet)
    forms.discard("")
    return forms


def _aligned(data: bytes, offset: int, alphabet: str) -> set[str]:
    if len(data) >= _LONG_DATA:
        return {_core(data, offset, alphabet)}
    start, end = 8 * offset, 8 * (offset + len(data))  # where `data`'s bits lie in the stream
    bits = "".join(f"{byte:08b}" for byte in data)
    choices = [
        _characters(
            {i - first: bits[i - start] for i in range(first, first + 6) if start <= i < end},
            alphabet,
        )
        for first in range(start - start % 6, end, 6)  # each character touching `data`
    ]
    core = "".join(c[0] for c in choices if len(c) == 1)
    if len(core) >= _MIN_CORE:
        return {core}
    return {"".join(combo) for combo in itertools.product(*choices)}


def _core(data: bytes, offset: int, alphabet: str) -> str:
    """The characters of base64 text that `data` alone decides, `offset` bytes into a group:
    from the first that starts within it to the last that ends within it."""
    encoded = b64encode(bytes(offset) + data).decode()
    if alphabet is _URLSAFE:
        encoded = encoded.translate(_TO_URLSAFE)
    return encoded[-(-8 * offset // 6) : 8 * (offset + len(data)) // 6]


def _characters(known: dict[int, str], alphabet: str) -> list[str]:
    """The base64 characters whose bits agree with the `known` ones (position: bit)."""
    return [
        alphabet[value]
        for value in range(64)
        if all(f"{value:06b}"[pos] == bit for pos, bit in known.items())
    ]
