"""Who sent a webhook delivery, and whether it is signed with the hook's secret.

Checked over the raw body, before any of it is parsed, in constant time
(``hmac.compare_digest``):

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``;
- GitLab: ``X-Gitlab-Token: <secret>`` (GitLab signs nothing: the token is the proof);
- Gitea / Forgejo: ``X-Gitea-Signature`` / ``X-Forgejo-Signature``, the bare hex HMAC.

Gitea and Forgejo also send GitHub's headers for compatibility, so their own
headers are looked at first.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Provider = Literal["github", "gitlab", "gitea", "forgejo"]
# A delivery id is shown and stored: printable, bounded.
DELIVERY_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_EVENT = 64
_HEX64 = re.compile(rb"[0-9a-fA-F]{64}")

Header = Callable[[bytes], bytes | None]


@dataclass(frozen=True)
class Sender:
    """What a delivery's headers say: who sent it, the event, its id and its proof."""

    provider: Provider
    event: str  # as the provider names it ("push", "Push Hook", ...); "" when absent
    delivery: str | None  # the provider's delivery id; None when absent or unusable
    proof: bytes | None  # the signature or token; None when absent


def sender(header: Header) -> Sender | None:
    """The provider a delivery's headers name; None when none of them is there."""
    for provider, prefix in (("forgejo", b"x-forgejo-"), ("gitea", b"x-gitea-")):
        proof = header(prefix + b"signature")
        event = header(prefix + b"event")
        if proof is not None or event is not None:
            delivery = header(prefix + b"delivery")
            return Sender(provider, _text(event), _delivery(delivery), proof)  # type: ignore[arg-type]
    token = header(b"x-gitlab-token")
    event = header(b"x-gitlab-event")
    if token is not None or event is not None:
        delivery = header(b"x-gitlab-event-uuid") or header(b"idempotency-key")
        return Sender("gitlab", _text(event), _delivery(delivery), token)
    proof = header(b"x-hub-signature-256")
    event = header(b"x-github-event")
    if proof is not None or event is not None:
        return Sender("github", _text(event), _delivery(header(b"x-github-delivery")), proof)
    return None


def verify(sent: Sender, secret: bytes, body: bytes) -> bool:
    """Whether ``sent``'s proof matches ``secret`` over ``body`` (constant time)."""
    proof = sent.proof
    if proof is None:
        return False
    if sent.provider == "gitlab":
        return hmac.compare_digest(proof.strip(), secret)
    if sent.provider == "github":
        scheme, _, proof = proof.strip().partition(b"=")
        if scheme.lower() != b"sha256":
            return False
    proof = proof.strip()
    if not _HEX64.fullmatch(proof):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(proof.lower(), expected)


def sign(provider: Provider, secret: bytes, body: bytes) -> dict[str, str]:
    """The headers that sign ``body`` as ``provider`` would (for tests, benchmarks,
    and a bare repository's post-receive hook written in Python)."""
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if provider == "github":
        return {"X-Hub-Signature-256": f"sha256={digest}"}
    if provider == "gitlab":
        return {"X-Gitlab-Token": secret.decode()}
    return {f"X-{provider.capitalize()}-Signature": digest}


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("latin-1").strip()[:MAX_EVENT]


def _delivery(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    return text if DELIVERY_ID_RE.fullmatch(text) else None
