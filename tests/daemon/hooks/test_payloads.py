"""Payloads of each provider to changes, and hostile ones to clear errors: not
JSON, not an object, missing or mistyped fields, huge refs, odd branch names."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plat.daemon.hooks.payloads import Change, PayloadError, check_branch, parse

A = "a" * 40
ZERO = "0" * 40


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def push(ref: str = "refs/heads/main", after: str = A, **more: Any) -> bytes:
    return body({"ref": ref, "before": "b" * 40, "after": after, **more})


def test_pushes() -> None:
    assert parse("github", "push", push()) == Change(
        "deploy", "push", branch="main", sha=A, ref="refs/heads/main"
    )
    assert parse("gitlab", "Push Hook", push("refs/heads/feature/x")).branch == "feature/x"
    assert parse("forgejo", "push", push()).kind == "deploy"
    sha256 = "c" * 64
    assert parse("gitea", "push", push(after=sha256)).sha == sha256


def test_deletions() -> None:
    assert parse("github", "push", push(after=ZERO, deleted=True)).kind == "remove"
    assert parse("github", "push", push(after=ZERO)).kind == "remove"
    assert parse("gitlab", "Push Hook", push(after=ZERO)).kind == "remove"
    gitea_delete = body({"ref": "feature/x", "ref_type": "branch"})
    assert parse("gitea", "delete", gitea_delete) == Change("remove", "delete", branch="feature/x")
    tag_delete = body({"ref": "v1", "ref_type": "tag"})
    assert parse("github", "delete", tag_delete).kind == "ignore"


def test_tags_pings_and_unknown_events() -> None:
    assert parse("github", "push", push("refs/tags/v1")).kind == "ignore"
    assert parse("github", "ping", b"not even json").kind == "ping"
    ignored = parse("github", "issues", b"{}")
    assert ignored.kind == "ignore" and "issues" in ignored.reason
    assert parse("gitlab", "Tag Push Hook", b"{}").kind == "ignore"
    assert parse("gitea", "", b"{}").kind == "ignore"


def pull(action: str, **head: Any) -> bytes:
    return body(
        {
            "action": action,
            "number": 7,
            "pull_request": {"head": {"ref": "feature/x", "sha": A, **head}},
        }
    )


def test_pull_requests() -> None:
    for action in ("opened", "reopened", "synchronize"):
        change = parse("github", "pull_request", pull(action))
        assert change == Change(
            "deploy", "pull_request", branch="feature/x", sha=A, ref="refs/pull/7/head", request=7
        )
    assert parse("gitea", "pull_request", pull("synchronized")).kind == "deploy"
    assert parse("github", "pull_request", pull("closed")).kind == "remove"
    assert parse("github", "pull_request", pull("labeled")).kind == "ignore"


def merge_request(action: str) -> bytes:
    return body(
        {
            "object_kind": "merge_request",
            "object_attributes": {
                "action": action,
                "iid": 3,
                "source_branch": "fix-1",
                "last_commit": {"id": A},
            },
        }
    )


def test_gitlab_merge_requests() -> None:
    opened = parse("gitlab", "Merge Request Hook", merge_request("open"))
    assert opened.kind == "deploy" and opened.ref == "refs/merge-requests/3/head"
    assert parse("gitlab", "Merge Request Hook", merge_request("update")).kind == "deploy"
    assert parse("gitlab", "Merge Request Hook", merge_request("merge")).kind == "remove"
    assert parse("gitlab", "Merge Request Hook", merge_request("close")).kind == "remove"
    assert parse("gitlab", "Merge Request Hook", merge_request("approved")).kind == "ignore"


@pytest.mark.parametrize(
    ("event", "payload", "complaint"),
    [
        ("push", b"{not json", "not JSON"),
        ("push", b"\xff\xfe\x00", "not JSON"),
        ("push", b"[1, 2]", "not a JSON object"),
        ("push", b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        ("push", body({}), "'ref'"),
        ("push", body({"ref": 5, "after": A}), "'ref'"),
        ("push", body({"ref": "refs/heads/main"}), "'after'"),
        ("push", body({"ref": "refs/heads/main", "after": "abc"}), "'after'"),
        ("push", body({"ref": "refs/heads/main", "after": A.upper()}), "'after'"),
        ("push", push("refs/heads/" + "x" * 10_000), "longer than"),
        ("push", push("refs/heads/a..b"), "not a valid branch"),
        ("push", push("refs/heads/a b"), "not a valid branch"),
        ("push", push("refs/heads/-rf"), "not a valid branch"),
        ("push", push("refs/heads/x\nInjected: 1"), "not a valid branch"),
        ("push", push("refs/heads/"), "not a valid branch"),
        ("pull_request", body({"action": "opened"}), "pull_request"),
        ("pull_request", body({"action": "opened", "pull_request": {}}), "head"),
        ("pull_request", pull("opened", sha="nope"), "full commit id"),
        ("pull_request", pull("opened", ref=["x"]), "no branch"),
        ("pull_request", body({"action": 1, "number": 1, "pull_request": {"head": {}}}), "action"),
    ],
)
def test_malformed_payloads_are_clear_errors(event: str, payload: bytes, complaint: str) -> None:
    with pytest.raises(PayloadError, match=complaint):
        parse("github", event, payload)


def test_request_numbers_are_checked() -> None:
    for number in (0, -1, True, "7", 2**40):
        data = json.loads(pull("opened"))
        data["number"] = number
        with pytest.raises(PayloadError, match="number"):
            parse("github", "pull_request", body(data))


@pytest.mark.parametrize("branch", ["main", "feature/x", "release-1.2", "ünïcode", "a/b/c"])
def test_branch_names_git_allows(branch: str) -> None:
    assert check_branch(branch) == branch


@pytest.mark.parametrize(
    "branch", ["x.lock", "a/.b", "a//b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "a@{1}", "."]
)
def test_branch_names_git_refuses(branch: str) -> None:
    with pytest.raises(PayloadError):
        check_branch(branch)
