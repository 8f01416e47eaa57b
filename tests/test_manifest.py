"""plat.manifest: loading and validating plat.yaml, defaults and runtime detection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from plat.errors import ManifestError
from plat.manifest import (
    DEFAULT_CPU,
    DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
    MANIFEST_NAME,
    Manifest,
    load_manifest,
    parse_vault_ref,
    validate_manifest,
)

HEAD = "name: hello\nruntime: python\n"


def make_function(folder: Path, manifest: str | None, *files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        (folder / MANIFEST_NAME).write_text(manifest)
    for name in files:
        (folder / name).write_text("")
    return folder


def load_error(folder: Path) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(folder)
    return str(info.value)


# Each row: the plat.yaml text, what names the field, what tells the user the fix.
BAD_MANIFESTS = [
    pytest.param(
        HEAD + "handlr: handler.handle\n", "'handlr'", "fix its spelling", id="unknown-key"
    ),
    pytest.param(
        HEAD + "handlr: handler.handle\n",
        "'handlr'",
        "allowed keys: name, runtime, handler, env, auth, timeout, resources, scale",
        id="unknown-key-lists-allowed",
    ),
    pytest.param(
        HEAD + "asynch: {retries: 2}\n",
        "'asynch'",
        "slo, async, schedule, adapter",  # the key as written in plat.yaml, not async_
        id="unknown-key-lists-keys-as-written",
    ),
    pytest.param(
        HEAD + "resources: {memory: 256Mi, gpu: 1}\n",
        "'resources.gpu'",
        "allowed keys under resources: memory, cpu, pids",
        id="unknown-resources-key",
    ),
    pytest.param(
        HEAD + "scale: {minimum: 1}\n",
        "'scale.minimum'",
        "allowed keys under scale: min, max, concurrency",
        id="unknown-scale-key",
    ),
    pytest.param("runtime: python\n", "'name' is required", "Add it", id="name-missing"),
    *[
        pytest.param(
            f"name: {name}\nruntime: python\n", "'name'", "e.g. hello-world", id=f"name-{ident}"
        )
        for ident, name in [
            ("upper", "Hello"),
            ("leading-dash", "-hello"),
            ("trailing-dash", "hello-"),
            ("underscore", "hello_world"),
            ("space", "'hello world'"),
            ("too-long", "a" * 64),
            ("empty", "''"),
            ("non-ascii", "héllo"),
        ]
    ],
    pytest.param(
        "name: 123\nruntime: python\n", "'name'", "should be a valid string", id="name-int"
    ),
    pytest.param(
        "name: hello.acme\nruntime: python\n", "'name'", "plat --tenant TENANT", id="name-dot"
    ),
    pytest.param(HEAD + "timeout: soon\n", "'timeout'", "use e.g. 30s", id="duration-word"),
    pytest.param(HEAD + "timeout: 30sec\n", "'timeout'", "use e.g. 30s", id="duration-unit"),
    pytest.param(HEAD + "timeout: 0s\n", "'timeout'", "greater than zero", id="duration-zero"),
    pytest.param(HEAD + "timeout: 2h\n", "'timeout'", "at most 1h", id="duration-too-long"),
    pytest.param(HEAD + "timeout: true\n", "'timeout'", "such as 30s", id="duration-bool"),
    pytest.param(
        HEAD + "resources: {memory: lots}\n", "'resources.memory'", "128Mi", id="size-word"
    ),
    pytest.param(
        HEAD + "resources: {memory: 256MB}\n", "'resources.memory'", "128Mi", id="size-unit"
    ),
    pytest.param(
        HEAD + "resources: {memory: 1Mi}\n", "'resources.memory'", "at least 16Mi", id="size-small"
    ),
    pytest.param(
        HEAD + "resources: {cpu: 0}\n", "'resources.cpu'", "between 0.01 and 64", id="cpu-zero"
    ),
    pytest.param(HEAD + "resources: {pids: 2}\n", "'resources.pids'", "at least 8", id="pids-low"),
    pytest.param(
        HEAD + "scale: {min: 5, max: 2}\n",
        "'scale'",
        "min (5) must not exceed max (2)",
        id="min-gt-max",
    ),
    pytest.param(
        HEAD + "scale: {min: 5}\n",
        "'scale'",
        "min (5) must not exceed max (4)",
        id="min-gt-default",
    ),
    pytest.param(
        HEAD + "scale: {min: -1}\n", "'scale.min'", "greater than or equal to 0", id="min-negative"
    ),
    pytest.param(
        HEAD + "scale: {concurrency: 0}\n",
        "'scale.concurrency'",
        "greater than or equal to 1",
        id="concurrency-zero",
    ),
    pytest.param(HEAD + "auth: none\n", "'auth'", "'basic' or 'public'", id="auth"),
    pytest.param(
        "name: hello\nruntime: ruby\n", "'runtime'", "dockerfile, node, python", id="runtime"
    ),
    pytest.param(HEAD + "env: [A, B]\n", "'env'", "mapping of NAME: value", id="env-list"),
    pytest.param(
        HEAD + "env: {A: {b: 1}}\n", "'env'", "must be a string or number", id="env-nested"
    ),
    # Names the key but gives no fix: see test_bad_env_key_message_gives_a_fix.
    pytest.param(
        HEAD + "env: {1BAD: x}\n",
        "'1BAD' is not a valid environment variable name",
        "",
        id="env-key-digit",
    ),
    pytest.param(
        HEAD + "env: {MY-VAR: x}\n",
        "'MY-VAR' is not a valid environment variable name",
        "",
        id="env-key-dash",
    ),
]


@pytest.mark.parametrize(("text", "field", "fix"), BAD_MANIFESTS)
def test_bad_manifest(tmp_path: Path, text: str, field: str, fix: str) -> None:
    folder = make_function(tmp_path / "fn", text)
    message = load_error(folder)
    assert str(folder / MANIFEST_NAME) in message
    assert field in message
    assert fix in message


def test_bad_env_key_message_gives_a_fix(tmp_path: Path) -> None:
    folder = make_function(tmp_path / "fn", HEAD + "env: {1BAD: x}\n")
    message = load_error(folder)
    assert "letters, digits" in message or "e.g." in message


def test_every_problem_is_reported(tmp_path: Path) -> None:
    folder = make_function(tmp_path / "fn", "name: Bad\nruntime: python\ntimeout: soon\nx: 1\n")
    lines = load_error(folder).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(str(folder / MANIFEST_NAME)) for line in lines)
    assert any("'name'" in line for line in lines)
    assert any("'timeout'" in line for line in lines)
    assert any("unknown key 'x'" in line for line in lines)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: [\n", "YAML syntax error at line 2"),
        ("name: hello\n  runtime: python\n", "YAML syntax error at line 2, column 10"),
        ("name: hello\n\truntime: python\n", "YAML syntax error"),
    ],
)
def test_yaml_syntax_error(tmp_path: Path, text: str, needle: str) -> None:
    folder = make_function(tmp_path / "fn", text)
    message = load_error(folder)
    assert str(folder / MANIFEST_NAME) in message
    assert needle in message


def test_missing_manifest(tmp_path: Path) -> None:
    folder = make_function(tmp_path / "fn", None, "handler.py")
    with pytest.raises(ManifestError) as info:
        load_manifest(folder)
    assert info.value.message == f"no {MANIFEST_NAME} in {folder}"
    assert info.value.hint is not None
    assert "plat init" in info.value.hint


def test_folder_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="is not a folder"):
        load_manifest(tmp_path / "missing")


@pytest.mark.parametrize("text", ["- name\n- hello\n", "hello\n", "42\n"])
def test_non_mapping_document(tmp_path: Path, text: str) -> None:
    folder = make_function(tmp_path / "fn", text)
    message = load_error(folder)
    assert str(folder / MANIFEST_NAME) in message
    assert "expected a mapping" in message


def test_validate_manifest_names_the_source() -> None:
    with pytest.raises(ManifestError) as info:
        validate_manifest({"name": "hello", "runtime": "python", "bogus": 1}, source="x/plat.yaml")
    assert info.value.message.startswith("x/plat.yaml: unknown key 'bogus'")
    with pytest.raises(ManifestError, match=r"^plat\.yaml: expected a mapping"):
        validate_manifest(["name"])


@pytest.mark.parametrize(
    "text",
    ['name: "hello\\n"\nruntime: python\n', HEAD + 'env: {"FOO\\n": x}\n'],
    ids=["name", "env-key"],
)
def test_trailing_newline_is_rejected(tmp_path: Path, text: str) -> None:
    load_error(make_function(tmp_path / "fn", text))


# Good manifests


def test_minimal_manifest_gets_defaults(tmp_path: Path) -> None:
    manifest = load_manifest(make_function(tmp_path / "fn", HEAD))
    assert manifest.name == "hello"
    assert manifest.runtime == "python"
    assert manifest.handler is None
    assert manifest.env == {}
    assert manifest.auth == "basic"
    assert manifest.timeout == DEFAULT_TIMEOUT == 30.0
    assert manifest.resources.memory == DEFAULT_MEMORY == 256 * 1024**2
    assert manifest.resources.cpu == DEFAULT_CPU == 1.0
    assert manifest.resources.pids == 256
    assert (manifest.scale.min, manifest.scale.max, manifest.scale.concurrency) == (1, 4, 8)


def test_full_manifest(tmp_path: Path) -> None:
    text = """\
