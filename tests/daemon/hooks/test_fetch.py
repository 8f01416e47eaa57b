"""The fetcher with real git: a commit laid out (its sub folder), by id or, when the
server refuses ids, by ref; links out of the checkout, missing folders, dangerous
repository names and a server that is not there are clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plat.daemon.hooks.fetch import Fetcher, FetchError, check_path, check_repo, is_local
from plat.errors import PlatError
from tests.daemon.hooks.gitrepo import Repo, git


def fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(tmp_path / "hooks", dict(os.environ), timeout=60)


async def test_a_commit_and_its_sub_folder(tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "r", {"app/a.txt": "one", "top.txt": "top"})
    first = git("rev-parse", "HEAD", cwd=repo.work).strip()
    second = repo.commit({"app/a.txt": "two"}, "two")
    repo.push("main")
    lines: list[str] = []
    f = fetcher(tmp_path)
    got = await f.checkout("h", str(repo.bare), first, None, "app", tmp_path / "c1", lines.append)
    assert got == first and (tmp_path / "c1" / "a.txt").read_text() == "one"
    assert not (tmp_path / "c1" / "top.txt").exists()
    got = await f.checkout("h", str(repo.bare), second, None, "", tmp_path / "c2", lines.append)
    assert (tmp_path / "c2" / "app" / "a.txt").read_text() == "two"
    assert (tmp_path / "c2" / "top.txt").exists()
    assert (f.cache("h") / "shallow").exists()  # depth 1: not the whole history


async def test_a_server_refusing_ids_is_fetched_by_ref(tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "r", {"a.txt": "one"})
    tip = git("rev-parse", "HEAD", cwd=repo.work).strip()
    git("config", "uploadpack.allowAnySHA1InWant", "false", cwd=repo.bare)
    git("config", "protocol.version", "0", cwd=repo.bare)
    unknown = "e" * 40
    lines: list[str] = []
    f = fetcher(tmp_path)
    got = await f.checkout(
        "h", f"file://{repo.bare}", unknown, "refs/heads/main", "", tmp_path / "c", lines.append
    )
    assert got == tip
    assert any("instead of the commit" in line for line in lines)
    assert any("laying that out" in line for line in lines)
    with pytest.raises(FetchError, match="could not fetch"):
        await f.checkout("h", str(repo.bare), unknown, None, "", tmp_path / "d", lines.append)


async def test_links_out_of_the_checkout_are_refused(tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "r", {"app/a.txt": "one"})
    (repo.work / "app" / "passwd").symlink_to("/etc/passwd")
    (repo.work / "app" / "up").symlink_to("../../..")
    sha = repo.commit({}, "links")
    repo.push("main")
    with pytest.raises(FetchError, match="cannot be laid out safely"):
        await fetcher(tmp_path).checkout(
            "h", str(repo.bare), sha, None, "app", tmp_path / "c", lambda _: None
        )
    assert not (tmp_path / "c").exists()


async def test_a_folder_not_in_the_commit(tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "r", {"a.txt": "one"})
    sha = git("rev-parse", "HEAD", cwd=repo.work).strip()
    with pytest.raises(FetchError, match="not a folder of that commit"):
        await fetcher(tmp_path).checkout(
            "h", str(repo.bare), sha, None, "nope", tmp_path / "c", lambda _: None
        )


async def test_a_repository_that_is_not_there(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(FetchError, match="fetch"):
        await fetcher(tmp_path).checkout(
            "h",
            str(tmp_path / "missing.git"),
            "a" * 40,
            "refs/heads/main",
            "",
            tmp_path / "c",
            lines.append,
        )
    assert lines  # git's own words are in the log


@pytest.mark.parametrize(
    "repo",
    [
        "ext::sh -c 'touch /tmp/x'",
        "fd::3",
        "--upload-pack=touch /tmp/x",
        "relative/path",
        "ftp://host/r.git",
        "",
        "x" * 3000,
        "/srv/r.git\nother",
    ],
)
def test_dangerous_repository_names(repo: str) -> None:
    with pytest.raises(PlatError):
        check_repo(repo)


def test_repository_names_git_may_fetch() -> None:
    assert check_repo("https://example.com/r.git") == "https://example.com/r.git"
    assert check_repo("git@github.com:owner/r.git") == "git@github.com:owner/r.git"
    assert check_repo("/srv/./r.git/") == "/srv/r.git"
    assert is_local("/srv/r.git") and is_local("file:///srv/r.git")
    assert not is_local("https://example.com/r.git") and not is_local("git@host:r.git")


def test_paths() -> None:
    assert check_path("/functions/hello/") == "functions/hello"
    assert check_path("") == check_path(".") == check_path("/") == ""
    for bad in ("../x", "a/../../x", "a\\b", "a\0b"):
        with pytest.raises(PlatError):
            check_path(bad)


async def test_a_tenants_fetch_reaches_no_local_repository(tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "r", {"a.txt": "one"})
    sha = git("rev-parse", "HEAD", cwd=repo.work).strip()
    f = fetcher(tmp_path)
    with pytest.raises(FetchError, match="fetch"):
        await f.checkout(
            "h",
            f"file://{repo.bare}",
            sha,
            None,
            "",
            tmp_path / "c",
            lambda _: None,
            trusted=False,
        )
    assert f.stranger_env["GIT_CONFIG_GLOBAL"] == os.devnull
    assert "file" not in f.stranger_env["GIT_ALLOW_PROTOCOL"].split(":")
