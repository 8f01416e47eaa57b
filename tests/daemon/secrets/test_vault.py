"""plat.daemon.secrets.vault: hvac against a KV v2-compatible server on loopback
(the real wire format; not a real Vault)."""

from __future__ import annotations

import socket

import pytest

from plat.daemon.secrets.service import SecretsService
from plat.daemon.secrets.vault import VaultError, VaultReader, VaultRef, VaultUnreachable, _proxies
from plat.errors import PlatError
from plat.manifest import SecretRef
from tests.daemon.secrets.kvserver import KVServer

VALUE = "vault-value-7e3a-never-shown"


def reader(kv: KVServer, **env: str) -> VaultReader:
    return VaultReader({"VAULT_ADDR": kv.url, "VAULT_TOKEN": kv.token, **env}, timeout=1)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_clean(exc: BaseException, token: str) -> None:
    """An error that shows neither the token nor a value."""
    text = str(exc)
    assert token not in text and VALUE not in text
    assert exc.__cause__ is None


async def test_reads_a_key_of_a_kv2_secret(kv: KVServer) -> None:
    kv.put("secret", "app", {"password": VALUE, "user": "app"})
    assert await reader(kv).read("secret/app#password") == VALUE.encode()
    # The real path and header went over the wire.
    assert kv.requests == [("/v1/secret/data/app", kv.token)]


async def test_nested_paths_and_other_mounts(kv: KVServer) -> None:
    kv.mounts.add("kv")
    kv.put("kv", "team/app/prod", {"db": "nested"})
    assert await reader(kv).read(VaultRef("kv", "team/app/prod", "db")) == b"nested"
    assert kv.requests[-1][0] == "/v1/kv/data/team/app/prod"


async def test_the_latest_version_is_read(kv: KVServer) -> None:
    kv.put("secret", "app", {"password": "v1"})
    kv.put("secret", "app", {"password": "v2"})
    assert await reader(kv).read("secret/app#password") == b"v2"


async def test_values_that_are_not_strings_are_their_json(kv: KVServer) -> None:
    kv.put("secret", "app", {"port": 5432, "on": True, "cfg": {"a": [1, 2]}, "utf": "é"})
    r = reader(kv)
    assert await r.read("secret/app#port") == b"5432"
    assert await r.read("secret/app#on") == b"true"
    assert await r.read("secret/app#cfg") == b'{"a":[1,2]}'
    assert await r.read("secret/app#utf") == "é".encode()


async def test_a_wrong_token_is_a_clear_error_without_the_token(kv: KVServer) -> None:
    kv.put("secret", "app", {"password": VALUE})
    wrong = "s.wrong-token-abcdef"
    r = VaultReader({"VAULT_ADDR": kv.url, "VAULT_TOKEN": wrong}, timeout=1)
    with pytest.raises(VaultError, match="permission denied") as info:
        await r.read("secret/app#password")
    assert not isinstance(info.value, VaultUnreachable)
    assert "check VAULT_TOKEN" in str(info.value)
    assert_clean(info.value, wrong)
    assert_clean(info.value, kv.token)


async def test_an_unknown_path_or_mount_is_a_clear_error(kv: KVServer) -> None:
    with pytest.raises(VaultError, match="has no secret at secret/nope") as info:
        await reader(kv).read("secret/nope#password")
    assert "KV version 2" in str(info.value)
    assert_clean(info.value, kv.token)
    with pytest.raises(VaultError, match="has no secret at other/app"):
        await reader(kv).read("other/app#password")


async def test_a_missing_key_names_the_keys_there_are(kv: KVServer) -> None:
    kv.put("secret", "app", {"user": VALUE, "host": VALUE})
    with pytest.raises(VaultError, match="has no key 'password'") as info:
        await reader(kv).read("secret/app#password")
    assert "(its keys: host, user)" in str(info.value)
    assert_clean(info.value, kv.token)


async def test_no_vault_addr_or_token(kv: KVServer) -> None:
    with pytest.raises(VaultUnreachable, match="VAULT_ADDR is not set") as info:
        await VaultReader({"VAULT_TOKEN": kv.token}).read("secret/app#password")
    assert "VAULT_ADDR and VAULT_TOKEN" in str(info.value)
    with pytest.raises(VaultUnreachable, match="VAULT_TOKEN is not set"):
        await VaultReader({"VAULT_ADDR": kv.url}).read("secret/app#password")
    assert kv.requests == []


