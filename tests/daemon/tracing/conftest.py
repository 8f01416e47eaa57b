"""Fixtures of the tracing tests: a real OTLP/HTTP receiver on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.daemon.tracing.otlp_receiver import OTLPReceiver, ReceiverThread


@pytest.fixture
async def otlp_receiver() -> AsyncIterator[OTLPReceiver]:
    """A receiver in the test's event loop (for async tests)."""
    receiver = OTLPReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
def otlp_receiver_thread() -> Iterator[OTLPReceiver]:
    """A receiver serving from its own thread (for synchronous tests and daemons)."""
    with ReceiverThread() as receiver:
        yield receiver
