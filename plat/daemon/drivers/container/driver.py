"""The container driver as the daemon takes it: instances in hardened containers,
images built with Buildah (or the engine), versions laid out from their builds
(or unpacked from their images) for the pre-warmed pool."""

from __future__ import annotations

from collections.abc import Mapping

from plat.config import Config
from plat.daemon.drivers.container.backend import ContainerBackend
from plat.daemon.drivers.container.build import ImageBuilder
from plat.daemon.drivers.container.builders import Builder
from plat.daemon.drivers.container.builders.buildah import BuildahBuilder, buildah_available
from plat.daemon.drivers.container.builders.engine import EngineBuilder
from plat.daemon.drivers.container.devdeps import DepsInstaller
from plat.daemon.drivers.container.firewall import Firewall
from plat.daemon.drivers.container.unpack import ImageUnpacker
from plat.daemon.drivers.secretfiles import SecretFiles
from plat.daemon.drivers.versions import Driver
from plat.engine import EngineInfo
from plat.paths import Home


def choose_builder(config: Config, engine_name: str, endpoint: str) -> Builder:
    """buildah when it shares storage with the engine (Podman); else the engine's build API."""
    if config.builder == "buildah" or (
        config.builder == "auto" and engine_name == "podman" and buildah_available()
    ):
        return BuildahBuilder(endpoint if engine_name == "podman" else None)
    return EngineBuilder(endpoint)


def container_driver(
    home: Home, config: Config, env: Mapping[str, str], engine: EngineInfo
) -> Driver:
    builder = choose_builder(config, engine.name, engine.endpoint)
    unpacker = ImageUnpacker(engine.endpoint, home.root / "unpacked")
    installer = DepsInstaller(engine.endpoint, env)
    images = ImageBuilder(
        builder, home.builds_dir, env, home.root / "dev", unpacker.adopt, installer
    )
    daemon_id = home.daemon_id()
    secret_files = SecretFiles(SecretFiles.default_root(home.root, daemon_id, env=env))
    backend = ContainerBackend(
        engine.endpoint,
        daemon_id,
        config.instance_address,
        secret_files,
        Firewall(),
        engine_name=engine.name,
        standby_networks=config.standby_networks,
    )
    return Driver(
        backend, images, unpacker, link=True, closers=[unpacker.close, images.retention.wait]
    )
