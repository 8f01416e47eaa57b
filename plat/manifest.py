"""``plat.yaml``: loading, validation and defaults.

Validation happens in the CLI before anything is sent to the daemon, and again in
the daemon. Every problem becomes one ManifestError naming the file, the field
and the fix.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from plat.errors import ManifestError
from plat.handlerkinds import Adapter
from plat.runtimes import all_runtimes, detect_runtime
from plat.slo import Slo
from plat.tenancy import TENANT_RE
from plat.triggers import AsyncPolicy, check_schedule
from plat.units import parse_duration, parse_size

MANIFEST_NAME = "plat.yaml"
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_HANDLER_CHARS = 255
# A secret's name is a file name in the instance (/var/plat/secrets/<name>).
SECRET_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")
# A Vault KV v2 reference: <mount>/<path>#<key>, e.g. secret/app#password.
VAULT_REF_RE = re.compile(
    r"(?P<mount>[A-Za-z0-9_.-]+)/(?P<path>[A-Za-z0-9_.@+=/-]+)#(?P<key>[^\x00-\x1f\x7f]{1,256})"
)
MAX_SECRETS = 64

DEFAULT_MEMORY = 256 * 1024**2
DEFAULT_CPU = 1.0
DEFAULT_TIMEOUT = 30.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    memory: int = DEFAULT_MEMORY
    cpu: float = DEFAULT_CPU
    pids: int = 256

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int:
        size = _parsed(parse_size, value)
        if size < 16 * 1024**2:
            raise ValueError("memory must be at least 16Mi")
        return size

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: float) -> float:
        if not 0.01 <= value <= 64:
            raise ValueError("cpu must be between 0.01 and 64 (cores)")
        return value

    @field_validator("pids")
    @classmethod
    def _pids(cls, value: int) -> int:
        if value < 8:
            raise ValueError("pids must be at least 8")
        return value


class Scale(_Strict):
    min: int = Field(default=1, ge=0, le=100)
    max: int = Field(default=4, ge=1, le=100)
    concurrency: int = Field(default=8, ge=1, le=10_000)

    @model_validator(mode="after")
    def _order(self) -> Scale:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class SecretRef(_Strict):
    """One entry of ``secrets``: a plat secret of the tenant (``vault`` None) or a key
    of a Vault KV v2 secret, as the file ``name``."""

    name: str
    vault: str | None = None


def secret_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid secret name, or None when it is."""
    if not isinstance(name, str) or not SECRET_NAME_RE.fullmatch(name) or ".." in name:
        return (
            f"{str(name)[:80]!r} is not a valid secret name; use 1-63 lowercase letters, "
            "digits, '.', '_' and '-', starting and ending with a letter or digit "
            "(e.g. db-password)"
        )
    return None


def parse_vault_ref(ref: str) -> tuple[str, str, str]:
    """(mount, path, key) of ``"<mount>/<path>#<key>"``; raises ValueError otherwise."""
    match = VAULT_REF_RE.fullmatch(ref)
    parts = [*match["path"].split("/"), match["mount"]] if match else []
    if not match or any(part in {"", ".", ".."} for part in parts):
        raise ValueError(
            f"{ref[:300]!r} is not a vault reference; write <mount>/<path>#<key>, "
            "e.g. secret/app#password"
        )
    return match["mount"], match["path"], match["key"]


