"""Keeps credentials out of every log line, error and CLI output."""

from __future__ import annotations

import re
from urllib.parse import unquote

#: A URI's scheme and "://". Its length is bounded, and the userinfo after it
#: is found by ``uri`` below rather than by a backtracking ``\S+@``: either way
#: a long value (a 100 kB job id in a log line) took time quadratic in its
#: length, seconds per line.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://")
_SPACE = re.compile(r"\s")
_QUERY_SECRETS = re.compile(
    r"((?:password|authMechanismProperties|tlsCertificateKeyFilePassword)=)[^&\s]*", re.IGNORECASE
)
#: Shorter fragments are not masked: blanking every "a" in a log helps nobody.
MIN_SECRET_CHARS = 3


def uri(text: str) -> str:
    """``mongodb://user:pw@host/db?password=x`` -> ``mongodb://***@host/db?password=***``.

    Works on any text that contains URIs (an error message, a log line), in
    time linear in its length.
    """
    return _QUERY_SECRETS.sub(r"\1***", _mask_userinfo(text))


def _mask_userinfo(text: str) -> str:
    # Up to the last "@" of the word: a password typed unescaped may hold
    # "@", "/" or ":", and masking too much is the safe side.
    parts: list[str] = []
    done = 0
    while (scheme := _SCHEME.search(text, done)) is not None:
        start = scheme.end()
        space = _SPACE.search(text, start)
        word_end = space.start() if space is not None else len(text)
        at = text.rfind("@", start, word_end)
        if at > start:
            parts.append(text[done:start] + "***@")
            done = at + 1
        else:
            parts.append(text[done:word_end])
            done = word_end
    parts.append(text[done:])
    return "".join(parts)


def secrets_in(text: str) -> list[str]:
    """The userinfo (``user:password``) and password of a connection string,
    whatever its shape: with or without a scheme, escaped or not, and any
    ``password=`` query option."""
    found: list[str] = []
    rest = text.split("://", 1)[1] if "://" in text else text
    words = rest.split()
    # The first word up to its last "@"; and, since a password typed
    # unescaped may hold a space, the whole text up to its last "@" too.
    for candidate in (words[0] if words else "", rest.strip()):
        if "@" not in candidate:
            continue
        userinfo = candidate.rpartition("@")[0]
        found += [userinfo, unquote(userinfo)]
        if ":" in userinfo:
            password = userinfo.split(":", 1)[1]
            found += [password, unquote(password)]
    for match in re.finditer(r"(?:password|tlsCertificateKeyFilePassword)=([^&\s]*)", text, re.IGNORECASE):
        found += [match.group(1), unquote(match.group(1))]
    return [s for s in dict.fromkeys(found) if len(s) >= MIN_SECRET_CHARS]


class Redactor:
    """Redacts a known secret wherever it appears, plus any URI userinfo."""

    def __init__(self, *secrets: str) -> None:
        self._secrets = [s for s in secrets if s]

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets.append(secret)
            # Longest first: a password inside the userinfo must not leave the user's half.
            self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return uri(text)
