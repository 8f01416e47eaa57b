"""Signature checks of each provider over the raw body: the right secret passes,
anything else (another secret, a changed body, a truncated or mangled header,
another scheme, no header) fails."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from plat.daemon.hooks.signatures import Provider, sender, sign, verify

SECRET = b"s3cret"
BODY = b'{"ref": "refs/heads/main"}'


def headers_of(pairs: dict[str, str]):  # type: ignore[no-untyped-def]
    lowered = {k.lower().encode(): v.encode() for k, v in pairs.items()}
    return lambda name: lowered.get(name)


EVENTS = {
    "github": {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"},
    "gitlab": {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "d-1"},
    "gitea": {"X-Gitea-Event": "push", "X-Gitea-Delivery": "d-1"},
    "forgejo": {"X-Forgejo-Event": "push", "X-Forgejo-Delivery": "d-1"},
}


@pytest.mark.parametrize("provider", list(EVENTS))
def test_each_provider_signed_right_passes_and_wrong_fails(provider: Provider) -> None:
    signed = {**EVENTS[provider], **sign(provider, SECRET, BODY)}
    sent = sender(headers_of(signed))
    assert sent is not None and sent.provider == provider and sent.delivery == "d-1"
    assert verify(sent, SECRET, BODY)
    assert not verify(sent, b"other", BODY)
    if provider != "gitlab":  # GitLab signs nothing: its token is the proof
        assert not verify(sent, SECRET, BODY + b" ")
    unsigned = sender(headers_of(EVENTS[provider]))
    assert unsigned is not None and unsigned.proof is None and not verify(unsigned, SECRET, BODY)


def test_gitea_sending_github_headers_too_is_gitea() -> None:
    digest = hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
    both = {
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
        "X-Gitea-Event": "push",
        "X-Gitea-Signature": digest,
    }
    sent = sender(headers_of(both))
    assert sent is not None and sent.provider == "gitea" and verify(sent, SECRET, BODY)


@pytest.mark.parametrize(
    "header",
    [
        "sha1=" + hmac.new(SECRET, BODY, hashlib.sha1).hexdigest(),
        "sha256=",
        "sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()[:-1],
        "sha256=" + "zz" * 32,
        hmac.new(SECRET, BODY, hashlib.sha256).hexdigest(),  # no scheme
        "sha256=" + "a" * 100_000,
        "",
    ],
)
def test_mangled_github_signatures_fail(header: str) -> None:
    sent = sender(headers_of({"X-GitHub-Event": "push", "X-Hub-Signature-256": header}))
    assert sent is not None and not verify(sent, SECRET, BODY)


def test_uppercase_hex_is_the_same_signature() -> None:
    digest = hmac.new(SECRET, BODY, hashlib.sha256).hexdigest().upper()
    sent = sender(headers_of({"X-Hub-Signature-256": "sha256=" + digest}))
    assert sent is not None and verify(sent, SECRET, BODY)


def test_no_provider_headers_is_no_sender() -> None:
    assert sender(headers_of({"Content-Type": "application/json"})) is None


@pytest.mark.parametrize("delivery", ["", "x" * 129, "a b", "id\x00", "<script>"])
def test_odd_delivery_ids_are_not_used(delivery: str) -> None:
    sent = sender(headers_of({"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery}))
    assert sent is not None and sent.delivery is None


def test_gitlab_idempotency_key_names_the_delivery() -> None:
    sent = sender(headers_of({"X-Gitlab-Event": "Push Hook", "Idempotency-Key": "k-9"}))
    assert sent is not None and sent.delivery == "k-9"