async def test_the_process_environment_is_not_read(
    kv: KVServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hvac would take these (and ~/.vault-token) if the reader let it.
    kv.put("secret", "app", {"password": VALUE})
    monkeypatch.setenv("VAULT_ADDR", kv.url)
    monkeypatch.setenv("VAULT_TOKEN", kv.token)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(VaultUnreachable, match="VAULT_ADDR is not set"):
        await VaultReader({}).read("secret/app#password")
    # The proxy in os.environ is not used either (it would refuse the connection).
    assert await reader(kv).read("secret/app#password") == VALUE.encode()


async def test_vault_down_is_unreachable(kv: KVServer) -> None:
    r = VaultReader({"VAULT_ADDR": f"http://127.0.0.1:{closed_port()}", "VAULT_TOKEN": kv.token})
    with pytest.raises(VaultUnreachable, match="connection refused") as info:
        await r.read("secret/app#password")
    assert info.value.status == 503
    assert "vault status" in str(info.value)
    assert_clean(info.value, kv.token)


async def test_a_vault_that_hangs_times_out(kv: KVServer) -> None:
    kv.put("secret", "app", {"password": VALUE})
    kv.delay = 3
    r = VaultReader({"VAULT_ADDR": kv.url, "VAULT_TOKEN": kv.token}, timeout=0.3)
    with pytest.raises(VaultUnreachable, match=r"did not answer within 0\.3 s"):
        await r.read("secret/app#password")


async def test_user_information_in_the_address_is_not_shown(kv: KVServer) -> None:
    addr = f"http://user:hunter2@127.0.0.1:{closed_port()}"
    with pytest.raises(VaultUnreachable) as info:
        await VaultReader({"VAULT_ADDR": addr, "VAULT_TOKEN": "t"}).read("secret/a#b")
    assert "hunter2" not in str(info.value) and "127.0.0.1" in str(info.value)


@pytest.mark.parametrize("ref", ["secret/app", "secret#x", "kv/../x#k", ""])
async def test_a_malformed_reference_is_refused_before_any_request(kv: KVServer, ref: str) -> None:
    with pytest.raises(VaultError, match="not a vault reference"):
        await reader(kv).read(ref)
    assert kv.requests == []


@pytest.mark.parametrize(
    ("addr", "env", "expected"),
    [
        ("https://vault.corp:8200", {"HTTPS_PROXY": "http://p:3128"}, {"https": "http://p:3128"}),
        ("https://vault.corp:8200", {"https_proxy": "http://p:3128"}, {"https": "http://p:3128"}),
        ("http://vault.corp:8200", {"HTTPS_PROXY": "http://p:3128"}, {}),
        ("http://vault.corp", {"ALL_PROXY": "http://p:1"}, {"http": "http://p:1"}),
        ("https://vault.corp", {"HTTPS_PROXY": "http://p", "NO_PROXY": "corp"}, {}),
        ("https://vault.corp", {"HTTPS_PROXY": "http://p", "NO_PROXY": ".corp"}, {}),
        ("https://vault.corp", {"HTTPS_PROXY": "http://p", "no_proxy": "x, *"}, {}),
        (
            "https://vault.corp",
            {"HTTPS_PROXY": "http://p", "NO_PROXY": "ecorp"},
            {"https": "http://p"},
        ),
        ("http://127.0.0.1:8200", {"HTTP_PROXY": "http://p"}, {}),
        ("http://localhost:8200", {"HTTP_PROXY": "http://p"}, {}),
        ("http://[::1]:8200", {"HTTP_PROXY": "http://p"}, {}),
    ],
)
def test_proxies_come_from_the_given_environment(
    addr: str, env: dict[str, str], expected: dict[str, str]
) -> None:
    assert _proxies(addr, env) == expected


async def test_resolve_reads_vault_and_plat_secrets_together(
    service: SecretsService, kv: KVServer
) -> None:
    kv.put("secret", "app", {"password": VALUE})
    await service.set("default", "local", b"mine")
    got = await service.resolve(
        "default",
        [SecretRef(name="db", vault="secret/app#password"), SecretRef(name="local")],
    )
    assert {n: v.reveal() for n, v in got.items()} == {"db": VALUE.encode(), "local": b"mine"}


async def test_resolve_names_the_secret_vault_fails_for(
    service: SecretsService, kv: KVServer
) -> None:
    with pytest.raises(VaultError, match=r"secret 'db': Vault at .* has no secret at secret/gone"):
        await service.resolve("default", [SecretRef(name="db", vault="secret/gone#x")])
    await kv.stop()
    with pytest.raises(
        VaultUnreachable, match="secret 'db': cannot read secret/app#password"
    ) as info:
        await service.resolve("default", [SecretRef(name="db", vault="secret/app#password")])
    assert info.value.status == 503
    assert_clean(info.value, kv.token)


async def test_plat_secrets_missing_are_reported_before_vault_is_asked(
    service: SecretsService, kv: KVServer
) -> None:
    with pytest.raises(PlatError, match="secret local is not set"):
        await service.resolve(
            "default",
            [SecretRef(name="db", vault="secret/app#password"), SecretRef(name="local")],
        )
    assert kv.requests == []