def _secret_entries(value: Any) -> list[dict[str, Any]]:
    """``secrets`` as a list of {name, vault} mappings; ValueError naming the entry."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("secrets must be a list, e.g. [db-password] or [{name: db, vault: ...}]")
    if len(value) > MAX_SECRETS:
        raise ValueError(f"at most {MAX_SECRETS} secrets per function")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(value, start=1):
        if isinstance(item, SecretRef):
            item = item.model_dump()
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise ValueError(
                f"entry {index} must be a secret's name or a mapping {{name: ..., vault: ...}}"
            )
        unknown = sorted(str(key) for key in item if key not in SecretRef.model_fields)
        if unknown:
            raise ValueError(
                f"entry {index} has unknown key(s) {', '.join(unknown)}; allowed: name, vault"
            )
        name = item.get("name")
        problem = secret_name_problem(name)
        if problem:
            raise ValueError(f"entry {index}: {problem}")
        assert isinstance(name, str)
        if name in seen:
            raise ValueError(f"entry {index}: secret {name!r} is listed twice")
        seen.add(name)
        vault = item.get("vault")
        if vault is not None:
            if not isinstance(vault, str):
                raise ValueError(f"entry {index} ({name}): vault must be a string")
            try:
                parse_vault_ref(vault)
            except ValueError as exc:
                raise ValueError(f"entry {index} ({name}): {exc}") from None
        out.append({"name": name, "vault": vault})
    return out


class Manifest(_Strict):
    name: str
    runtime: str
    handler: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    auth: Literal["basic", "public"] = "basic"
    timeout: float = DEFAULT_TIMEOUT
    resources: Resources = Field(default_factory=Resources)
    scale: Scale = Field(default_factory=Scale)
    secrets: list[SecretRef] = Field(default_factory=list)
    slo: Slo | None = None
    async_: AsyncPolicy | None = Field(default=None, alias="async")
    schedule: list[str] = Field(default_factory=list)
    adapter: Adapter | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> list[str]:
        return check_schedule(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        # Inside the daemon a tenant's function is named by its key, <name>.<tenant>
        # (plat.tenancy); plat.yaml names the function only.
        name, dot, tenant = value.partition(".")
        qualified = bool(info.context and info.context.get("qualified"))
        if dot and not qualified:
            raise ValueError(
                f"{value!r} is not a valid name: a name has no '.'; deploy a function "
                "for a tenant with `plat --tenant TENANT deploy` (or PLAT_TENANT)"
            )
        if not NAME_RE.fullmatch(name) or (dot and not TENANT_RE.fullmatch(tenant)):
            raise ValueError(
                f"{value!r} is not a valid name; use 1-63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (e.g. hello-world)"
            )
        return value

    @field_validator("handler")
    @classmethod
    def _handler(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("handler is empty; name it, e.g. handler.handle, or leave it out")
        if CONTROL_RE.search(value):
            raise ValueError(
                f"{value!r} contains a control character (NUL, newline, ...); "
                "name the handler, e.g. handler.handle"
            )
        if len(value) > MAX_HANDLER_CHARS:
            raise ValueError(f"handler is longer than {MAX_HANDLER_CHARS} characters")
        return value

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str) -> str:
        known = all_runtimes()
        if value not in known:
            raise ValueError(f"unknown runtime {value!r}; use one of: {', '.join(sorted(known))}")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float:
        seconds = _parsed(parse_duration, value)
        if seconds > 3600:
            raise ValueError("timeout must be at most 1h")
        return seconds

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("env must be a mapping of NAME: value")
        out = {}
        for key, item in value.items():
            if not ENV_KEY_RE.fullmatch(str(key)):
                raise ValueError(
                    f"{key!r} is not a valid environment variable name; use letters, digits "
                    "and '_', not starting with a digit (e.g. MY_VAR)"
                )
            if isinstance(item, dict | list):
                raise ValueError(f"env value for {key} must be a string or number")
            if isinstance(item, bool):
                item = "true" if item else "false"
            text = "" if item is None else str(item)
            if "\0" in text:
                raise ValueError(
                    f"env value for {key} contains a NUL byte, which no environment variable "
                    "can hold; remove it"
                )
            out[str(key)] = text
        return out

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets(cls, value: Any) -> list[dict[str, Any]]:
        return _secret_entries(value)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Secrets as a user writes them (a name, or {name, vault}); none, or no slo:
        # no key at all, so such a manifest dumps as it did before they existed.
        data: dict[str, Any] = handler(self)
        data.pop("secrets", None)
        if self.secrets:
            data["secrets"] = [r.name if r.vault is None else dict(r) for r in self.secrets]
        for key in ("slo", "adapter"):
            if getattr(self, key) is None:
                data.pop(key, None)
        policy = data.pop("async_", None)
        if self.async_ is not None:
            data["async"] = policy
        if not self.schedule:
            data.pop("schedule", None)
        return data

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _parsed(parse: Any, value: Any) -> Any:
    """``parse(value)``, with the errors of absurd values (1e400Gi) as ValueError."""
    try:
        return parse(value)
    except (OverflowError, TypeError) as exc:
        raise ValueError(f"{str(value)[:40]!r} is out of range: {exc}") from None


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _format_error(source: str, err: dict[str, Any]) -> str:
    field = _field_path(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        parent = field.rsplit(".", 1)[0] if "." in field else None
        allowed = _allowed_keys(parent)
        return (
            f"{source}: unknown key '{field}'. Remove it or fix its spelling; "
            f"allowed keys{' under ' + parent if parent else ''}: {', '.join(allowed)}"
        )
    if kind == "missing":
        return f"{source}: '{field}' is required. Add it, e.g. `{field}: ...`"
    message = str(err.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return f"{source}: invalid value for '{field}': {message}"


def _allowed_keys(parent: str | None) -> list[str]:
    model: type[BaseModel] = Manifest
    if parent == "resources":
        model = Resources
    elif parent == "scale":
        model = Scale
    elif parent == "slo":
        model = Slo
    return [field.alias or key for key, field in model.model_fields.items()]


def validate_manifest(
    data: Any, *, source: str = MANIFEST_NAME, qualified: bool = False
) -> Manifest:
    """A Manifest from parsed YAML; raises ManifestError naming file, field and fix.

    ``qualified``: the name may be a function key, ``<name>.<tenant>`` (the daemon's
    own records); a user's plat.yaml names the function only."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping of keys (name: ..., runtime: ...)")
    try:
        return Manifest.model_validate(data, context={"qualified": qualified})
    except ValidationError as exc:
        lines = [_format_error(source, dict(err)) for err in exc.errors()]
        raise ManifestError("\n".join(lines)) from None
    except RecursionError:
        raise ManifestError(f"{source}: values are nested too deeply") from None


