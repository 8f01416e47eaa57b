"""`plat secret set|ls|rm` end to end: the real CLI against a real daemon on the process
backend; the values reach the function as files and are never printed."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands.remote import create_tenant, nowhere, process_daemon, remote
from tests.fixtures import PlatRunner, wait_for
from tests.functions import write_python_function

READER = """
def handle(event, context):
    return context.secret("db-password")
"""
VALUE = "s3cret-Ünïcode-value"


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    with process_daemon(tmp_path_factory.mktemp("secrets")) as runner:
        yield runner


def listing(plat: PlatRunner) -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in json.loads(plat.run("secret", "ls", "--json").stdout)}


def test_set_from_each_source_then_roll_the_function_using_it(
    plat: PlatRunner, tmp_path: Path
) -> None:
    created = plat.run("secret", "set", "db-password", input=VALUE)
    assert "created secret db-password (revision 1)" in created.stdout
    assert "newline" not in created.stderr
    folder = write_python_function(
        tmp_path, "reader", READER, extra_manifest="secrets: [db-password]\n"
    )
    plat.run("deploy", str(folder))
    assert plat.run("invoke", "reader").stdout == VALUE

    # From a file, byte for byte: the function using it is rolled onto it.
    source = tmp_path / "value.txt"
    source.write_bytes(b"from-a-file")
    updated = plat.run("secret", "set", "db-password", "--from-file", str(source))
    assert "updated secret db-password (revision 2)" in updated.stdout
    assert "rolled: reader" in updated.stdout
    assert wait_for(lambda: plat.run("invoke", "reader").stdout == "from-a-file", timeout=30)

    literal = plat.run("secret", "set", "db-password", "--from-literal", "lit-value")
    assert "(revision 3)" in literal.stdout

    # A trailing newline from stdin is kept, and said so.
    piped = plat.run("secret", "set", "db-password", input="with-newline\n")
    assert "ends with a newline" in piped.stderr
    assert wait_for(lambda: plat.run("invoke", "reader").stdout == "with-newline\n", timeout=30)

    row = listing(plat)["db-password"]
    assert (row["revision"], row["used_by"]) == (4, ["reader"])
    table = plat.run("secret", "ls").stdout
    assert table.split()[:5] == ["NAME", "REVISION", "UPDATED", "USED", "BY"]
    assert "reader" in table

    # Values are never printed: not by ls, not by describe.
    shown = "".join(
        plat.run(*args).stdout
        for args in (["secret", "ls"], ["secret", "ls", "--json"], ["describe", "reader"])
    )
    for value in (VALUE, "from-a-file", "lit-value", "with-newline"):
        assert value not in shown
    assert "db-password" in plat.run("describe", "reader").stdout

    # In use: rm refuses, naming the function; once the function is gone it goes.
    in_use = plat.run("secret", "rm", "db-password", check=False)
    assert in_use.returncode == 1
    assert "reader" in in_use.stderr
    plat.run("rm", "reader")
    assert "removed secret db-password" in plat.run("secret", "rm", "db-password").stdout
    assert "db-password" not in listing(plat)
    missing = plat.run("secret", "rm", "db-password", check=False)
    assert missing.returncode == 1


def test_secrets_belong_to_a_tenant(plat: PlatRunner) -> None:
    token = create_tenant(plat, "acme")
    as_acme = remote(plat, token)
    set_remotely = as_acme.run("secret", "set", "api-key", input="acme-key")
    assert "created secret api-key (revision 1)" in set_remotely.stdout
    assert "api-key" in listing(as_acme)
    assert "api-key" not in listing(plat)  # the admin's default tenant
    admin_for_acme = json.loads(plat.run("--tenant", "acme", "secret", "ls", "--json").stdout)
    assert [s["name"] for s in admin_for_acme] == ["api-key"]
    plat.run("tenant", "rm", "acme", "--force", "--yes")


def test_set_on_a_terminal_prompts_with_hidden_input(plat: PlatRunner) -> None:
    """On a terminal the value is asked twice, never echoed; nothing else is read."""
    master, slave = os.openpty()

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "plat", "secret", "set", "typed"],
        env=plat.env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, deadline: float) -> None:
        nonlocal seen
        while marker not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    return

    try:
        deadline = time.monotonic() + 60
        # The space after the colon comes once echo is off (getpass, after click's prompt):
        # input typed sooner would be flushed.
        read_until(b"value of typed: ", deadline)
        os.write(master, b"typed-value\n")
        read_until(b"confirmation: ", deadline)
        os.write(master, b"typed-value\n")
        read_until(b"revision", deadline)
        assert proc.wait(timeout=30) == 0, seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = re.sub(rb"\x1b\[[0-9;]*m", b"", seen)  # a terminal gets bold text
    assert b"created secret typed (revision 1)" in text
    assert b"typed-value" not in seen  # not echoed
    plat.run("secret", "rm", "typed")


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (["--from-file", "{file}", "--from-literal", "x"], None, "not both"),
        (["--from-file", "{tmp}"], None, "is a folder, not a file"),
        (["--from-file", "{tmp}/missing"], None, "No such file or directory"),
        (["--from-file", "{big}"], None, "larger than 1 MiB"),
        (["--from-file", "{empty}"], None, "is empty"),
        (["--from-literal", ""], None, "from --from-literal is empty"),
        ([], "", "from stdin is empty"),
    ],
)
def test_hostile_secret_input_fails_before_reaching_a_daemon(
    plat: PlatRunner, tmp_path: Path, args: list[str], stdin: str | None, says: str
) -> None:
    (tmp_path / "file").write_text("v")
    (tmp_path / "big").write_bytes(b"x" * (1024**2 + 1))
    (tmp_path / "empty").write_bytes(b"")
    paths = {k: str(tmp_path / k) for k in ("file", "big", "empty")}
    filled = [a.format(tmp=tmp_path, **paths) for a in args]
    cli = nowhere(plat)
    proc = cli.run("secret", "set", "db", *filled, check=False, input=stdin or "")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error:")
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path(cli.env["PLAT_HOME"]).exists()  # no daemon was started


@pytest.mark.parametrize("name", ["..", ".", "a/b"])
def test_names_that_cannot_be_files(plat: PlatRunner, name: str) -> None:
    cli = nowhere(plat)
    proc = cli.run("secret", "set", name, "--from-literal", "v", check=False)
    assert proc.returncode == 1
    assert "cannot name a secret" in proc.stderr
    assert not Path(cli.env["PLAT_HOME"]).exists()
