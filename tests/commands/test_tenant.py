"""`plat tenant ...`, `plat --tenant`, `plat auth token` and the CLI over PLAT_URL,
end to end: the real CLI (subprocesses) against a real daemon on the process backend."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands.remote import create_tenant, nowhere, process_daemon, remote
from tests.fixtures import PlatRunner
from tests.functions import write_python_function

WHO = """
def handle(event, context):
    return {"tenant": "%s"}
"""


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    with process_daemon(tmp_path_factory.mktemp("tenants")) as runner:
        yield runner


def test_create_prints_the_token_once_with_how_to_use_it(plat: PlatRunner) -> None:
    proc = plat.run("tenant", "create", "acme", "--max-instances", "5", "--max-memory", "2Gi")
    assert "created tenant acme (instances: 5, memory: 2Gi)" in proc.stdout
    token = next(w for w in proc.stdout.split() if w.startswith("plat_acme_"))
    assert f"use:   PLAT_URL={plat.gateway} PLAT_TOKEN={token} plat deploy" in proc.stdout
    assert "shown only now" in proc.stderr
    assert "not isolated" in proc.stderr  # what the process backend cannot do, said once

    listed = json.loads(plat.run("tenant", "ls", "--json").stdout)
    acme = next(t for t in listed if t["name"] == "acme")
    assert (acme["max_instances"], acme["max_memory"], acme["functions"]) == (5, 2 * 1024**3, 0)
    assert token not in json.dumps(listed)
    table = plat.run("tenant", "ls").stdout
    assert table.split()[:5] == ["NAME", "FUNCTIONS", "INSTANCES", "MEMORY", "CREATED"]
    assert "0/5" in table and "2Gi" in table

    again = plat.run("tenant", "create", "acme", check=False)
    assert again.returncode == 1
    assert "error:" in again.stderr and "acme" in again.stderr

    # Shown once: asking again explains why not, and how to get a new one.
    shown = plat.run("tenant", "token", "acme", check=False)
    assert shown.returncode == 1
    assert "tokens are stored only as hashes" in shown.stderr
    assert "--rotate" in shown.stderr
    assert token not in shown.stdout + shown.stderr

    # The token works remotely until it is rotated; the new one works at once.
    assert remote(plat, token).run("ls", "--json").stdout.strip() == "[]"
    rotated = plat.run("tenant", "token", "acme", "--rotate")
    new = next(w for w in rotated.stdout.split() if w.startswith("plat_acme_"))
    assert new != token
    refused = remote(plat, token).run("ls", check=False)
    assert refused.returncode == 1
    assert "the token was refused: check PLAT_TOKEN" in refused.stderr
    assert remote(plat, new).run("ls", "--json").stdout.strip() == "[]"


def test_a_tenant_deploys_remotely_and_the_admin_sees_it(plat: PlatRunner, tmp_path: Path) -> None:
    token = create_tenant(plat, "beta")
    folder = write_python_function(tmp_path, "who", WHO % "beta")
    as_beta = remote(plat, token)
    deployed = as_beta.run("deploy", str(folder))
    assert "uploading who:" in deployed.stderr and "packed" in deployed.stderr
    assert f"URL:  {plat.gateway}/function/who.beta" in deployed.stdout
    assert "Authorization: Bearer $PLAT_TOKEN" in deployed.stdout
    assert not Path(as_beta.env["PLAT_HOME"]).exists()  # nothing local was used

    # The tenant calls its function by its plain name, with its token.
    assert json.loads(as_beta.run("invoke", "who").stdout) == {"tenant": "beta"}
    listed = json.loads(as_beta.run("ls", "--json").stdout)
    assert [(f["name"], f["tenant"]) for f in listed] == [("who", "beta")]
    described = as_beta.run("describe", "who").stdout
    assert "tenant" in described and "beta" in described

    # The admin: the same name in default is another function; ls shows tenants.
    default = write_python_function(tmp_path / "d", "who", WHO % "default")
    plat.run("deploy", str(default))
    assert json.loads(plat.run("invoke", "who").stdout) == {"tenant": "default"}
    assert json.loads(plat.run("--tenant", "beta", "invoke", "who").stdout) == {"tenant": "beta"}
    table = plat.run("ls").stdout
    assert table.split()[:2] == ["TENANT", "NAME"]
    rows = {tuple(line.split()[:2]) for line in table.splitlines()[1:]}
    assert {("beta", "who"), ("default", "who")} <= rows
    only_beta = json.loads(plat.run("--tenant", "beta", "ls", "--json").stdout)
    assert [f["tenant"] for f in only_beta] == ["beta"]

    # The tenant sees nothing of default's, and cannot reach the admin's routes.
    assert [f["tenant"] for f in json.loads(as_beta.run("ls", "--json").stdout)] == ["beta"]
    forbidden = as_beta.run("tenant", "ls", check=False)
    assert forbidden.returncode == 1
    assert "admin" in forbidden.stderr

    # rm: refused while it has functions; --force asks (no terminal: needs --yes).
    in_use = plat.run("tenant", "rm", "beta", check=False)
    assert in_use.returncode == 1
    assert "has 1 function(s): who" in in_use.stderr
    assert "--force" in in_use.stderr
    unasked = plat.run("tenant", "rm", "beta", "--force", check=False, input="")
    assert unasked.returncode == 1
    assert "add --yes" in unasked.stderr
    assert plat.run("--tenant", "beta", "describe", "who", check=False).returncode == 0
    plat.run("tenant", "rm", "beta", "--force", "--yes")
    assert "beta" not in plat.run("tenant", "ls").stdout + plat.run("ls").stdout
    gone = as_beta.run("ls", check=False)
    assert gone.returncode == 1
    assert "the token was refused" in gone.stderr
    plat.run("rm", "who")


def test_admin_token_works_remotely_for_any_tenant(plat: PlatRunner, tmp_path: Path) -> None:
    admin = plat.run("auth", "token").stdout.strip()
    assert admin == (plat.home / "admin.token").read_text().strip()
    create_tenant(plat, "gamma")
    as_admin = remote(plat, admin)
    assert "gamma" in as_admin.run("tenant", "ls").stdout
    folder = write_python_function(tmp_path, "ping", WHO % "gamma")
    as_admin.run("--tenant", "gamma", "deploy", str(folder))
    assert json.loads(as_admin.run("--tenant", "gamma", "invoke", "ping").stdout) == {
        "tenant": "gamma"
    }
    # Locally (the socket), --tenant deploys for the tenant too.
    local = write_python_function(tmp_path / "local", "pong", WHO % "gamma")
    deployed = plat.run("--tenant", "gamma", "deploy", str(local))
    assert "/function/pong.gamma" in deployed.stdout
    assert "plat --tenant gamma invoke pong" in deployed.stdout
    assert json.loads(plat.run("--tenant", "gamma", "invoke", "pong").stdout) == {"tenant": "gamma"}
    # PLAT_TENANT is the same as --tenant.
    by_env = remote(plat, admin, PLAT_TENANT="gamma")
    names = sorted(f["name"] for f in json.loads(by_env.run("ls", "--json").stdout))
    assert names == ["ping", "pong"]
    # The flags are the same as the variables.
    flags = plat.run("--url", plat.gateway, "--token", admin, "--tenant", "gamma", "ls", "--json")
    assert sorted(f["name"] for f in json.loads(flags.stdout)) == ["ping", "pong"]
    # Remotely, the admin's local secrets are not there to print.
    local_only = as_admin.run("auth", "token", check=False)
    assert local_only.returncode == 1
    assert "daemon's machine" in local_only.stderr
    plat.run("tenant", "rm", "gamma", "--force", "--yes")


def test_an_unknown_tenant(plat: PlatRunner) -> None:
    missing = plat.run("--tenant", "nobody", "ls", check=False)
    assert missing.returncode == 1
    assert "nobody" in missing.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tenant", "create", "acme", "--max-memory", "lots"], "--max-memory 'lots'"),
        (["tenant", "create", "acme", "--max-instances", "-1"], "must not be negative"),
        (["tenant", "create", "Acme_Corp"], "is not a tenant name"),
        (["tenant", "create", "default"], "built-in tenant"),
        (["tenant", "rm", "../etc"], "is not a tenant name"),
        (["--tenant", "Not A Tenant", "ls"], "is not a tenant name"),
    ],
)
def test_hostile_tenant_input_fails_before_reaching_a_daemon(
    plat: PlatRunner, args: list[str], says: str
) -> None:
    cli = nowhere(plat)
    proc = cli.run(*args, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error:")
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path(cli.env["PLAT_HOME"]).exists()  # no daemon was started


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PLAT_URL": "http://127.0.0.1:9"}, "PLAT_URL is set (http://127.0.0.1:9) but PLAT_TOKEN"),
        ({"PLAT_URL": "127.0.0.1:8080", "PLAT_TOKEN": "t"}, "has no scheme"),
        ({"PLAT_URL": "ftp://h", "PLAT_TOKEN": "t"}, "must be http or https"),
        ({"PLAT_URL": "http://127.0.0.1:9", "PLAT_TOKEN": "a b"}, "PLAT_TOKEN holds spaces"),
    ],
)
def test_bad_remote_settings(plat: PlatRunner, env: dict[str, str], says: str) -> None:
    cli = nowhere(plat)
    cli.env.update(env)
    proc = cli.run("ls", check=False)
    assert proc.returncode == 1, proc.stderr
    assert says in proc.stderr
    assert not Path(cli.env["PLAT_HOME"]).exists()


def test_nothing_listening_at_the_url(plat: PlatRunner) -> None:
    cli = nowhere(plat)
    port = cli.env["PLAT_GATEWAY_PORT"]  # free: nothing listens there
    cli.env.update({"PLAT_URL": f"http://127.0.0.1:{port}", "PLAT_TOKEN": "plat_x_y"})
    proc = cli.run("deploy", "--help", check=False)
    assert proc.returncode == 0
    proc = cli.run("ls", check=False)
    assert proc.returncode == 1
    assert f"nothing answers at http://127.0.0.1:{port} (connection refused)" in proc.stderr
    assert not Path(cli.env["PLAT_HOME"]).exists()


def test_remote_deploy_of_an_unsafe_folder_uploads_nothing(
    plat: PlatRunner, tmp_path: Path
) -> None:
    token = create_tenant(plat, "delta")
    folder = write_python_function(tmp_path, "leaky", WHO % "delta")
    (folder / "passwd").symlink_to("/etc/passwd")
    proc = remote(plat, token).run("deploy", str(folder), check=False)
    assert proc.returncode == 1
    assert "passwd" in proc.stderr
    assert "uploading" not in proc.stderr
    assert json.loads(plat.run("--tenant", "delta", "ls", "--json").stdout) == []
    # A bigger folder shows what it uploads.
    (folder / "passwd").unlink()
    (folder / "data.bin").write_bytes(os.urandom(5 * 1024**2))
    big = remote(plat, token).run("deploy", str(folder))
    assert "uploading leaky: 4 files, 5.0 MiB packed" in big.stderr
    plat.run("tenant", "rm", "delta", "--force", "--yes")


def test_plat_dev_refuses_a_daemon_at_a_url(plat: PlatRunner, tmp_path: Path) -> None:
    token = create_tenant(plat, "devremote")
    folder = write_python_function(tmp_path, "watched", "def handle(e, c):\n    return 'x'\n")
    proc = remote(plat, token).run("dev", str(folder), check=False, timeout=60)
    assert proc.returncode == 1
    assert "not with one at PLAT_URL" in proc.stderr and "Traceback" not in proc.stderr
