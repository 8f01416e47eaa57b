"""The gateway's basic-auth credentials: user ``admin``, password generated at first start."""

from __future__ import annotations

import base64
import hmac
import os
import secrets

from plat.errors import PlatError
from plat.paths import Home

USER = "admin"


def ensure_password(home: Home) -> str:
    """The password in ``$PLAT_HOME/credentials`` (mode 0600), created when absent.

    Raises PlatError naming the file when the home cannot be written."""
    path = home.credentials
    if path.is_file():
        return read_password(home)
    password = secrets.token_urlsafe(18)
    try:
        home.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{USER}:{password}\n")
    except FileExistsError:
        return read_password(home)  # another process made it meanwhile
    except OSError as exc:
        raise home.unusable(exc, path) from None
    return password


def read_password(home: Home) -> str:
    try:
        text = home.credentials.read_text().strip()
    except FileNotFoundError:
        raise PlatError(
            f"no credentials in {home.root}", hint="start the daemon once: `plat daemon start`"
        ) from None
    user, _, password = text.partition(":")
    if user != USER or not password:
        raise PlatError(
            f"{home.credentials} is malformed",
            hint="delete it and restart the daemon to generate a new password",
        )
    return password


def ensure_admin_token(home: Home) -> str:
    """The admin's API token in ``$PLAT_HOME/admin.token`` (mode 0600), created when
    absent: what a remote admin sends as ``Authorization: Bearer <token>``."""
    path = home.admin_token
    if path.is_file():
        return read_admin_token(home)
    token = "plat_admin_" + secrets.token_urlsafe(32)
    try:
        home.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
    except FileExistsError:
        return read_admin_token(home)
    except OSError as exc:
        raise home.unusable(exc, path) from None
    return token


def read_admin_token(home: Home) -> str:
    try:
        token = home.admin_token.read_text().strip()
    except FileNotFoundError:
        raise PlatError(
            f"no admin token in {home.root}", hint="start the daemon once: `plat daemon start`"
        ) from None
    if not token:
        raise PlatError(
            f"{home.admin_token} is empty",
            hint="delete it and restart the daemon to make a new one",
        )
    return token


def basic_header(password: str, user: str = USER) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def check_basic(header: str | None, expected: str) -> bool:
    """Whether an Authorization header carries the expected ``Basic`` credentials.

    ``expected`` is ``basic_header(password)``; the comparison is constant-time.
    """
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    return hmac.compare_digest(token.strip().encode(), expected[6:].encode())
