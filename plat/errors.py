"""The one error root. A PlatError's message is what the user reads."""

from __future__ import annotations


class PlatError(Exception):
    """An error the user can act on. ``status`` is the HTTP status the daemon answers with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nHint: {self.hint}"
        return self.message

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        return body


class ManifestError(PlatError):
    code = "invalid_manifest"


class NotFoundError(PlatError):
    status = 404
    code = "not_found"


def no_function(name: str) -> NotFoundError:
    """The error for a function name that is not deployed (or not any more)."""
    return NotFoundError(f"no function named {name!r}", hint="`plat ls` lists functions")


class ConflictError(PlatError):
    status = 409
    code = "conflict"


class BuildError(PlatError):
    """A build failed. ``log_tail`` holds the last lines of the build log."""

    status = 422
    code = "build_failed"

    def __init__(self, message: str, *, log_tail: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log_tail = log_tail

    def to_json(self) -> dict[str, object]:
        body = super().to_json()
        body["log_tail"] = self.log_tail
        return body


class EngineError(PlatError):
    status = 503
    code = "engine_unavailable"


class DaemonError(PlatError):
    status = 503
    code = "daemon"


class CommandError(PlatError):
    """A subprocess failed; the message carries the command, exit code and output tail."""

    code = "command_failed"

    def __init__(self, cmd: list[str], returncode: int, output: str, *, hint: str | None = None):
        tail = "\n".join(output.strip().splitlines()[-20:])
        super().__init__(
            f"command failed (exit {returncode}): {' '.join(cmd)}\n{tail}".rstrip(), hint=hint
        )
        self.cmd = cmd
        self.returncode = returncode
        self.output = output
