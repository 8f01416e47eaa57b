"""At start-up: the instances a previous daemon left, matched with what the store says.

Healthy instances of the functions' current versions are adopted (up to the
function's target), everything else the backend holds for this daemon is removed,
and the gaps are filled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from plat.daemon.drivers.base import Backend
from plat.daemon.drivers.secretvalue import Secrets
from plat.daemon.drivers.versions import Release
from plat.daemon.serving.autoscaler import Autoscaler, ScalerSettings
from plat.daemon.serving.function_state import FunctionState
from plat.daemon.serving.instances import Instances
from plat.daemon.serving.probe import probe_once
from plat.daemon.store import Store
from plat.errors import PlatError
from plat.manifest import Manifest, validate_manifest

log = logging.getLogger(__name__)

ResolveSecrets = Callable[[Manifest], Awaitable[Secrets]]


async def reconcile(
    store: Store,
    backend: Backend,
    instances: Instances,
    scaler: ScalerSettings,
    resolve: ResolveSecrets | None = None,
) -> list[FunctionState]:
    """Adopt healthy instances of current versions and remove everything else; the
    deployed functions, each with its target (the caller fills the gaps).

    ``resolve`` gives each function's secrets again (they are never stored with
    a release); a function whose secrets cannot be read is logged and started
    without them, its instances then fail to read the files and say so."""
    functions: list[FunctionState] = []
    records = await store.list_functions()
    found = await backend.list()
    known = {r.id for r in await store.list_instances()}
    adopted: set[str] = set()
    for record in records:
        if record.version is None:
            continue
        version = await store.get_version(record.name, record.version)
        if version is None:
            continue
        if not backend.runs(version.image):
            log.warning("%s was deployed for another backend; `plat deploy` it again", record.name)
            continue
        manifest = validate_manifest(
            record.manifest, source=f"stored manifest of {record.name}", qualified=True
        )
        secrets: Secrets = {}
        if resolve is not None and manifest.secrets:
            try:
                secrets = await resolve(manifest)
            except PlatError as exc:
                log.error("the secrets of %s cannot be read: %s", record.name, exc.message)
        release = Release(manifest, record.version, version.image, version.mounts, secrets)
        fs = FunctionState(record.name, release, scaler=Autoscaler(scaler))
        fs.set_target(max(1, manifest.scale.min) if manifest.scale.min else 0)
        functions.append(fs)
        for running in found:
            if (
                running.function == record.name
                and running.version == record.version
                and running.running
                and len(fs.instances) < max(fs.target, 1)
                and await probe_once(instances.session, running.host, running.port, timeout=2.0)
            ):
                since = await store.last_log_ts(running.id)
                fs.instances.append(await instances.adopt(running, since))
                adopted.add(running.id)
        fs.set_target(max(fs.target, len(fs.instances)))
    stale = [r for r in found if r.id not in adopted]
    await asyncio.gather(*(instances.discard(r) for r in stale))
    for instance_id in known - adopted:
        await store.remove_instance(instance_id)
    log.info("reconciled: adopted %d instance(s), removed %d", len(adopted), len(stale))
    return functions
