"""Taking a delivery: is it for a hook, within the size limit, signed with the
hook's secret, new? Then what it asks for, recorded, and handed to the hook's
lanes. Nothing here waits for git or a build: the answer comes at once.

The checks run in this order, each answering before anything further is read:
unknown hook (404), body too large (413), no or wrong signature (401, a
``rejected`` row), a delivery id or body the hook has counted before (200
``duplicate``). Only then is the body parsed (400 for a malformed one).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from plat.daemon.hooks.audit import Auditor
from plat.daemon.hooks.lanes import Lanes
from plat.daemon.hooks.payloads import Change, PayloadError, parse
from plat.daemon.hooks.previews import preview_name
from plat.daemon.hooks.runner import Runner
from plat.daemon.hooks.signatures import Header, sender, verify
from plat.daemon.secrets.sealing import Sealer
from plat.daemon.store import Store
from plat.daemon.store.hooks import DeliveryRecord, HookRecord
from plat.tenancy import function_key, split_key

HOOK_ID_RE = re.compile(r"[0-9a-f]{16}")
MAX_BODY = 1024**2

Job = tuple[HookRecord, DeliveryRecord]


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


NOT_FOUND = Reply(404, {"error": "not_found", "message": "no such hook"})


def secret_name(hook_id: str) -> str:
    """What a hook's sealed secret is bound to (with its tenant)."""
    return f"hook:{hook_id}"


class Intake:
    def __init__(
        self,
        store: Store,
        sealer: Sealer,
        lanes: Lanes[Job],
        runner: Runner,
        auditor: Auditor,
        max_body: int = MAX_BODY,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.lanes = lanes
        self.runner = runner
        self.audit = auditor
        self.max_body = max_body

    async def hook(self, hook_id: str) -> HookRecord | None:
        return await self.store.get_hook(hook_id) if HOOK_ID_RE.fullmatch(hook_id) else None

    async def oversized(self, hook: HookRecord, origin: str) -> Reply:
        self.audit("hook.delivery", hook.function, "oversized", **_who(hook, origin))
        limit = self.max_body // 1024
        return Reply(413, {"error": "too_large", "message": f"a delivery is at most {limit} KiB"})

    async def receive(self, hook: HookRecord, header: Header, body: bytes, origin: str) -> Reply:
        """Answer one delivery of ``hook`` (its body read whole, within the limit)."""
        sent = sender(header)
        secret = self.sealer.unseal(hook.tenant, secret_name(hook.id), hook.secret)
        digest = hashlib.sha256(body).hexdigest()
        if sent is None or not verify(sent, secret, body):
            provider = sent.provider if sent else "unknown"
            await self.store.add_delivery(
                DeliveryRecord(
                    hook.id,
                    (sent.delivery if sent else None) or "-",
                    digest,
                    provider,
                    sent.event if sent else "",
                    origin,
                    state="rejected",
                    error="no signature" if sent is None or sent.proof is None else "bad signature",
                ),
                counted=False,
            )
            self.audit("hook.delivery", hook.function, "rejected-signature", **_who(hook, origin))
            return Reply(401, {"error": "bad_signature", "message": "the signature does not match"})
        record = DeliveryRecord(
            hook.id,
            sent.delivery or f"sha256:{digest[:32]}",
            digest,
            sent.provider,
            sent.event,
            origin,
        )
        change: Change | None = None
        try:
            change = parse(sent.provider, sent.event, body)
        except PayloadError as exc:
            record.state, record.error, record.finished_at = "failed", exc.message, time.time()
        if change is not None:
            await self._plan(hook, change, record)
        if await self.store.add_delivery(record, counted=True) is None:
            record.state, record.error = "duplicate", None
            await self.store.add_delivery(record, counted=False)
            self.audit(
                "hook.delivery",
                hook.function,
                "duplicate",
                delivery=record.delivery,
                **_who(hook, origin),
            )
            return Reply(200, {"status": "duplicate", "delivery": record.delivery})
        answer = {"delivery": record.seq, "id": record.delivery}
        if change is None:
            self._audit_end(hook, record, f"failed:{record.error}")
            return Reply(400, {"error": "bad_payload", "message": record.error, **answer})
        if record.state != "queued":
            self._audit_end(hook, record, "ok" if record.state == "done" else record.state)
            status = {"done": "pong", "ignored": "ignored"}[record.state]
            return Reply(200 if record.state == "done" else 202, {"status": status, **answer})
        superseded = self.lanes.put((hook.id, record.branch), (hook, record))
        if superseded is not None:
            await self.supersede(superseded[1], record)
        assert record.target is not None
        target = split_key(record.target)[0]
        return Reply(
            202, {"status": "queued", "action": record.action, "function": target, **answer}
        )

    async def supersede(self, old: DeliveryRecord, new: DeliveryRecord) -> None:
        old.state, old.error, old.finished_at = "ignored", f"superseded by #{new.seq}", time.time()
        await self.store.save_delivery(old)

    async def _plan(self, hook: HookRecord, change: Change, record: DeliveryRecord) -> None:
        """What ``change`` means for ``hook``: sets the record's action, target, state."""
        record.action, record.branch, record.sha, record.ref = (
            change.kind,
            change.branch,
            change.sha,
            change.ref,
        )
        if change.kind == "ping":
            record.state, record.finished_at = "done", time.time()
            return
        if change.kind == "ignore":
            self._ignore(record, change.reason)
            return
        assert change.branch is not None
        if change.branch == hook.branch:
            if change.kind == "remove" or change.event == "pull_request":
                self._ignore(record, f"{hook.branch} is the production branch: it stays")
                return
            record.target = function_key(hook.function, hook.tenant)
            return
        if not hook.previews:
            self._ignore(record, f"{change.branch} is not {hook.branch}, and previews are off")
            return
        previews = {p.function: p.branch for p in await self.store.list_previews(hook.id)}
        of_branch = [key for key, branch in previews.items() if branch == change.branch]
        if of_branch:
            record.target = of_branch[0]
        elif change.kind == "remove":
            self._ignore(record, f"{change.branch} has no preview")
            return
        else:
            key = function_key(preview_name(hook.function, change.branch), hook.tenant)
            if key in previews:  # another branch's slug: this one gets a digest
                name = preview_name(hook.function, change.branch, hashed=True)
                key = function_key(name, hook.tenant)
            record.target = key

    @staticmethod
    def _ignore(record: DeliveryRecord, reason: str) -> None:
        record.state, record.error, record.finished_at = "ignored", reason, time.time()

    def _audit_end(self, hook: HookRecord, record: DeliveryRecord, outcome: str) -> None:
        self.audit(
            "hook.delivery",
            hook.function,
            outcome,
            delivery=record.delivery,
            event=record.event,
            **_who(hook, record.origin),
        )


def _who(hook: HookRecord, origin: str) -> dict[str, str]:
    return {"hook": hook.id, "origin": origin, "tenant": hook.tenant}
