"""The process's output: call ids on the lines calls write, and the shim's own reports.

While a call with an id runs, every line it writes to ``sys.stdout`` or
``sys.stderr`` starts with ``[call:<id>] `` (``[call:<id> trace:<trace id>] ``
when the request had a valid ``traceparent``), which plat's log collector strips
and stores as the line's call id (and trace id). ``write_raw_line`` writes a line
past the tags (the handler spans' ``plat-span:`` lines).
"""

from __future__ import annotations

import contextvars
import os
import re
import sys
import threading
import traceback
from typing import Any, TextIO, cast

# What plat's gateway sends as X-Call-Id; anything else is not a call id.
CALL_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# A call's unfinished line is written out (tagged) once it grows past this many characters.
MAX_HELD_LINE = 64 * 1024


class CallLog:
    """The log state of one call: its line tag and, per stream, its unfinished line."""

    __slots__ = ("cut", "done", "held", "tag", "token")

    def __init__(self, call_id: str, trace_id: str | None = None) -> None:
        self.tag = f"[call:{call_id} trace:{trace_id}] " if trace_id else f"[call:{call_id}] "
        self.held = ["", ""]  # per stream (stdout, stderr): text after the last newline
        self.cut = [False, False]  # per stream: another writer ended this call's open line
        self.done = False  # the call has returned; later output is not held
        self.token: contextvars.Token[CallLog | None] | None = None


_current_call: contextvars.ContextVar[CallLog | None] = contextvars.ContextVar(
    "plat_current_call", default=None
)
_calls_running = 0  # calls with a call id in progress (changed on the event loop only)
_UNTAGGED: Any = object()  # the writer of output from outside calls
# Set once raw lines are written (``keep_line_state``): every write then takes the
# stream's lock, so that whether a line is open is always known.
_line_state_kept = False


class TaggedStream:
    """Stands in for sys.stdout/sys.stderr: during a call, each line starts with its tag.

    Outside calls (no ``CallLog`` in the context) a write goes straight to the
    wrapped stream. During a call, the call's unfinished line is held, as a
    line-buffered stream would, until its newline, ``flush()`` or the end of the
    call, and complete lines go out tagged in a single write: a line printed by a
    thread (``print`` writes its text and its newline separately) is never split
    by another thread's output. A line left unfinished on the real stream (a
    flushed partial line, or untagged output while calls run) is ended before
    someone else writes, so no tag ever lands in the middle of a line.
    Everything else (``fileno``, ``buffer``, ``encoding``, ...) is the wrapped
    stream's.
    """

    def __init__(self, stream: TextIO, index: int) -> None:
        self.wrapped = stream
        self._index = index
        self._lock = threading.RLock()
        # Who left the real stream in the middle of a line: a CallLog, _UNTAGGED or None.
        self._owner: Any = None

    def write(self, text: str) -> int:
        call = _current_call.get()
        if call is None:
            if not isinstance(text, str) or not text:
                return self.wrapped.write(text)
            if not _calls_running and not _line_state_kept:
                # Remembered without the lock (only untagged writers run, racing as
                # they always could), so that the next tagged line does not
                # continue an unfinished untagged one.
                self._owner = None if text[-1] == "\n" else _UNTAGGED
                return self.wrapped.write(text)
            with self._lock:  # untagged output among tagged calls: keep lines apart
                out = self._end_other_line(_UNTAGGED) + text
                self._owner = None if text[-1] == "\n" else _UNTAGGED
                self.wrapped.write(out)
            return len(text)
        if not isinstance(text, str):
            return self.wrapped.write(text)
        size = len(text)
        i = self._index
        with self._lock:
            if call.cut[i]:
                # Its line was ended for it: the newline that would have ended it goes.
                call.cut[i] = False
                if text[:1] == "\n" and not call.held[i]:
                    text = text[1:]
            if "\n" in text:
                lines, _, rest = (call.held[i] + text).rpartition("\n")
                call.held[i] = rest
                out = self._line_start(call) + lines.replace("\n", "\n" + call.tag) + "\n"
                self._owner = None
            else:
                out = ""
                call.held[i] += text
            if call.done or len(call.held[i]) > MAX_HELD_LINE:
                out += self._release(call)
            if out:
                self.wrapped.write(out)
        return size

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        call = _current_call.get()
        if call is not None and call.held[self._index]:
            with self._lock:
                out = self._release(call)
                if out:
                    self.wrapped.write(out)
        self.wrapped.flush()

    def end_call(self, call: CallLog) -> None:
        """Write out what the call left unfinished, ending the line."""
        if call.held[self._index] or self._owner is call:
            with self._lock:
                out = self._release(call)
                if self._owner is call:
                    out += "\n"
                    self._owner = None
                    call.cut[self._index] = True
                if out:
                    self.wrapped.write(out)

    def write_raw(self, fd: int, data: bytes) -> None:
        """Write ``data``, one whole line, to ``fd`` (the wrapped stream's descriptor), untagged.

        What went through this stream before goes out first, and a line left
        unfinished on it is ended (as another call's output would end it), so
        ``data`` is a line of its own, written by one system call.
        """
        with self._lock:
            owner = self._owner
            if owner is not None:
                if owner is not _UNTAGGED:
                    owner.cut[self._index] = True
                self._owner = None
                data = b"\n" + data
            self.wrapped.flush()
            _write_all(fd, data)

    # The helpers run under the lock.

    def _end_other_line(self, writer: Any) -> str:
        # A newline when the real stream is in the middle of someone else's line.
        owner = self._owner
        if owner is None or owner is writer:
            return ""
        if owner is not _UNTAGGED:
            owner.cut[self._index] = True
        self._owner = None
        return "\n"

    def _line_start(self, call: CallLog) -> str:
        # What goes before the call's next text: nothing if it continues its own line.
        if self._owner is call:
            return ""
        return self._end_other_line(call) + call.tag

    def _release(self, call: CallLog) -> str:
        # The call's held text, written without waiting for the end of its line.
        held = call.held[self._index]
        if not held:
            return ""
        call.held[self._index] = ""
        out = self._line_start(call) + held
        self._owner = call
        return out

    def __getattr__(self, name: str) -> Any:
        # encoding, errors, buffer, fileno, isatty, line_buffering, reconfigure, ...
        if name == "wrapped":  # not set yet (copy, pickle): no endless recursion
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"<plat TaggedStream {self.wrapped!r}>"


