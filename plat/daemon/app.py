"""The daemon: its parts wired in one place, started and closed in order.

Start: store -> engine -> backend/builder -> controller (reconcile) -> gateway ->
sockets. Close runs the same steps backwards, each bounded, so SIGTERM leaves no
instances behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from plat import __version__
from plat import engine as engines
from plat.api import PoolStatus, Status
from plat.config import Config
from plat.credentials import basic_header, ensure_admin_token, ensure_password
from plat.daemon.asyncq.callbacks import CallbackPolicy
from plat.daemon.asyncq.service import CallService
from plat.daemon.audit import AuditLog, AuditRetention
from plat.daemon.collector import LogCollector
from plat.daemon.control import API_PREFIX, Services, api_app, control_routes, control_runner
from plat.daemon.deployer import Deployer
from plat.daemon.drivers.base import Backend
from plat.daemon.drivers.container.driver import container_driver
from plat.daemon.drivers.process.driver import process_driver
from plat.daemon.drivers.versions import Driver
from plat.daemon.functions import Functions
from plat.daemon.gateway import Gateway
from plat.daemon.health import health_routes
from plat.daemon.hooks.service import HookService
from plat.daemon.http.fdlimit import connection_cap, raise_open_files
from plat.daemon.http.server import HttpServer
from plat.daemon.journal import Journal, Retention
from plat.daemon.metrics import Metrics, metrics_routes
from plat.daemon.secrets.sealing import Sealer
from plat.daemon.secrets.service import SecretsService
from plat.daemon.serving.autoscaler import ScalerSettings
from plat.daemon.serving.controller import Controller
from plat.daemon.serving.pool import WarmPool
from plat.daemon.store import SpanRecord, Store
from plat.daemon.tasks import TaskGroup, cancel_and_wait
from plat.daemon.tenants import Tenants
from plat.daemon.tracing.export import Exporter, wanted
from plat.daemon.tracing.tracer import Tracer
from plat.daemon.ui import ui_routes
from plat.errors import DaemonError, EngineError, PlatError
from plat.paths import Home

log = logging.getLogger(__name__)


NO_ISOLATION = (
    "this daemon runs functions as local processes (the process backend): tenants' "
    "instances are not isolated from each other on the network; tokens, names, secrets "
    "and quotas still apply"
)


def pool_status(pool: WarmPool | None) -> PoolStatus:
    if pool is None or not pool.enabled:
        return {"size": 0, "pools": []}
    return {"size": pool.size, "pools": [state._asdict() for state in pool.states()]}  # type: ignore[misc]


class Daemon:
    def __init__(
        self, home: Home, config: Config, env: Mapping[str, str], driver: Driver | None = None
    ) -> None:
        """``driver``: what runs functions; None chooses one by ``config`` (an engine
        when one answers or can be started, else local processes)."""
        self.home = home
        self._driver = driver
        self.config = config
        self.env = env
        self.started_at = time.time()
        self.stop_event = asyncio.Event()
        self.tasks = TaskGroup(log)
        self.engine_description: dict[str, Any] = {}
        self.backend_warning: str | None = None
        self.gateway_url = ""
        self._open_files = 0
        self._stack = AsyncExitStack()
        # Set by start():
        self.store: Store
        self.backend: Backend
        self.controller: Controller
        self.gateway: Gateway
        self.deployer: Deployer
        self.functions: Functions
        self.journal: Journal
        self.collector: LogCollector
        self.metrics: Metrics
        self.auth_header: str
        self.tenants: Tenants
        self.audit: AuditLog
        self.secrets: SecretsService
        self.hooks: HookService
        self.routes: list[web.RouteDef]

    async def start(self) -> None:
        stack = self._stack
        self._open_files = raise_open_files()
        self.home.ensure()
        password = ensure_password(self.home)
        self.admin_token = ensure_admin_token(self.home)

        self.store = Store(self.home.database)
        await self.store.open()
        stack.push_async_callback(self.store.close)
        # Opened early and closed late: the last changes (a shutdown) are recorded too.
        self.audit = AuditLog(
            self.home.database,
            head_file=self.home.root / "audit.head",
            retention=AuditRetention(self.config.audit_records, self.config.audit_age),
            trim_interval=self.config.log_trim_interval,
        )
        await self.audit.start()
        stack.push_async_callback(self.audit.close)
        self.tenants = Tenants(self.store, self.admin_token)
        await self.tenants.load()
        self.secrets = SecretsService(
            self.store, Sealer.from_home(self.home.root), self.env, ttl=self.config.secrets_ttl
        )
        await self.secrets.start()
        stack.push_async_callback(self.secrets.close)

        driver = self._driver or await self._choose_driver()
        backend, artifacts = driver.backend, driver.artifacts
        self.backend = backend
        stack.push_async_callback(backend.close)
        for close in driver.closers:
            stack.push_async_callback(close)

        self.journal = Journal(
            self.store,
            Retention(
                log_lines=self.config.log_lines,
                log_age=self.config.log_age,
                invocations=self.config.invocation_records,
                invocation_age=self.config.invocation_age,
            ),
            trim_interval=self.config.log_trim_interval,
        )
        await self.journal.start()
        stack.push_async_callback(self.journal.close)
        self.tracer, self.exporter = self._tracing()
        if self.exporter is not None:
            self.exporter.start()
            stack.push_async_callback(self.exporter.close)
        self.collector = LogCollector(
            backend,
            self.journal,
            enabled=self.config.log_capture,
            rate=self.config.log_rate,
            on_span=self._span,
        )
        stack.push_async_callback(self.collector.close)

        pool = await self._pool(driver)
        self.controller = Controller(
            self.store,
            backend,
            pool=pool,
            ready_timeout=self.config.ready_timeout,
            drain_timeout=self.config.drain_timeout,
            collector=self.collector,
            scaler=ScalerSettings(
                target_utilization=self.config.target_utilization,
                stable_window=self.config.stable_window,
                panic_window=self.config.panic_window,
                panic_threshold=self.config.panic_threshold,
                scale_down_rate=self.config.scale_down_rate,
                scale_to_zero_after=self.config.scale_to_zero_after,
            ),
            autoscale_tick=self.config.autoscale_tick,
            queue_limit=self.config.queue_limit,
            queue_timeout=self.config.queue_timeout,
            limits_of=self.tenants.limits_of,
            resolve_secrets=self.secrets.for_manifest,
        )
        stack.push_async_callback(self.controller.close)
        self.metrics = Metrics(
            self.controller.instance_states,
            self.controller.scaler_states,
            pool.states if pool is not None else None,
            # The queue starts after the gateway: no calls to tell of until then.
            queue_states=lambda: self.calls.states() if hasattr(self, "calls") else (),
        )
        await self.controller.start()
        self.deployer = Deployer(
            self.store, self.controller, artifacts, self.metrics, self.secrets.for_manifest
        )
        self.functions = Functions(
            self.store,
            self.controller,
            self.deployer,
            self.metrics,
            url_of=self.function_url,
            uploads=self.home.root / "uploads",
            secrets=self.secrets,
        )
        self.functions.track_secrets()
        await self.functions.prune_uploads()
        # Git webhooks: each delivery, and what it deploys or removes, is audited.
        self.hooks = HookService(
            self.store,
            self.functions,
            self.secrets.sealer,
            self.home.root / "hooks",
            dict(self.env),
            gateway_url=lambda: self.gateway_url,
            audit=self.audit.record,
        )
        services = Services(
            self.functions,
            self.store,
            self.journal,
            self.tasks,
            self.tenants,
            uploads=self.home.root / "uploads",
            secrets=self.secrets,
            on_tenant_removed=self._tenant_removed,
            tenant_warning=None if backend.isolates_tenants else NO_ISOLATION,
            calls=lambda: getattr(self, "calls", None),
            audit=self.audit,
            hooks=self.hooks,
        )
        self.routes = control_routes(services, status=self.status, shutdown=self.stop_event.set)

        self.auth_header = basic_header(password)
        # The gateway port's other routes, served by aiohttp behind the gateway.
        others = web.Application(client_max_size=self.config.max_body + 1)
        others.add_routes(health_routes(self.store, backend, self.started_at))
        others.add_routes(
            metrics_routes(
                self.metrics, auth_header=self.auth_header if self.config.metrics_auth else None
            )
        )
        others.add_routes(ui_routes())
        others.add_routes(self.hooks.routes)
        others.add_subapp(
            API_PREFIX, api_app(self.routes, self.tenants, self.auth_header, self.audit)
        )
        self.gateway = Gateway(
            self.controller,
            self.journal,
            self.metrics,
            auth_header=self.auth_header,
            max_body=self.config.max_body,
            others=others,
            tenants=self.tenants,
            tracer=self.tracer,
            exporter=self.exporter,
        )
        self.gateway.on_auth_failure = self.audit.call_refused
        await self.gateway.start()
        stack.push_async_callback(self.gateway.close)
        stack.push_async_callback(self.tasks.close)
        await self._serve()

    @staticmethod
    def _tracing() -> tuple[Tracer, Exporter | None]:
        """The gateway's tracer, and the OTLP exporter when OTEL_* variables ask for one."""
        tracer = Tracer()
        if not tracer.enabled:
            log.info("tracing is off (OTEL_SDK_DISABLED=true)")
            return tracer, None
        endpoint = wanted(os.environ)
        log.info(
            "tracing: sampler %s; spans kept locally%s",
            tracer.sampler.get_description(),
            f" and exported over OTLP/HTTP to {endpoint}" if endpoint else "",
        )
        return tracer, Exporter(endpoint) if endpoint else None

    def _span(self, record: SpanRecord) -> None:
        """A span a handler recorded: kept, and exported when exporting."""
        self.journal.span(record)
        if self.exporter is not None:
            self.exporter.offer_span(record)

    async def _pool(self, driver: Driver) -> WarmPool | None:
        """The pre-warmed pool of generic runtime instances, specialised on a start."""
        if self.config.pool_size == 0:
            return None
        pool = WarmPool(
            driver.backend,
            driver.sources,
            driver.artifacts.pool_image,
            self.home.root / "pool",
            size=self.config.pool_size,
            session=lambda: self.controller.instances.session,
            ready_timeout=self.config.ready_timeout,
            link=driver.link,
        )
        await pool.start()
        return pool

    async def _choose_driver(self) -> Driver:
        """The configured driver; `auto` falls back to processes when no engine answers."""
        choice = self.config.backend
        if choice != "process":
            try:
                info, service = await engines.resolve_engine(
                    self.home, self.env, self.config.engine_host
                )
            except EngineError as exc:
                if choice == "container":
                    raise
                self.backend_warning = (
                    "no container engine answered; running functions as local processes "
                    "(no isolation) - `plat doctor` shows how to get one"
                )
                log.warning("%s (%s)", self.backend_warning, exc.message)
            else:
                if service is not None:
                    self._stack.push_async_callback(service.stop)
                    keeper = asyncio.create_task(service.keep_running(), name="engine-keeper")
                    self._stack.push_async_callback(cancel_and_wait, keeper)
                self.engine_description = {
                    "endpoint": info.endpoint,
                    "name": info.name,
                    "version": info.version,
                    "started_by_plat": service is not None,
                }
                return container_driver(self.home, self.config, self.env, info)
        self.engine_description = {"name": "none", "endpoint": "local processes"}
        return process_driver(self.home, self.env)

    async def _serve(self) -> None:
        config = self.config
        max_connections = connection_cap(config.max_connections, self._open_files)
        if max_connections < config.max_connections:
            log.warning(
                "the open-file limit (%d) allows %d gateway connections, not %d",
                self._open_files,
                max_connections,
                config.max_connections,
            )
        server = HttpServer(
            self.gateway.handle,
            head_timeout=config.head_timeout,
            body_timeout=config.body_timeout,
            max_connections=max_connections,
        )
        try:
            await server.start(self.config.gateway_host, self.config.gateway_port)
        except OSError as exc:
            raise DaemonError(
                f"the gateway cannot listen on {self.config.gateway_host}:"
                f"{self.config.gateway_port}: {exc.strerror}",
                hint="choose another port with `plat daemon start --port N` or PLAT_GATEWAY_PORT",
            ) from None
        self._stack.push_async_callback(server.close)
        self.gateway_url = f"http://{self.config.gateway_host}:{server.port}"
        # Queued calls go through the gateway in process; they stop before it.
        self.calls = CallService(
            self.store,
            self.gateway,
            auth_header=self.auth_header,
            callback_policy=CallbackPolicy.parse(config.callback_hosts),
        )
        await self.calls.start()
        self._stack.push_async_callback(self.calls.close)
        # Deliveries left open by a stopped daemon run again; expired previews go.
        await self.hooks.start()
        self._stack.push_async_callback(self.hooks.close)

        runner = control_runner(self.routes, self.tenants, self.audit)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        sock_path = self.home.socket
        if sock_path.exists():
            sock_path.unlink()
        old_umask = os.umask(0o177)  # the socket is born 0600
        try:
            await web.UnixSite(runner, str(sock_path)).start()
        finally:
            os.umask(old_umask)
        os.chmod(sock_path, 0o600)
        self._stack.callback(lambda: sock_path.unlink(missing_ok=True))
        # Live log streams end first: a follower would hold both doors' close.
        self._stack.callback(self.journal.end_subscriptions)
        log.info("gateway on %s, control socket %s", self.gateway_url, sock_path)

    async def _tenant_removed(self, tenant: str) -> None:
        """A removed tenant's network goes too (once its instances are gone)."""
        try:
            await self.backend.remove_network(tenant)
        except PlatError as exc:
            log.warning("could not remove the network of tenant %s: %s", tenant, exc.message)

    def function_url(self, name: str) -> str:
        return f"{self.gateway_url}/function/{name}"

    def status(self) -> Status:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "uptime": time.time() - self.started_at,
            "home": str(self.home.root),
            "gateway_url": self.gateway_url,
            "backend": self.backend.name,
            "backend_warning": self.backend_warning,
            "engine": self.engine_description,
            "builder": self.functions.builder,
            "functions": len(self.functions),
            "pool": pool_status(self.controller.pool),
        }

    async def close(self) -> None:
        await self._stack.aclose()
        shutil.rmtree(self.home.builds_dir, ignore_errors=True)
