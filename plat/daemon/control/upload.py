"""A function folder uploaded as a tar.gz (a deploy over HTTP), unpacked safely.

The body is spooled to a file under the uploads folder while it is counted
(``max_bytes`` of compressed data at most: 413 beyond), then unpacked by
:func:`plat.archive.extract`, which refuses absolute names, ``..``, device files,
FIFOs and links that leave the folder (400, naming the member). A client that
stops sending midway leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

from aiohttp import web

from plat.archive import extract
from plat.errors import PlatError

MAX_UPLOAD = 256 * 1024**2
ARCHIVE_TYPES = frozenset({"application/gzip", "application/x-gzip", "application/x-tar+gzip"})
CHUNK = 1 << 20


class UploadTooLarge(PlatError):
    status = 413
    code = "upload_too_large"


def is_upload(request: web.Request) -> bool:
    return request.content_type in ARCHIVE_TYPES


async def receive(request: web.Request, uploads: Path, max_bytes: int = MAX_UPLOAD) -> Path:
    """The uploaded folder, unpacked into a new folder under ``uploads``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_hex(8)
    spool = uploads / f".{token}.tar.gz"
    folder = uploads / token
    try:
        fd = os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            size = 0
            async for chunk in request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                await asyncio.to_thread(out.write, chunk)
        if size == 0:
            raise PlatError("the upload is empty: send the function's folder as a tar.gz")
        await asyncio.to_thread(_unpack, spool, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        spool.unlink(missing_ok=True)
    return folder


def _unpack(spool: Path, folder: Path) -> None:
    with spool.open("rb") as source:
        extract(source, folder)


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"the upload is larger than {limit // 1024**2} MiB",
        hint="leave build output and data out with a .platignore file",
    )
