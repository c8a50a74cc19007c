"""Keeps credentials out of every log line, error and CLI output."""

from __future__ import annotations

import re
from urllib.parse import unquote

_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^@/\s]+)@")
_QUERY_SECRETS = re.compile(r"((?:password|authMechanismProperties|tlsCertificateKeyFilePassword)=)[^&\s]*", re.IGNORECASE)


def uri(text: str) -> str:
    """``mongodb://user:pw@host/db?password=x`` -> ``mongodb://***@host/db?password=***``.

    Works on any text that contains URIs (an error message, a log line).
    """
    text = _USERINFO.sub(r"\1***@", text)
    return _QUERY_SECRETS.sub(r"\1***", text)


def secrets_in(text: str) -> list[str]:
    """The password (and user:password) inside a URI's userinfo, if any."""
    match = _USERINFO.search(text)
    if not match:
        return []
    userinfo = match.group(2)
    found = [userinfo, unquote(userinfo)]
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        found += [password, unquote(password)]
    return [s for s in found if len(s) >= 3]  # never blank out every "a" in a log


class Redactor:
    """Redacts a known secret wherever it appears, plus any URI userinfo."""

    def __init__(self, *secrets: str) -> None:
        self._secrets = [s for s in secrets if s]

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return uri(text)
