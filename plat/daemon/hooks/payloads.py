"""What a verified delivery asks for: deploy a commit of a branch, remove a
branch's preview, answer a ping, or nothing.

The payload is a stranger's JSON even when signed (a misconfigured server, a
bug): every field is checked for type and shape, refs and branch names are
bounded and held to git's rules, commits are full hex ids. Anything malformed is
a PayloadError (400) naming the field, never a traceback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from plat.daemon.hooks.signatures import Provider
from plat.errors import PlatError

Kind = Literal["deploy", "remove", "ping", "ignore"]
SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
MAX_REF = 255
HEADS = "refs/heads/"
# What `git check-ref-format` refuses in a branch name, besides control characters.
_BAD_REF = re.compile(r"[\s~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)")

# Each provider's event names, mapped to one vocabulary.
EVENTS: dict[Provider, dict[str, str]] = {
    "github": {"push": "push", "pull_request": "pull_request", "ping": "ping", "delete": "delete"},
    "gitlab": {"Push Hook": "push", "Merge Request Hook": "pull_request"},
    "gitea": {"push": "push", "pull_request": "pull_request", "delete": "delete"},
    "forgejo": {"push": "push", "pull_request": "pull_request", "delete": "delete"},
}
# Pull/merge request actions that (re)deploy the head, and those that end the preview.
OPENING = frozenset(
    {"opened", "reopened", "synchronize", "synchronized", "open", "reopen", "update"}
)
CLOSING = frozenset({"closed", "close", "merge", "merged"})
# Where each provider keeps a request's head, for a fetch by ref.
REQUEST_REFS: dict[Provider, str] = {
    "github": "refs/pull/{}/head",
    "gitlab": "refs/merge-requests/{}/head",
    "gitea": "refs/pull/{}/head",
    "forgejo": "refs/pull/{}/head",
}


class PayloadError(PlatError):
    code = "bad_payload"


@dataclass(frozen=True)
class Change:
    kind: Kind
    event: str  # push | pull_request | delete | ping | the provider's own name
    branch: str | None = None
    sha: str | None = None
    ref: str | None = None  # what to fetch when the commit cannot be fetched by its id
    request: int | None = None  # the pull/merge request's number
    reason: str = ""  # why it is ignored


def event_of(provider: Provider, raw: str) -> str | None:
    """The event in plat's words; None for one plat does not act on."""
    return EVENTS[provider].get(raw)


def parse(provider: Provider, raw_event: str, body: bytes) -> Change:
    """The change a verified delivery asks for; raises PayloadError."""
    event = event_of(provider, raw_event)
    if event is None:
        return Change(
            "ignore", raw_event or "(none)", reason=f"event {raw_event!r} is not acted on"
        )
    if event == "ping":
        return Change("ping", event)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise PayloadError("the payload is not JSON") from None
    if not isinstance(data, dict):
        raise PayloadError("the payload is not a JSON object")
    if event == "push":
        return _push(data)
    if event == "delete":
        return _delete(data)
    return _request(provider, data)


def _push(data: dict[str, Any]) -> Change:
    ref = _string(data, "ref", MAX_REF + len(HEADS))
    if not ref.startswith(HEADS):
        return Change("ignore", "push", reason=f"{ref!r} is not a branch")
    branch = check_branch(ref[len(HEADS) :])
    after = _sha(data, "after")
    if data.get("deleted") is True or set(after) == {"0"}:
        return Change("remove", "push", branch=branch)
    return Change("deploy", "push", branch=branch, sha=after, ref=ref)


def _delete(data: dict[str, Any]) -> Change:
    if data.get("ref_type") != "branch":
        return Change("ignore", "delete", reason="not a branch deleted")
    branch = check_branch(_string(data, "ref", MAX_REF).removeprefix(HEADS))
    return Change("remove", "delete", branch=branch)


def _request(provider: Provider, data: dict[str, Any]) -> Change:
    if provider == "gitlab":
        attrs = data.get("object_attributes")
        if not isinstance(attrs, dict):
            raise PayloadError("the payload has no object 'object_attributes'")
        action = attrs.get("action")
        number = attrs.get("iid")
        branch_value = attrs.get("source_branch")
        commit = attrs.get("last_commit")
        sha = commit.get("id") if isinstance(commit, dict) else None
    else:
        request = data.get("pull_request")
        if not isinstance(request, dict):
            raise PayloadError("the payload has no object 'pull_request'")
        action = data.get("action")
        number = data.get("number", request.get("number"))
        head = request.get("head")
        if not isinstance(head, dict):
            raise PayloadError("the payload has no object 'pull_request.head'")
        branch_value, sha = head.get("ref"), head.get("sha")
    if not isinstance(action, str):
        raise PayloadError("the payload names no action")
    if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 2**31:
        raise PayloadError("the payload's request number is not a positive integer")
    if not isinstance(branch_value, str) or len(branch_value) > MAX_REF:
        raise PayloadError("the payload names no branch (or one longer than 255 characters)")
    branch = check_branch(branch_value)
    if action in CLOSING:
        return Change("remove", "pull_request", branch=branch, request=number)
    if action not in OPENING:
        return Change("ignore", "pull_request", reason=f"action {action[:40]!r} is not acted on")
    if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
        raise PayloadError("the payload's head commit is not a full commit id")
    ref = REQUEST_REFS[provider].format(number)
    return Change("deploy", "pull_request", branch=branch, sha=sha, ref=ref, request=number)


def check_branch(branch: str) -> str:
    """``branch`` when git could name a branch so; raises PayloadError."""
    if (
        not branch
        or len(branch.encode()) > MAX_REF
        or any(ord(c) < 32 or ord(c) == 127 for c in branch)
        or branch.startswith(("-", "/", "."))
        or branch.endswith(("/", "."))
        or _BAD_REF.search(branch)
    ):
        raise PayloadError(f"{branch[:80]!r} is not a valid branch name")
    return branch


def _string(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"the payload has no string {key!r}")
    if len(value) > limit:
        raise PayloadError(f"the payload's {key!r} is longer than {limit} characters")
    return value


def _sha(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not SHA_RE.fullmatch(value):
        raise PayloadError(f"the payload's {key!r} is not a full commit id")
    return value
