"""``context.secret(name)`` in each shim: the files in $PLAT_SECRETS_DIR, read by a
real shim subprocess over real HTTP; a missing secret is an error naming it."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.runtimes.shims import KINDS, NODE, ShimKind, running

pytestmark = pytest.mark.timeout(60)

# Each handler answers /text?name=N, /bytes?name=N (hex), and reports an error's
# type and message instead of failing the call.
HANDLERS = {
    "python": textwrap.dedent(
        """
        def handle(event, context):
            name = event.query.get("name")
            try:
                if event.path == "/bytes":
                    return context.secret_bytes(name).hex()
                return context.secret(name)
            except Exception as exc:
                return {"error": type(exc).__name__, "lookup": isinstance(exc, LookupError),
                        "message": str(exc)}
        """
    ),
    "node": textwrap.dedent(
        """
        module.exports = async (event, context) => {
          const name = event.query.name;
          try {
            if (event.path === '/bytes') return context.secretBytes(name).toString('hex');
            return context.secret(name);
          } catch (err) {
            return { error: err.name, lookup: err.name === 'SecretNotFoundError',
                     message: err.message };
          }
        };
        """
    ),
}


@pytest.fixture(
    params=[
        "python",
        pytest.param(
            "node", marks=pytest.mark.skipif(NODE is None, reason="node is not installed")
        ),
    ]
)
def kind(request: pytest.FixtureRequest) -> ShimKind:
    return KINDS[request.param]


def secrets_folder(root: Path) -> Path:
    """A folder as the daemon writes it: 0500, files 0400."""
    folder = root / "secrets"
    folder.mkdir()
    (folder / "db-password").write_bytes(b"hunter2\n")
    (folder / "api.key").write_bytes("ключ".encode())
    (folder / "blob").write_bytes(b"\x00\xff\x10")
    for path in folder.iterdir():
        path.chmod(0o400)
    folder.chmod(0o500)
    return folder


def test_a_handler_reads_its_secrets(kind: ShimKind, tmp_path: Path) -> None:
    folder = secrets_folder(tmp_path)
    app = kind.write(tmp_path / "app", HANDLERS[kind.name])
    with running(kind, app, PLAT_SECRETS_DIR=str(folder)) as shim:
        assert shim.request("GET", "/text?name=db-password").text == "hunter2\n"
        assert shim.request("GET", "/text?name=api.key").text == "ключ"
        assert shim.request("GET", "/bytes?name=blob").text == "00ff10"
        # Read on each call: a file the daemon replaced is seen at once.
        os.chmod(folder, 0o700)
        (folder / "db-password").unlink()
        (folder / "db-password").write_bytes(b"rotated")
        assert shim.request("GET", "/text?name=db-password").text == "rotated"


def test_a_missing_secret_is_an_error_naming_it(kind: ShimKind, tmp_path: Path) -> None:
    folder = secrets_folder(tmp_path)
    app = kind.write(tmp_path / "app", HANDLERS[kind.name])
    with running(kind, app, PLAT_SECRETS_DIR=str(folder)) as shim:
        answer = shim.request("GET", "/text?name=nope").json()
    assert answer["error"] == "SecretNotFoundError" and answer["lookup"] is True
    assert "nope" in answer["message"] and str(folder / "nope") in answer["message"]
    assert "plat secret set nope" in answer["message"]


def test_without_the_variable_the_container_path_is_read(kind: ShimKind, tmp_path: Path) -> None:
    app = kind.write(tmp_path / "app", HANDLERS[kind.name])
    env = {"PLAT_SECRETS_DIR": ""}
    with running(kind, app, **env) as shim:
        answer = shim.request("GET", "/text?name=surely-absent-here").json()
    assert answer["error"] == "SecretNotFoundError"
    assert "/var/plat/secrets/surely-absent-here" in answer["message"]


@pytest.mark.parametrize("name", ["..%2Fapp%2Fhandler", "..", "a%2Fb", "%00x"])
def test_names_that_leave_the_folder_are_refused(kind: ShimKind, tmp_path: Path, name: str) -> None:
    folder = secrets_folder(tmp_path)
    app = kind.write(tmp_path / "app", HANDLERS[kind.name])
    with running(kind, app, PLAT_SECRETS_DIR=str(folder)) as shim:
        answer = shim.request("GET", f"/text?name={name}").json()
    assert answer["error"] in {"ValueError", "TypeError"}
    assert "is not a secret name" in answer["message"]