def load_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder/plat.yaml``, detecting the runtime when absent."""
    folder = folder.resolve()
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ManifestError(f"{folder} is not a folder", hint="pass the function's folder")
    if not os.path.lexists(path) or (path.is_dir() and not path.is_symlink()):
        raise ManifestError(
            f"no {MANIFEST_NAME} in {folder}",
            hint="run `plat init NAME` to scaffold a function, or cd into its folder",
        )
    data = parse_manifest_text(_read(path, folder), str(path))
    if isinstance(data, dict) and "runtime" not in data:
        detected = detect_runtime(folder)
        if detected is None:
            raise ManifestError(
                f"{path}: 'runtime' is not set and cannot be detected",
                hint="add `runtime: python`, `runtime: node` or `runtime: dockerfile`",
            )
        data["runtime"] = detected
    return validate_manifest(data, source=str(path))


def _read(path: Path, folder: Path) -> bytes:
    """The bytes of ``plat.yaml``: a regular file inside ``folder``, at most
    MAX_MANIFEST_BYTES; raises ManifestError otherwise."""
    real = os.path.realpath(path)
    if not real.startswith(str(folder).rstrip(os.sep) + os.sep):
        raise ManifestError(
            f"{path} is a link to {real}, which leaves the folder",
            hint=f"copy the file into {folder} instead of linking it",
        )
    try:
        # O_NONBLOCK: opening a FIFO must not hang; it is refused just below.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ManifestError(
                f"{path} is not a regular file", hint=f"write {MANIFEST_NAME} as a plain file"
            )
        os.set_blocking(fd, True)
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{path} is larger than {MAX_MANIFEST_BYTES // 1024} KiB",
            hint="a manifest is a few lines: name, runtime, handler, env, ...",
        )
    return data


def _line_column(text: bytes | str, offset: int) -> str:
    before = text[:offset]
    newline = b"\n" if isinstance(before, bytes) else "\n"
    line = before.count(newline) + 1  # type: ignore[arg-type]
    column = offset - (before.rfind(newline) + 1)  # type: ignore[arg-type]
    return f"line {line}, column {column + 1}"


def parse_manifest_text(raw: bytes, source: str) -> Any:
    """The YAML document in ``raw`` (UTF-8); raises ManifestError naming ``source`` and
    the problem (encoding, a character YAML forbids, syntax, nesting)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        raise ManifestError(
            f"{source}: not UTF-8: byte 0x{byte:02x} at {_line_column(raw, exc.start)}",
            hint="save the file as UTF-8",
        ) from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.reader.ReaderError as exc:
        char = exc.character
        code = ord(char) if isinstance(char, str) else int(char)
        raise ManifestError(
            f"{source}: character {code:#x} at {_line_column(text, exc.position)} "
            "is not allowed in YAML",
            hint="remove it; write control characters in a double-quoted string as escapes (\\t)",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ManifestError(f"{source}: YAML syntax error{where}: {problem}") from None
    except RecursionError:
        raise ManifestError(f"{source}: values are nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # PyYAML lets a bad tagged value through unwrapped (e.g. a date 2024-13-45).
        raise ManifestError(f"{source}: a value cannot be read: {exc}") from None
