"""plat.config: defaults < $PLAT_HOME/config.yaml < PLAT_* environment < overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plat.config import SETTINGS, Config, load_config
from plat.errors import PlatError
from plat.paths import Home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    root = tmp_path / "plat-home"
    root.mkdir()
    return Home(root)


def write_config(home: Home, text: str) -> Path:
    path = home.root / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_config_file(home: Home) -> None:
    config = load_config(home, {})
    assert config.values == {s.name: s.default for s in SETTINGS}
    assert config.gateway_port == 8080
    assert config.gateway_host == "127.0.0.1"
    assert config.max_body == 6 * 1024**2
    assert config.engine_host is None
    assert config.builder == "auto"
    assert config.ready_timeout == 30.0
    assert config.drain_timeout == 30.0


def test_setting_env_names() -> None:
    assert {s.env for s in SETTINGS} >= {"PLAT_GATEWAY_PORT", "PLAT_MAX_BODY", "PLAT_BUILDER"}


def test_unknown_attribute_is_attribute_error(home: Home) -> None:
    config = load_config(home, {})
    with pytest.raises(AttributeError):
        _ = config.no_such_setting
    assert not hasattr(config, "no_such_setting")


def test_config_file_overrides_defaults(home: Home) -> None:
    write_config(home, "gateway_port: 9000\nmax_body: 1Mi\nready_timeout: 2m\nbuilder: engine\n")
    config = load_config(home, {})
    assert config.gateway_port == 9000
    assert config.max_body == 1024**2
    assert config.ready_timeout == 120.0
    assert config.builder == "engine"
    assert config.drain_timeout == 30.0  # untouched settings keep their defaults


def test_empty_config_file_is_defaults(home: Home) -> None:
    write_config(home, "")
    assert load_config(home, {}).values == load_config(Home(home.root / "nope"), {}).values


def test_environment_overrides_config_file(home: Home) -> None:
    write_config(home, "gateway_port: 9000\nbuilder: engine\n")
    config = load_config(home, {"PLAT_GATEWAY_PORT": "9100", "UNRELATED": "x"})
    assert config.gateway_port == 9100
    assert config.builder == "engine"


def test_overrides_beat_environment_and_file(home: Home) -> None:
    write_config(home, "gateway_port: 9000\n")
    config = load_config(home, {"PLAT_GATEWAY_PORT": "9100"}, {"gateway_port": 9200})
    assert config.gateway_port == 9200


def test_none_overrides_are_ignored(home: Home) -> None:
    # A CLI flag that was not given arrives as None and must not mask lower layers.
    config = load_config(home, {"PLAT_GATEWAY_PORT": "9100"}, {"gateway_port": None})
    assert config.gateway_port == 9100


@pytest.mark.parametrize(
    ("env", "name", "expected"),
    [
        ({"PLAT_GATEWAY_PORT": "0"}, "gateway_port", 0),
        ({"PLAT_GATEWAY_HOST": "0.0.0.0"}, "gateway_host", "0.0.0.0"),
        ({"PLAT_MAX_BODY": "10Mi"}, "max_body", 10 * 1024**2),
        ({"PLAT_ENGINE_HOST": "unix:///run/podman.sock"}, "engine_host", "unix:///run/podman.sock"),
        ({"PLAT_BUILDER": "buildah"}, "builder", "buildah"),
        ({"PLAT_READY_TIMEOUT": "500ms"}, "ready_timeout", 0.5),
        ({"PLAT_DRAIN_TIMEOUT": "5"}, "drain_timeout", 5.0),
        ({"PLAT_STANDBY_NETWORKS": "0"}, "standby_networks", 0),
        ({"PLAT_STANDBY_NETWORKS": "4"}, "standby_networks", 4),
    ],
)
def test_environment_values_are_parsed(
    home: Home, env: dict[str, str], name: str, expected: Any
) -> None:
    assert load_config(home, env).values[name] == expected


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ({"PLAT_GATEWAY_PORT": "http"}, ["PLAT_GATEWAY_PORT", "environment"]),
        ({"PLAT_GATEWAY_PORT": "70000"}, ["PLAT_GATEWAY_PORT", "0..65535"]),
        ({"PLAT_GATEWAY_PORT": "-1"}, ["PLAT_GATEWAY_PORT", "0..65535"]),
        ({"PLAT_MAX_BODY": "huge"}, ["PLAT_MAX_BODY", "128Mi"]),
        ({"PLAT_BUILDER": "kaniko"}, ["PLAT_BUILDER", "auto, buildah, engine"]),
        ({"PLAT_READY_TIMEOUT": "soon"}, ["PLAT_READY_TIMEOUT", "30s"]),
        ({"PLAT_DRAIN_TIMEOUT": "0"}, ["PLAT_DRAIN_TIMEOUT", "greater than zero"]),
        ({"PLAT_STANDBY_NETWORKS": "-1"}, ["PLAT_STANDBY_NETWORKS", "0 or more"]),
        ({"PLAT_STANDBY_NETWORKS": "many"}, ["PLAT_STANDBY_NETWORKS", "environment"]),
    ],
)
def test_invalid_environment_value_names_the_variable(
    home: Home, env: dict[str, str], needles: list[str]
) -> None:
    with pytest.raises(PlatError) as info:
        load_config(home, env)
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("gateway_port: nope\n", ["gateway_port", "config.yaml"]),
        ("builder: docker\n", ["builder", "config.yaml", "use one of"]),
        ("max_body: 0\n", ["max_body", "config.yaml", "greater than zero"]),
    ],
)
def test_invalid_config_file_value_names_setting_and_file(
    home: Home, text: str, needles: list[str]
) -> None:
    write_config(home, text)
    with pytest.raises(PlatError) as info:
        load_config(home, {})
    for needle in needles:
        assert needle in str(info.value)


def test_invalid_override_names_setting_and_command_line(home: Home) -> None:
    with pytest.raises(PlatError, match=r"invalid gateway_port \(command line\)"):
        load_config(home, {}, {"gateway_port": 123456})


def test_unknown_key_in_config_file(home: Home) -> None:
    path = write_config(home, "gateway_port: 9000\ngatway_host: 0.0.0.0\n")
    with pytest.raises(PlatError) as info:
        load_config(home, {})
    exc = info.value
    assert str(path) in exc.message
    assert "'gatway_host'" in exc.message
    assert exc.hint is not None
    assert "gateway_host" in exc.hint  # the known settings are listed


def test_config_file_yaml_syntax_error(home: Home) -> None:
    path = write_config(home, "gateway_port: [9000\n")
    with pytest.raises(PlatError, match="not valid YAML") as info:
        load_config(home, {})
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- gateway_port\n", "8080\n"])
def test_non_mapping_config_file_is_a_plat_error(home: Home, text: str) -> None:
    write_config(home, text)
    with pytest.raises(PlatError, match=r"config\.yaml"):
        load_config(home, {})


def test_config_is_immutable(home: Home) -> None:
    config = load_config(home, {})
    assert isinstance(config, Config)
    with pytest.raises(AttributeError):
        config.values = {}  # type: ignore[misc]
