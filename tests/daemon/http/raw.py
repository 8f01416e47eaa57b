"""A bare HTTP/1.1 client for tests: writes bytes as given, reads answers as sent."""

from __future__ import annotations

import asyncio
import contextlib

from plat.daemon.http.server import HttpServer


class Raw:
    """A bare HTTP/1.1 client on one connection: write bytes, read answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: HttpServer) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response; header names lower-cased (repeats joined with ', ')."""
        line = await self.reader.readline()
        assert line, "the connection closed"
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if head_only or status in (204, 304) or status < 200:
            return status, headers, b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.read()
        return status, headers, body

    async def closed(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), 2) == b""
        except (ConnectionError, TimeoutError):
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
