"""Write flow control for an asyncio Protocol: what the server's client
connections and the upstream connections to instances share.

The transport calls ``pause_writing`` when its write buffer passes the high-water
mark and ``resume_writing`` once it is back under the low-water mark (asyncio's
marks: 64 KiB and a quarter of that); ``drain`` waits for the latter, so a
writer that drains after each write never buffers much more than the high mark.
"""

from __future__ import annotations

import asyncio


class FlowControl:
    """Mixed into an asyncio.Protocol that has a ``closed`` flag: ``drain`` returns
    at once on a closed connection, and ``connection_lost`` must call
    ``wake_drain`` so that a writer waiting in ``drain`` returns too."""

    closed: bool
    write_paused = False
    _drain_waiter: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wake_drain()

    def wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's buffer is under its low-water mark."""
        while self.write_paused and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