_tagged_streams: list[TaggedStream] = []


def tag_output() -> None:
    """Put TaggedStreams in place of sys.stdout and sys.stderr (idempotent)."""
    for index, name in enumerate(("stdout", "stderr")):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, TaggedStream):
            continue
        tagged = TaggedStream(stream, index)
        setattr(sys, name, cast(TextIO, tagged))
        _tagged_streams.append(tagged)


def begin_call(call_id: str, trace_id: str | None = None) -> CallLog:
    """From now on, output in this context belongs to the call ``call_id`` (of the
    trace ``trace_id``, if given: a valid one, as platshim.tracing.trace_id_of gives).

    Call on the event loop, and ``finish_call`` in the same context when the call returns.
    """
    global _calls_running
    call = CallLog(call_id, trace_id)
    call.token = _current_call.set(call)
    _calls_running += 1
    return call


def finish_call(call: CallLog) -> None:
    """The call has returned: write out what it left unfinished; later output is untagged."""
    global _calls_running
    _calls_running -= 1
    if call.token is not None:
        _current_call.reset(call.token)
    call.done = True
    for stream in _tagged_streams:
        stream.end_call(call)


_raw_lock = threading.Lock()


def _write_all(fd: int, data: bytes) -> None:
    # A blocking descriptor takes it all at once; a signal may cut a write short.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def keep_line_state() -> None:
    """Make every write through the tagged streams keep track of whether a line is
    open, under the stream's lock (a little slower), so that ``write_raw_line``
    always starts its line at the start of one. Call before the first raw line."""
    global _line_state_kept
    _line_state_kept = True


def write_raw_line(data: bytes) -> None:
    """Write ``data`` (one line, its newline included) to fd 1, past the call tags.

    Thread-safe; the line never lands inside a line written through sys.stdout.
    """
    for stream in _tagged_streams:
        if stream._index == 0:  # sys.stdout's: its lock keeps other lines whole
            stream.write_raw(1, data)
            return
    with _raw_lock:
        _write_all(1, data)


# --- the shim's own reports ------------------------------------------------------------------

# A code object's file name is its module's __file__, as given by its sys.path entry.
_PACKAGE_DIR = os.path.join(os.path.dirname(__file__), "")


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the shim's and the thread pool's own frames."""
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR)
        or "concurrent" in tb.tb_frame.f_code.co_filename.replace("\\", "/").split("/")
    ):
        tb = tb.tb_next
    if tb is None:  # the error is the shim's own: show everything
        return "".join(traceback.format_exception(exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


def log_error(message: str, exc: BaseException | None = None) -> None:
    """Report on stderr, with the user's part of the traceback of ``exc`` if given."""
    # One write per report so that tracebacks of concurrent requests do not interleave.
    text = f"plat-shim: {message}\n"
    if exc is not None:
        text += _user_traceback(exc)
    sys.stderr.write(text)
    sys.stderr.flush()
