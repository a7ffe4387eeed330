"""Keeps secrets out of everything a person or a log sees."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qs, unquote, urlsplit

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")


class Redactor:
    """Masks known secret values and passwords inside URLs."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def url_redactor(url: str) -> Redactor:
    """Masks the URL's password wherever a driver message might repeat it."""
    try:
        parts = urlsplit(url)
        given = [parts.password or ""] + parse_qs(parts.query).get("password", [])
    except ValueError:
        given = []
    return Redactor([s for p in given for s in (p, unquote(p))])
