"""Callbacks: which URLs a caller may name (a table of hostile ones), and delivery
to a real receiver on loopback with the real store: headers, retries, giving up,
resuming after a restart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from plat.daemon.asyncq import callbacks as callbacks_module
from plat.daemon.asyncq.callbacks import CallbackPolicy, Callbacks
from plat.daemon.asyncq.ledger import Ledger
from plat.daemon.store import Store
from plat.daemon.store.calls import QueuedCall, call_inserted
from tests.daemon.asyncq.inproc import call, store_fixture, stored, until
from tests.daemon.asyncq.support import CallbackReceiver, ReceiverThread
from tests.fixtures import free_port

__all__ = ["store_fixture"]

ALLOWED = [
    "http://127.0.0.1/results",
    "http://127.0.0.1:8080/a/b?c=d#frag",
    "https://127.9.9.9/",
    "http://[::1]:9000/x",
    "http://localhost/",
    "http://LocalHost:1/",
    "http://app.localhost/",
    "http://hooks.example.com/in",
    "https://A.Example.Com/",
    "http://user:secret@127.0.0.1/",
    "http://127.0.0.1/a%0d%0aX-Evil:%201",  # encoded: a path, not a header
]
REFUSED = [
    "",
    "results",
    "/relative",
    "//127.0.0.1/no-scheme",
    "ftp://127.0.0.1/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/",
    "javascript:alert(1)",
    "http:///no-host",
    "http://example.com/",
    "http://example.com.evil.org/",
    "http://evilexample.com/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/",
    "http://0.0.0.0/",
    "http://127.1/",  # a loopback spelling, but not one we bless
    "http://2130706433/",
    "http://[::ffff:7f00:1]/",
    "http://localhost.evil.org/",
    "http://127.0.0.1.nip.io/",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1:port/",
    "http://[::1/",
    "http://127.0.0.1\\@evil.org/",
    "http://evil.org#@127.0.0.1/",
    "http://127.0.0.1 @evil.org/",
    "http://127.0.0.1/a b",
    "http://127.0.0.1/a\tb",
    "http://127.0.0.1/\r\nX-Evil: 1",
    "http://127.0.0.1/\x00",
    "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",  # fullwidth localhost
    "http://127.0.0.1/é",
]


@pytest.mark.parametrize("url", ALLOWED)
def test_loopback_and_listed_hosts_are_allowed(url: str) -> None:
    assert CallbackPolicy.parse(" *.example.com , ,").problem(url) is None


@pytest.mark.parametrize("url", REFUSED)
def test_anything_else_is_refused_with_a_reason(url: str) -> None:
    problem = CallbackPolicy.parse("*.example.com").problem(url)
    assert problem is not None and len(problem) < 400


def test_no_hosts_listed_means_loopback_only() -> None:
    policy = CallbackPolicy.parse("")
    assert policy.problem("http://127.0.0.1/") is None
    assert "PLAT_CALLBACK_HOSTS" in str(policy.problem("http://hooks.example.com/"))


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with ReceiverThread() as running:
        yield running


@pytest.fixture
async def delivery(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Callbacks, Ledger]]:
    monkeypatch.setattr(callbacks_module, "FIRST_DELAY", 0.02)
    ledger = Ledger(store)
    ledger.start()
    cb = Callbacks(store, ledger, CallbackPolicy.parse(""))
    await cb.start()
    yield cb, ledger
    await cb.close()
    await ledger.close()


async def finished(store: Store, ledger: Ledger, url: str, **fields: object) -> QueuedCall:
    """A call as the queue leaves it once finished: committed, callback pending."""
    one = call(callback=url)
    one.state, one.attempts, one.status, one.duration = "done", 2, 201, 0.25
    one.response_headers = [
        ("Content-Type", "application/json"),
        ("X-Custom", "kept"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("X-Call-Id", "forged"),
    ]
    one.response_body = b'{"made": true}'
    one.callback_state = "pending"
    for name, value in fields.items():
        setattr(one, name, value)
    await ledger.durable(call_inserted(one))
    return one


async def test_a_result_is_posted_with_the_answer_and_the_calls_story(
    store: Store, delivery: tuple[Callbacks, Ledger], receiver: CallbackReceiver
) -> None:
    cb, ledger = delivery
    one = await finished(store, ledger, receiver.url + "?token=abc")
    cb.deliver(one)
    await until(lambda: receiver.counts()[one.id] == 1)
    [got] = receiver.by_id()[one.id]
    h = got.headers
    assert got.body == b'{"made": true}'
    assert h["x-plat-status"] == "201" and h["x-plat-state"] == "done"
    assert h["x-plat-attempts"] == "2" and h["x-plat-duration"] == "0.250000"
    assert h["x-plat-function"] == "fn" and h["x-plat-trigger"] == "async"
    assert h["x-custom"] == "kept" and h["content-type"] == "application/json"
    assert h["x-call-id"] == one.id  # ours, not the function's
    assert "connection" not in h or h["connection"] != "close"
    assert "x-plat-error" not in h
    await until(lambda: receiver.counts()[one.id] == 1)
    saved = await _settled(store, ledger, one.id)
    assert (saved.callback_state, saved.callback_attempts, saved.callback_status) == (
        "delivered",
        1,
        200,
    )


async def test_an_error_goes_on_one_line(
    store: Store, delivery: tuple[Callbacks, Ledger], receiver: CallbackReceiver
) -> None:
    cb, ledger = delivery
    one = await finished(
        store, ledger, receiver.url, state="dead", status=None, error="no answer\r\nX-Evil: 1"
    )
    cb.deliver(one)
    await until(lambda: receiver.counts()[one.id] == 1)
    h = receiver.by_id()[one.id][0].headers
    assert h["x-plat-error"] == "no answer  X-Evil: 1" and "x-evil" not in h
    assert h["x-plat-state"] == "dead" and h["x-plat-status"] == "0"


async def test_a_failing_receiver_is_tried_again_then_given_up_on(
    store: Store, delivery: tuple[Callbacks, Ledger], receiver: CallbackReceiver
) -> None:
    cb, ledger = delivery
    recovers = await finished(store, ledger, receiver.url)
    receiver.fail[recovers.id] = [503, 500, 429]
    never = await finished(store, ledger, receiver.url)
    receiver.fail[never.id] = [500] * 10
    refuses = await finished(store, ledger, receiver.url)
    receiver.fail[refuses.id] = [404]
    for one in (recovers, never, refuses):
        cb.deliver(one)
    await until(lambda: receiver.counts()[never.id] == callbacks_module.ATTEMPTS, timeout=10)
    await until(lambda: receiver.counts()[recovers.id] == 4)
    got = {c: await _settled(store, ledger, c) for c in (recovers.id, never.id, refuses.id)}
    assert (got[recovers.id].callback_state, got[recovers.id].callback_attempts) == (
        "delivered",
        4,
    )
    assert (got[never.id].callback_state, got[never.id].callback_status) == ("failed", 500)
    assert (got[refuses.id].callback_state, got[refuses.id].callback_attempts) == ("failed", 1)
    assert receiver.counts()[refuses.id] == 1


async def test_a_receiver_that_is_not_there_is_given_up_on(
    store: Store, delivery: tuple[Callbacks, Ledger]
) -> None:
    cb, ledger = delivery
    one = await finished(store, ledger, f"http://127.0.0.1:{free_port()}/gone")
    cb.deliver(one)
    await until(lambda: cb._tasks == set(), timeout=10)
    saved = await _settled(store, ledger, one.id)
    assert saved.callback_state == "failed" and saved.callback_status is None
    assert saved.callback_attempts == callbacks_module.ATTEMPTS


async def test_pending_results_are_delivered_after_a_restart_and_others_are_not(
    store: Store, receiver: CallbackReceiver
) -> None:
    ledger = Ledger(store)
    ledger.start()
    pending = await finished(store, ledger, receiver.url)
    delivered = await finished(store, ledger, receiver.url, callback_state="delivered")
    # A URL the daemon no longer allows (its PLAT_CALLBACK_HOSTS changed): not sent.
    elsewhere = await finished(store, ledger, "http://hooks.example.com/")
    cb = Callbacks(store, ledger, CallbackPolicy.parse(""))
    await cb.start()
    try:
        await until(lambda: receiver.counts()[pending.id] == 1)
        await until(lambda: cb._tasks == set())
        assert set(receiver.counts()) == {pending.id}
        assert (await _settled(store, ledger, elsewhere.id)).callback_state == "failed"
        assert (await _settled(store, ledger, delivered.id)).callback_attempts == 0
    finally:
        await cb.close()
        await ledger.close()


async def _settled(store: Store, ledger: Ledger, call_id: str) -> QueuedCall:
    await ledger.durable([])
    return await stored(store, call_id)


async def test_receivers_that_fail_do_not_hold_up_others_while_they_back_off(
    store: Store, receiver: CallbackReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(callbacks_module, "CONCURRENT", 2)
    monkeypatch.setattr(callbacks_module, "FIRST_DELAY", 2.0)
    ledger = Ledger(store)
    ledger.start()
    cb = Callbacks(store, ledger, CallbackPolicy.parse(""))
    await cb.start()
    try:
        failing = [await finished(store, ledger, receiver.url) for _ in range(2)]
        for one in failing:
            receiver.fail[one.id] = [503] * 10
            cb.deliver(one)
        await until(lambda: all(receiver.counts()[f.id] == 1 for f in failing))
        healthy = await finished(store, ledger, receiver.url)
        cb.deliver(healthy)
        started = time.monotonic()
        await until(lambda: receiver.counts()[healthy.id] == 1, timeout=5)
        assert time.monotonic() - started < 1.0, "waited for the failing ones' backoff"
    finally:
        await cb.close()
        await ledger.close()
