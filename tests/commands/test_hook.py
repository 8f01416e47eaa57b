"""`plat hook add|ls|rm|deliveries` end to end: the real CLI, a real daemon on the
process backend, a real bare git repository whose post-receive script sends
signed GitHub deliveries; production and a preview deployed from pushes."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.commands.remote import create_tenant, process_daemon, remote
from tests.daemon.hooks.gitrepo import Repo
from tests.fixtures import PlatRunner, wait_for

HANDLER = """
def handle(event, context):
    return "{text}"
"""
FILES = {
    "svc/plat.yaml": "name: web\nruntime: python\nhandler: handler.handle\nauth: public\n",
    "svc/handler.py": HANDLER.format(text="v1"),
    "svc/requirements.txt": "",
}


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    with process_daemon(tmp_path_factory.mktemp("hooks")) as runner:
        yield runner


def deliveries(plat: PlatRunner, name: str) -> list[dict[str, Any]]:
    return json.loads(plat.run("hook", "deliveries", name, "--json").stdout)


def settled(plat: PlatRunner, name: str, count: int) -> list[dict[str, Any]]:
    """The hook's newest ``count`` deliveries, once none of them is at work."""
    final = {"done", "failed", "ignored", "duplicate", "rejected"}
    assert wait_for(
        lambda: len(d := deliveries(plat, name)) >= count and all(x["state"] in final for x in d),
        timeout=120,
        interval=0.5,
    ), deliveries(plat, name)
    return deliveries(plat, name)


def get(url: str, host: str | None = None) -> str:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def test_add_push_preview_and_remove(plat: PlatRunner, tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo", FILES)
    added = plat.run("hook", "add", "web", "--repo", str(repo.bare), "--path", "svc")
    assert "/hooks/git/" in added.stdout and "shown once" in added.stdout
    [hook] = json.loads(plat.run("hook", "ls", "--json").stdout)
    assert hook["function"] == "web" and hook["branch"] == "main" and hook["previews"]
    assert hook["url"].startswith(plat.gateway + "/hooks/git/")
    secret = added.stdout.split("secret")[1].split()[0]
    assert secret not in plat.run("hook", "ls").stdout
    repo.hook_up("github", hook["url"], secret)

    repo.commit({"svc/handler.py": HANDLER.format(text="v2")}, "v2")
    repo.push("main")
    assert repo.answers()[-1]["status"] == 202
    [first] = settled(plat, "web", 1)
    assert first["state"] == "done", plat.run("hook", "deliveries", "web", "--log", "1").stdout
    assert first["target"] == "web" and first["provider"] == "github"
    assert get(f"{plat.gateway}/function/web") == "v2"

    repo.commit({"svc/handler.py": HANDLER.format(text="feature")}, "feature")
    repo.push("HEAD:refs/heads/feature/X_1")
    newest = settled(plat, "web", 2)[0]
    assert newest["state"] == "done" and newest["target"] == "web--feature-x-1"
    port = plat.port
    assert newest["url"] == f"http://feature-x-1--web.localhost:{port}/"
    assert get(f"{plat.gateway}/function/web--feature-x-1") == "feature"
    assert get(f"{plat.gateway}/", host=f"feature-x-1--web.localhost:{port}") == "feature"
    assert get(f"{plat.gateway}/function/web") == "v2"  # production untouched
    listing = plat.run("ls").stdout
    assert "PREVIEW" in listing and "feature/X_1 (expires in 2d" in listing
    log = plat.run("hook", "deliveries", "web", "--log", str(newest["seq"])).stdout
    assert "fetching" in log and "deployed" in log

    repo.push("--delete", "feature/X_1")
    newest = settled(plat, "web", 3)[0]
    assert newest["state"] == "done" and newest["action"] == "remove"
    names = [fn["name"] for fn in json.loads(plat.run("ls", "--json").stdout)]
    assert names == ["web"]

    removed = plat.run("hook", "rm", "web")
    assert "removed hook" in removed.stdout
    assert json.loads(plat.run("hook", "ls", "--json").stdout) == []
    assert repo.answers() and plat.run("hook", "rm", "web", check=False).returncode == 1


def test_errors_speak_to_the_user(plat: PlatRunner, tmp_path: Path) -> None:
    relative = plat.run("hook", "add", "x", "--repo", "not/a/folder", check=False)
    assert relative.returncode == 1 and "relative path" in relative.stderr
    ext = plat.run("hook", "add", "x", "--repo", "ext::sh -c touch% /tmp/pwned", check=False)
    assert ext.returncode == 1 and "not allowed" in ext.stderr
    assert not Path("/tmp/pwned").exists()
    long = plat.run("hook", "add", "a" * 60, "--repo", "https://example.com/r.git", check=False)
    assert long.returncode == 1 and "--no-previews" in long.stderr
    ttl = plat.run(
        "hook", "add", "x", "--repo", "https://e.com/r.git", "--preview-ttl", "1s", check=False
    )
    assert ttl.returncode == 1 and "preview-ttl" in ttl.stderr
    for bad in ("0s", "3d", "-1h", "forever"):  # refused by the CLI, named by its flag
        ttl = plat.run(
            "hook", "add", "x", "--repo", "https://e.com/r.git", "--preview-ttl", bad, check=False
        )
        assert ttl.returncode == 2 and "Invalid value for --preview-ttl" in ttl.stderr, bad
    plat.run("hook", "add", "x", "--repo", "https://example.com/r.git", "--no-previews")
    again = plat.run("hook", "add", "x", "--repo", "https://example.com/r.git", check=False)
    assert again.returncode == 1 and "has a hook already" in again.stderr
    missing = plat.run("hook", "deliveries", "nope", check=False)
    assert missing.returncode == 1 and "no hook" in missing.stderr
    assert plat.run("hook", "deliveries", "x").stderr.startswith("no deliveries yet")
    plat.run("hook", "rm", "x")


def test_a_tenant_sees_its_own_hooks_and_no_host_paths(plat: PlatRunner) -> None:
    token = create_tenant(plat, "acme")
    acme = remote(plat, token)
    local = acme.run("hook", "add", "web", "--repo", "/srv/repo.git", check=False)
    assert local.returncode == 1 and "only the admin" in local.stderr
    for repo in ("git@github.com:acme/r.git", "ssh://git@example.com/r.git", "file:///srv/r"):
        refused = acme.run("hook", "add", "web", "--repo", repo, check=False)
        assert refused.returncode == 1 and "only the admin" in refused.stderr, repo
    acme.run("hook", "add", "web", "--repo", "https://example.com/acme.git")
    [mine] = json.loads(acme.run("hook", "ls", "--json").stdout)
    assert mine["tenant"] == "acme"
    admin_view = json.loads(plat.run("hook", "ls", "--json").stdout)
    assert [h["tenant"] for h in admin_view] == ["acme"]
    # The default tenant's names are not acme's: a 404 for another tenant's hook.
    assert plat.run("hook", "rm", "web", check=False).returncode == 1
    acme.run("hook", "rm", mine["id"])
