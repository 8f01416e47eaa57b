"""The container backend: the docker SDK against the Docker Engine API (Podman or Docker).

The SDK blocks, so every call runs in a thread. Instances run hardened: no
capabilities, no-new-privileges, read-only root with a tmpfs /tmp, memory, CPU
and pids limits, an init process, and a port published on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from plat.daemon.backends import (
    LABEL_DAEMON,
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_VERSION,
    InstanceSpec,
    RunningInstance,
)
from plat.errors import EngineError


def run_options(spec: InstanceSpec, instance_id: str, daemon_id: str) -> dict[str, Any]:
    """The keyword arguments of ``containers.run`` for one instance (pure, tested)."""
    options: dict[str, Any] = {
        "image": spec.image,
        "name": f"plat-{spec.function}-{instance_id}",
        "detach": True,
        "environment": {
            **spec.env,
            "PORT": str(spec.port),
            "PLAT_FUNCTION": spec.function,
            "PLAT_VERSION": spec.version,
        },
        "labels": {
            LABEL_FUNCTION: spec.function,
            LABEL_VERSION: spec.version,
            LABEL_DAEMON: daemon_id,
            LABEL_INSTANCE: instance_id,
        },
        "ports": {f"{spec.port}/tcp": ("127.0.0.1", None)},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,size=64m,mode=1777"},
        "mem_limit": spec.memory,
        "memswap_limit": spec.memory,
        "nano_cpus": int(spec.cpu * 1e9),
        "pids_limit": spec.pids,
        "init": True,
    }
    if spec.user is not None:
        options["user"] = spec.user
    return options


class ContainerBackend:
    name = "container"

    def __init__(self, endpoint: str, daemon_id: str) -> None:
        self._endpoint = endpoint
        self.daemon_id = daemon_id
        self._client = docker.DockerClient(base_url=endpoint, timeout=60)

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            raise EngineError(f"container engine error: {exc.explanation or exc}") from exc
        except docker.errors.DockerException as exc:
            raise EngineError(
                f"container engine at {self._endpoint} failed: {exc}", hint="run `plat doctor`"
            ) from exc

    def _start_blocking(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        options = run_options(spec, instance_id, self.daemon_id)
        container: Container = self._client.containers.run(**options)
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{spec.port}/tcp") or []
        if not bindings:
            container.remove(force=True)
            raise EngineError(f"the engine published no port for {options['name']}")
        return RunningInstance(
            id=instance_id,
            function=spec.function,
            version=spec.version,
            host="127.0.0.1",
            port=int(bindings[0]["HostPort"]),
            backend_ref=container.id or options["name"],
        )

    async def start(self, spec: InstanceSpec, instance_id: str) -> RunningInstance:
        return await self._call(self._start_blocking, spec, instance_id)  # type: ignore[no-any-return]

    def _stop_blocking(self, ref: str, timeout: float) -> None:
        try:
            container = self._client.containers.get(ref)
        except docker.errors.NotFound:
            return
        try:
            container.stop(timeout=int(timeout))
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            pass
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            return

    async def stop(self, instance: RunningInstance, timeout: float = 5.0) -> None:
        await self._call(self._stop_blocking, instance.backend_ref, timeout)

    def _list_blocking(self) -> list[RunningInstance]:
        found = []
        for container in self._client.containers.list(
            all=True, filters={"label": f"{LABEL_DAEMON}={self.daemon_id}"}
        ):
            labels = container.labels
            port = 0
            host = "127.0.0.1"
            for bindings in (
                container.attrs.get("NetworkSettings", {}).get("Ports") or {}
            ).values():
                if bindings:
                    port = int(bindings[0]["HostPort"])
                    break
            found.append(
                RunningInstance(
                    id=labels.get(LABEL_INSTANCE, container.short_id),
                    function=labels.get(LABEL_FUNCTION, ""),
                    version=labels.get(LABEL_VERSION, ""),
                    host=host,
                    port=port,
                    backend_ref=container.id or "",
                    running=container.status == "running",
                )
            )
        return found

    async def list(self) -> list[RunningInstance]:
        return await self._call(self._list_blocking)  # type: ignore[no-any-return]

    def _alive_blocking(self, ref: str) -> bool:
        try:
            container = self._client.containers.get(ref)
        except docker.errors.NotFound:
            return False
        return bool(container.status == "running")

    async def is_alive(self, instance: RunningInstance) -> bool:
        return await self._call(self._alive_blocking, instance.backend_ref)  # type: ignore[no-any-return]

    def _logs_blocking(self, ref: str, tail: int) -> str:
        try:
            data = self._client.containers.get(ref).logs(tail=tail)
        except docker.errors.NotFound:
            return ""
        return data.decode(errors="replace") if isinstance(data, bytes) else str(data)

    async def logs(self, instance: RunningInstance, tail: int = 50) -> str:
        return await self._call(self._logs_blocking, instance.backend_ref, tail)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