name: hello
runtime: python
handler: handler.handle
env: {GREETING: hi, RETRIES: 3, RATIO: 0.5, EMPTY: null, _x1: y}
auth: public
timeout: 500ms
resources: {memory: 1Gi, cpu: 0.5, pids: 64}
scale: {min: 0, max: 4, concurrency: 16}
"""
    manifest = load_manifest(make_function(tmp_path / "fn", text))
    assert manifest.handler == "handler.handle"
    assert manifest.env == {
        "GREETING": "hi",
        "RETRIES": "3",
        "RATIO": "0.5",
        "EMPTY": "",
        "_x1": "y",
    }
    assert manifest.auth == "public"
    assert manifest.timeout == 0.5
    assert manifest.resources.memory == 1024**3
    assert manifest.resources.cpu == 0.5
    assert manifest.resources.pids == 64
    assert (manifest.scale.min, manifest.scale.max, manifest.scale.concurrency) == (0, 4, 16)
    assert manifest.to_dict() == {
        "name": "hello",
        "runtime": "python",
        "handler": "handler.handle",
        "env": {"GREETING": "hi", "RETRIES": "3", "RATIO": "0.5", "EMPTY": "", "_x1": "y"},
        "auth": "public",
        "timeout": 0.5,
        "resources": {"memory": 1024**3, "cpu": 0.5, "pids": 64},
        "scale": {"min": 0, "max": 4, "concurrency": 16},
    }


@pytest.mark.parametrize(
    "name", ["a", "0", "hello", "hello-world", "a1-b2", "9lives", "a" * 63, "a--b"]
)
def test_valid_names(tmp_path: Path, name: str) -> None:
    assert (
        load_manifest(make_function(tmp_path / "fn", f"name: '{name}'\nruntime: node\n")).name
        == name
    )


@pytest.mark.parametrize(
    ("value", "seconds"), [("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), (45, 45.0), (1.5, 1.5)]
)
def test_timeout_forms(tmp_path: Path, value: object, seconds: float) -> None:
    folder = make_function(tmp_path / "fn", HEAD + f"timeout: {value}\n")
    assert load_manifest(folder).timeout == seconds


def test_null_env_is_empty(tmp_path: Path) -> None:
    assert load_manifest(make_function(tmp_path / "fn", HEAD + "env:\n")).env == {}


def test_manifest_round_trips_through_to_dict(tmp_path: Path) -> None:
    manifest = load_manifest(make_function(tmp_path / "fn", HEAD + "scale: {min: 0}\n"))
    again = validate_manifest(manifest.to_dict())
    assert again == manifest


def test_manifest_is_frozen(tmp_path: Path) -> None:
    manifest = load_manifest(make_function(tmp_path / "fn", HEAD))
    with pytest.raises(ValidationError):
        manifest.name = "other"  # type: ignore[misc]
    assert isinstance(manifest, Manifest)


# Runtime detection


@pytest.mark.parametrize(
    ("files", "runtime"),
    [
        (["requirements.txt"], "python"),
        (["handler.py"], "python"),
        (["package.json"], "node"),
        (["handler.js"], "node"),
        (["Dockerfile"], "dockerfile"),
        (["Dockerfile", "requirements.txt", "handler.py"], "dockerfile"),
        (["Dockerfile", "package.json"], "dockerfile"),
        (["package.json", "requirements.txt"], "node"),
    ],
)
def test_runtime_detected_when_absent(tmp_path: Path, files: list[str], runtime: str) -> None:
    folder = make_function(tmp_path / "fn", "name: hello\n", *files)
    assert load_manifest(folder).runtime == runtime


def test_explicit_runtime_wins_over_detection(tmp_path: Path) -> None:
    folder = make_function(tmp_path / "fn", "name: hello\nruntime: python\n", "package.json")
    assert load_manifest(folder).runtime == "python"


def test_runtime_not_detectable(tmp_path: Path) -> None:
    folder = make_function(tmp_path / "fn", "name: hello\n", "README.md")
    with pytest.raises(ManifestError) as info:
        load_manifest(folder)
    assert str(folder / MANIFEST_NAME) in info.value.message
    assert "'runtime'" in info.value.message
    assert info.value.hint is not None
    assert "runtime: python" in info.value.hint


def test_files_in_subfolders_do_not_select_a_runtime(tmp_path: Path) -> None:
    folder = make_function(tmp_path / "fn", "name: hello\n")
    make_function(folder / "sub", None, "requirements.txt", "Dockerfile")
    with pytest.raises(ManifestError, match="cannot be detected"):
        load_manifest(folder)


def test_empty_manifest_detects_runtime_then_requires_name(tmp_path: Path) -> None:
    folder = make_function(tmp_path / "fn", "", "requirements.txt")
    assert "'name' is required" in load_error(folder)


# Hostile files


def test_non_utf8_manifest_names_the_file_and_the_byte(tmp_path: Path) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_bytes(b"name: caf\xe9\nruntime: python\n")
    message = load_error(folder)
    assert str(folder / MANIFEST_NAME) in message
    assert "not UTF-8" in message
    assert "line 1" in message and "0xe9" in message


def test_utf16_manifest_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_bytes(HEAD.encode("utf-16"))
    assert "not UTF-8" in load_error(folder)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_bytes(b"\xef\xbb\xbf" + HEAD.encode())
    assert load_manifest(folder).name == "hello"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (HEAD + 'env: {GREETING: "hi\\0there"}\n', "'env'"),
        (HEAD + 'env: {"A\\0B": x}\n', "'env'"),
        (HEAD + 'env: {"A=B": x}\n', "'env'"),
        (HEAD + 'handler: "handler\\0.handle"\n', "'handler'"),
        (HEAD + 'handler: "handler.handle\\nX=1"\n', "'handler'"),
        (HEAD + 'handler: ""\n', "'handler'"),
    ],
    ids=["nul-value", "nul-key", "equals-key", "nul-handler", "newline-handler", "empty-handler"],
)
def test_nul_and_control_characters_are_refused(tmp_path: Path, text: str, where: str) -> None:
    message = load_error(make_function(tmp_path / "fn", text))
    assert where in message
    assert "Traceback" not in message


def test_nul_in_env_value_is_named(tmp_path: Path) -> None:
    message = load_error(make_function(tmp_path / "fn", HEAD + 'env: {GREETING: "a\\0b"}\n'))
    assert "GREETING" in message and "NUL" in message


def test_control_characters_other_than_nul_are_kept_in_env_values(tmp_path: Path) -> None:
    manifest = load_manifest(make_function(tmp_path / "fn", HEAD + 'env: {A: "x\\ty\\nz"}\n'))
    assert manifest.env == {"A": "x\ty\nz"}


def test_control_characters_in_yaml_are_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_bytes(b"name: a\x07b\nruntime: python\n")
    message = load_error(folder)
    assert str(folder / MANIFEST_NAME) in message and "0x7" in message


def test_deeply_nested_yaml_is_a_clear_error(tmp_path: Path) -> None:
    folder = make_function(tmp_path / "fn", HEAD + "env: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in load_error(folder)


def test_huge_manifest_is_refused_unread(tmp_path: Path) -> None:
    folder = make_function(tmp_path / "fn", HEAD + "#" * (2 * 1024 * 1024) + "\n")
    assert "larger than" in load_error(folder)


def test_manifest_link_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(HEAD)
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / MANIFEST_NAME).symlink_to(tmp_path / "other.yaml")
    message = load_error(folder)
    assert "leaves the folder" in message


def test_manifest_that_is_a_folder_or_a_fifo_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "fn"
    (folder / MANIFEST_NAME).mkdir(parents=True)
    assert "no plat.yaml" in load_error(folder) or "not a regular file" in load_error(folder)
    other = tmp_path / "fifo"
    other.mkdir()
    os.mkfifo(other / MANIFEST_NAME)
    assert "not a regular file" in load_error(other)


def test_a_function_key_is_a_name_only_inside_the_daemon() -> None:
    data = {"name": "hello.acme", "runtime": "python"}
    assert validate_manifest(data, qualified=True).name == "hello.acme"
    with pytest.raises(ManifestError, match="--tenant"):
        validate_manifest(data)
    with pytest.raises(ManifestError, match="not a valid name"):
        validate_manifest({"name": "hello.Acme", "runtime": "python"}, qualified=True)


def test_secrets_by_name_and_from_vault(tmp_path: Path) -> None:
    text = HEAD + (
        "secrets:\n"
        "  - db-password\n"
        "  - {name: api.key}\n"
        "  - {name: db, vault: 'secret/app/prod#password'}\n"
    )
    manifest = load_manifest(make_function(tmp_path / "fn", text))
    assert [(ref.name, ref.vault) for ref in manifest.secrets] == [
        ("db-password", None),
        ("api.key", None),
        ("db", "secret/app/prod#password"),
    ]
    # Dumped as a user writes them, and read back the same.
    assert manifest.to_dict()["secrets"] == [
        "db-password",
        "api.key",
        {"name": "db", "vault": "secret/app/prod#password"},
    ]
    assert validate_manifest(manifest.to_dict()) == manifest


def test_no_secrets_by_default(tmp_path: Path) -> None:
    assert load_manifest(make_function(tmp_path / "fn", HEAD)).secrets == []
    assert load_manifest(make_function(tmp_path / "fn2", HEAD + "secrets:\n")).secrets == []
    # Dumped without the key, as before secrets existed.
    assert "secrets" not in load_manifest(make_function(tmp_path / "fn", HEAD)).to_dict()


def test_vault_refs_are_parsed_into_mount_path_and_key() -> None:
    assert parse_vault_ref("secret/app#password") == ("secret", "app", "password")
    assert parse_vault_ref("kv/team/app/prod#db user") == ("kv", "team/app/prod", "db user")


@pytest.mark.parametrize(
    ("secrets", "needle"),
    [
        pytest.param("db", "must be a list", id="not-a-list"),
        pytest.param("[DB]", "'DB' is not a valid secret name", id="uppercase"),
        pytest.param("['../etc/passwd']", "not a valid secret name", id="traversal"),
        pytest.param("['a/b']", "not a valid secret name", id="slash"),
        pytest.param("['a..b']", "not a valid secret name", id="dots"),
        pytest.param("['-db']", "not a valid secret name", id="leading-dash"),
        pytest.param("['" + "a" * 64 + "']", "not a valid secret name", id="too-long"),
        pytest.param("[42]", "entry 1 must be a secret's name", id="number"),
        pytest.param("[[db]]", "entry 1 must be a secret's name", id="nested-list"),
        pytest.param("[db, db]", "entry 2: secret 'db' is listed twice", id="duplicate"),
        pytest.param(
            "[db, {name: db, vault: 'kv/a#b'}]", "listed twice", id="duplicate-with-vault"
        ),
        pytest.param("[{vault: 'kv/a#b'}]", "not a valid secret name", id="no-name"),
        pytest.param("[{name: db, path: x}]", "unknown key(s) path", id="unknown-key"),
        pytest.param("[{name: db, vault: 3}]", "vault must be a string", id="vault-number"),
        pytest.param("[{name: db, vault: 'secret/app'}]", "<mount>/<path>#<key>", id="no-key"),
        pytest.param("[{name: db, vault: 'secret#k'}]", "not a vault reference", id="no-path"),
        pytest.param("[{name: db, vault: 'kv/../x#k'}]", "not a vault reference", id="dotdot"),
        pytest.param("[{name: db, vault: 'kv//x#k'}]", "not a vault reference", id="empty-seg"),
        pytest.param("[{name: db, vault: 'kv/x#'}]", "not a vault reference", id="empty-key"),
        pytest.param('[{name: db, vault: "kv/x#a\\nb"}]', "not a vault reference", id="ctrl"),
        pytest.param("[" + ", ".join(f"s{i}" for i in range(65)) + "]", "at most 64", id="many"),
    ],
)
def test_bad_secrets_name_the_field_and_the_entry(
    tmp_path: Path, secrets: str, needle: str
) -> None:
    folder = make_function(tmp_path / "fn", HEAD + f"secrets: {secrets}\n")
    message = load_error(folder)
    assert "'secrets'" in message
    assert needle in message


def test_a_long_vault_ref_is_cut_in_the_error(tmp_path: Path) -> None:
    ref = "kv/" + "x" * 5000
    folder = make_function(tmp_path / "fn", HEAD + f"secrets: [{{name: db, vault: '{ref}'}}]\n")
    message = load_error(folder)
    assert "not a vault reference" in message and len(message) < 1000
