"""What crosses the control API and the daemon's module seams, typed once.

The CLI and the daemon import these alike. Only ``typing`` here: the CLI starts
fast. Bodies are JSON objects (TypedDicts); the daemon's in-process states are
NamedTuples (rendered as metrics and status).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Required, TypedDict, cast

# deploy: POST /v1/functions answers NDJSON, one event a line, in this order:
# phase(build), log*, built, phase(start)?, event*, done, function; or error at any point.


class PhaseEvent(TypedDict):
    type: Literal["phase"]
    phase: Literal["build", "start"]


class LogEvent(TypedDict):
    type: Literal["log"]
    line: str


class BuiltEvent(TypedDict):
    type: Literal["built"]
    version: str
    image: str
    cached: bool
    hot: bool  # a code-only change served from a mount (plat dev)
    seconds: float


class MessageEvent(TypedDict):
    type: Literal["event"]
    message: str


class Timings(TypedDict):
    build: float
    start: float
    ready: float
    swap: float


class DoneEvent(TypedDict):
    type: Literal["done"]
    version: str
    cached: bool
    hot: bool
    build_seconds: float
    ready_seconds: float
    timings: Timings
    seconds: float


class FunctionSummary(TypedDict, total=False):
    name: str  # the function's name (plain: its tenant is apart)
    tenant: str
    runtime: str | None
    version: str | None
    image: str
    auth: str
    url: str | None
    instances: int  # ready ones
    desired: int
    updated_at: float
    next_run: float | None  # the next cron tick (epoch seconds), with a schedule only
    preview: PreviewMark  # a branch's preview, made by a git hook


class PreviewMark(TypedDict):
    hook: str  # the hook's id
    branch: str
    expires_at: float  # when the reaper removes it unless the branch is pushed again


class FunctionEvent(TypedDict):
    type: Literal["function"]
    function: FunctionSummary


class ErrorEvent(TypedDict, total=False):
    type: Required[Literal["error"]]
    error: str  # a PlatError's code, "superseded" or "internal"
    message: str
    hint: str
    log_tail: str


DeployEvent = (
    PhaseEvent | LogEvent | BuiltEvent | MessageEvent | DoneEvent | FunctionEvent | ErrorEvent
)


def message(text: str) -> MessageEvent:
    return {"type": "event", "message": text}


def deploy_event(data: dict[str, Any]) -> DeployEvent:
    """One line of a deploy's NDJSON answer, as the daemon wrote it."""
    return cast(DeployEvent, data)


# describe: GET /v1/functions/{name}


class AutoscalerView(TypedDict):
    desired: int
    actual: int
    starting: int
    observed_concurrency: float
    panic_concurrency: float
    panicking: bool
    in_flight: int
    queued: int


class AdmissionView(TypedDict):
    inflight: int  # calls that were handed a slot and have not returned it
    held: int  # slots taken on instances (draining ones included) and not returned
    waiting: int  # callers queued for a slot
    ok: bool  # held == inflight, and each instance's count matches its slots


class VersionView(TypedDict):
    version: str
    image: str
    status: str
    builder: str | None
    build_seconds: float | None
    created_at: float


class InstanceView(TypedDict):
    id: str
    version: str
    address: str
    state: str
    started_at: float
    ready_seconds: float | None


class Description(FunctionSummary, total=False):
    manifest: dict[str, Any]
    source_dir: str
    created_at: float
    scale_override: dict[str, Any] | None
    autoscaler: AutoscalerView
    admission: AdmissionView
    versions: list[VersionView]
    instance_list: list[InstanceView]


class ScaleResult(TypedDict):
    function: str
    scale: dict[str, Any]
    override: dict[str, Any] | None


# status: GET /v1/status


class PoolView(TypedDict):
    key: str
    ready: int
    starting: int
    claimed: int
    misses: int


class PoolStatus(TypedDict):
    size: int
    pools: list[PoolView]


class Status(TypedDict):
    pid: int
    version: str
    uptime: float
    home: str
    gateway_url: str
    backend: str
    backend_warning: str | None
    engine: dict[str, Any]
    builder: str
    functions: int
    pool: PoolStatus


# queued calls: GET /v1/calls, GET /v1/calls/{id}, POST /v1/calls/{id}/retry


class CallSummary(TypedDict):
    id: str
    function: str  # plain name
    tenant: str
    state: str  # queued | running | done | failed | dead
    trigger: str  # async | cron
    attempts: int
    status: int | None  # of the last attempt (None: it got no answer)
    created_at: float
    finished_at: float | None
    duration: float | None  # of the last attempt
    callback_state: str | None  # pending | delivered | failed; None without a callback
    error: str | None


class AttemptView(TypedDict):
    attempt: int
    started_at: float
    duration: float | None  # None while it runs
    status: int | None
    error: str | None


class CallResponse(TypedDict, total=False):
    status: Required[int]
    headers: Required[list[tuple[str, str]]]
    body: Required[str]  # text, or base64 when encoding says so
    encoding: Literal["base64"]


class CallDetail(CallSummary):
    method: str
    target: str  # the path after the function's, with the query
    callback_url: str | None
    callback_attempts: int
    callback_status: int | None
    attempts_detail: list[AttemptView]
    response: CallResponse | None  # the answer that ended the call (or the last one kept)
    trace_id: str | None  # the trace of its attempts (`plat trace ID`)


class CallList(TypedDict):
    calls: list[CallSummary]


# git hooks: /v1/hooks, /v1/hooks/{hook}/deliveries[/{delivery}]


class HookView(TypedDict):
    id: str
    function: str  # plain name
    tenant: str
    repo: str
    branch: str
    path: str  # the sub folder deployed ('' for the top)
    previews: bool
    preview_ttl: float  # seconds
    url: str  # where the git server sends deliveries
    created_at: float
    last_state: str | None  # of the newest delivery that ran


class HookCreated(HookView):
    secret: str  # shown once


class DeliveryView(TypedDict):
    seq: int  # plat's number for it
    id: str  # the provider's delivery id (or sha256:<body digest> without one)
    provider: str  # github | gitlab | gitea | forgejo
    event: str  # as the provider named it
    action: str  # deploy | remove | ping | ignore | '' (not read: rejected)
    branch: str | None
    commit: str | None
    target: str | None  # the function deployed or removed (plain name)
    state: str  # queued|fetching|building|deploying|done|failed|ignored|duplicate|rejected
    url: str | None  # where what it deployed answers (a preview's host URL)
    received_at: float
    duration: float | None  # from its start to its end, once ended
    error: str | None


class DeliveryDetail(DeliveryView):
    log: str


# in-process states, read by the metrics and the status


class PoolState(NamedTuple):
    key: str  # runtime/memory/cpu/pids
    ready: int
    starting: int
    claimed: int
    misses: int


class ScalerState(NamedTuple):
    function: str
    desired: int
    actual: int
    observed: float  # the stable window's average concurrency
    panicking: bool


class InstanceCount(NamedTuple):
    function: str
    state: str
    instances: int
