"""Git webhooks end to end, in real containers: a bare git repository whose real
post-receive script POSTs signed deliveries (GitHub, GitLab and Gitea formats) to
a real daemon, which fetches with git, builds with Buildah and serves with Podman.

A push to main redeploys production; a push to feature/x serves a preview at
/function/web--feature-x and http://feature-x--web.localhost:<port>/, scaled to
zero; deleting the branch removes it. A forged signature, a replayed delivery and
an oversized body change nothing.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.hooks.gitrepo import Repo
from tests.fixtures import PlatRunner, wait_for

pytestmark = pytest.mark.container

HANDLER = 'def handle(event, context):\n    return "{text}"\n'
FINAL = {"done", "failed", "ignored", "duplicate", "rejected"}


def files(text: str) -> dict[str, str]:
    return {
        "web/plat.yaml": "name: web\nruntime: python\nhandler: handler.handle\nauth: public\n",
        "web/handler.py": HANDLER.format(text=text),
        "web/requirements.txt": "",
    }


def deliveries(plat: PlatRunner, name: str) -> list[dict[str, Any]]:
    return json.loads(plat.run("hook", "deliveries", name, "--json").stdout)


def settle(plat: PlatRunner, name: str, count: int) -> dict[str, Any]:
    """The newest delivery, once ``count`` exist and none is at work."""
    assert wait_for(
        lambda: len(d := deliveries(plat, name)) >= count and all(x["state"] in FINAL for x in d),
        timeout=240,
        interval=0.5,
    ), deliveries(plat, name)
    newest = deliveries(plat, name)[0]
    if newest["state"] == "failed":
        print(plat.run("hook", "deliveries", name, "--log", str(newest["seq"])).stdout)
    return newest


def get(url: str, host: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def add_hook(plat: PlatRunner, name: str, repo: Repo, provider: str) -> dict[str, Any]:
    out = plat.run("hook", "add", name, "--repo", str(repo.bare), "--path", "web", "--json").stdout
    hook = json.loads(out)
    repo.hook_up(provider, hook["url"], hook["secret"])
    return hook


def post(plat: PlatRunner, hook: dict[str, Any], body: bytes, headers: dict[str, str]) -> int:
    return plat.http("POST", f"/hooks/git/{hook['id']}", body, headers, auth=False).status


def test_github_push_production_preview_and_removal(plat: PlatRunner, tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo", files("v1"))
    hook = add_hook(plat, "web", repo, "github")

    repo.commit(files("v2"), "v2")
    repo.push("main")
    assert settle(plat, "web", 1)["state"] == "done"
    assert get(f"{plat.gateway}/function/web") == (200, "v2")
    assert plat.instances_of("web")

    repo.commit(files("feature"), "feature")
    repo.push("HEAD:refs/heads/feature/x")
    preview = settle(plat, "web", 2)
    assert preview["state"] == "done" and preview["target"] == "web--feature-x"
    host = f"feature-x--web.localhost:{plat.port}"
    assert preview["url"] == f"http://{host}/"
    assert get(f"{plat.gateway}/function/web--feature-x") == (200, "feature")
    assert get(f"{plat.gateway}/", host=host) == (200, "feature")
    assert get(f"{plat.gateway}/function/web") == (200, "v2")
    listed = {fn["name"]: fn for fn in json.loads(plat.run("ls", "--json").stdout)}
    assert listed["web--feature-x"]["preview"]["branch"] == "feature/x"
    described = json.loads(plat.run("describe", "web--feature-x", "--json").stdout)
    assert described["manifest"]["scale"]["min"] == 0

    # Forged, replayed and oversized deliveries: nothing happens.
    [last] = [a for a in repo.answers() if a["ref"] == "refs/heads/feature/x"]
    body = last["body"].encode()
    forged = {**last["headers"], "X-Hub-Signature-256": "sha256=" + "0" * 64}
    forged["X-GitHub-Delivery"] = "forged-1"
    assert (
        post(plat, hook, body.replace(b"refs/heads/feature/x", b"refs/heads/main"), forged) == 401
    )
    assert post(plat, hook, body, last["headers"]) == 200  # the replay
    assert post(plat, hook, b"{" + b" " * (1024**2) + b"}", last["headers"]) == 413
    time.sleep(1)
    states = [d["state"] for d in deliveries(plat, "web")]
    assert states[:3] == ["duplicate", "rejected", "done"]
    assert get(f"{plat.gateway}/function/web") == (200, "v2")
    # The audit log has each delivery and each deploy, by the hook, never its secret.
    actor = f"hook:{hook['id']}"
    records = json.loads(plat.run("audit", "--actor", actor, "--json").stdout)
    outcomes = [(r["action"], r["outcome"]) for r in records]
    for expected in [
        ("hook.delivery", "ok"),
        ("function.deploy", "ok"),
        ("hook.delivery", "rejected-signature"),
        ("hook.delivery", "duplicate"),
        ("hook.delivery", "oversized"),
    ]:
        assert expected in outcomes, outcomes
    assert hook["secret"] not in json.dumps(records)

    repo.push("--delete", "feature/x")
    removal = settle(plat, "web", 3)
    assert removal["state"] == "done" and removal["action"] == "remove"
    assert "web--feature-x" not in plat.run("ls").stdout
    assert wait_for(lambda: not plat.instances_of("web--feature-x"), timeout=30)
    assert get(f"{plat.gateway}/", host=host)[0] == 404

    # A broken commit fails its delivery; production keeps serving.
    repo.commit({"web/handler.py": "def handle(event, context:\n"}, "broken")
    repo.push("main")
    assert settle(plat, "web", 4)["state"] == "failed"
    assert get(f"{plat.gateway}/function/web") == (200, "v2")
    plat.run("hook", "rm", "web")
    plat.run("rm", "web")


@pytest.mark.parametrize("provider", ["gitlab", "gitea"])
def test_other_providers_deploy_and_remove_previews(
    plat: PlatRunner, tmp_path: Path, provider: str
) -> None:
    name = f"{provider}fn"
    repo = Repo.create(tmp_path / "repo", files("one"))
    add_hook(plat, name, repo, provider)
    repo.commit(files(f"{provider}-main"), "main")
    repo.push("main")
    assert settle(plat, name, 1)["state"] == "done"
    assert get(f"{plat.gateway}/function/{name}") == (200, f"{provider}-main")
    repo.commit(files(f"{provider}-fix"), "fix")
    repo.push("HEAD:refs/heads/fix-1")
    assert settle(plat, name, 2)["state"] == "done"
    host = f"fix-1--{name}.localhost:{plat.port}"
    assert get(f"{plat.gateway}/", host=host) == (200, f"{provider}-fix")
    repo.push("--delete", "fix-1")
    assert settle(plat, name, 3)["action"] == "remove"
    assert get(f"{plat.gateway}/function/{name}--fix-1")[0] == 404
    plat.run("hook", "rm", name)
    plat.run("rm", name)
