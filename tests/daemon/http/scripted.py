"""A TCP server scripted to answer byte for byte: what real servers never send.

A test subclasses ``ScriptedServer`` and writes ``answer``: given what a request
asked (its path, head and body, and how many requests came before it on its
connection), the exact bytes to send back, how long to wait first and whether
to hang up after them. Request bodies (Content-Length or chunked) are read
before ``answer`` is asked, so a connection stays in step for the next request.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple


class Asked(NamedTuple):
    path: bytes
    head: bytes  # the request line and headers, up to and with the blank line
    body: bytes
    before: int  # requests answered earlier on the same connection


class Answer(NamedTuple):
    data: bytes = b""
    hang_up: bool = False  # close the connection once ``data`` is sent
    delay: float = 0.0  # seconds to wait before sending


class ScriptedServer:
    """Listens on loopback; counts connections and records every request head."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    def answer(self, asked: Asked) -> Answer:
        raise NotImplementedError

    async def start(self) -> int:
        """Listen on a free port; returns it."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        before = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                body = await read_body(reader, head)
                answer = self.answer(Asked(head.split(b" ")[1], head, body, before))
                before += 1
                if answer.delay:
                    await asyncio.sleep(answer.delay)
                writer.write(answer.data)
                await writer.drain()
                if answer.hang_up:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def hang_up(self) -> None:
        """Close every connection (as an instance's idle timeout does)."""
        for writer in self.writers:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The body that follows ``head``, by its Content-Length or chunked framing."""
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            return await reader.readexactly(int(value))
        if name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if not chunked:
        return b""
    body = b""
    while size := int((await reader.readline()).split(b";")[0].strip(), 16):
        body += (await reader.readexactly(size + 2))[:-2]
    while await reader.readline() not in (b"\r\n", b""):
        pass  # trailers
    return body
