"""Who may call a function: the admin, its tenant's token (remembered until a token
changes), another tenant's token (None: a 404); host routing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from plat.credentials import basic_header
from plat.daemon.access import KNOWN_MAX, Access, host_key
from plat.daemon.store import Store
from plat.daemon.tenants import Tenants
from tests.daemon.fakes import store_fixture

__all__ = ["store_fixture"]

ADMIN_BASIC = basic_header("pw")


@pytest.fixture
async def tenants(store: Store) -> AsyncIterator[Tenants]:
    made = Tenants(store, "plat_admin_x")
    await made.load()
    yield made


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


async def test_the_admin_and_the_functions_tenant_may_call_another_tenant_gets_none(
    tenants: Tenants,
) -> None:
    access = Access(ADMIN_BASIC, tenants)
    _, acme = await tenants.create("acme", None, None)
    _, beta = await tenants.create("beta", None, None)
    assert access.allows(ADMIN_BASIC.encode(), "fn.acme") is True
    assert access.allows(bearer("plat_admin_x"), "fn.acme") is True
    assert access.allows(bearer(acme), "fn.acme") is True
    tenant_basic = "Basic " + base64.b64encode(f"acme:{acme}".encode()).decode()
    assert access.allows(tenant_basic.encode(), "fn.acme") is True
    assert access.allows(bearer(beta), "fn.acme") is None
    assert access.allows(bearer(acme), "fn") is None  # the default tenant's function
    assert access.allows(None, "fn.acme") is False
    assert access.allows(bearer(acme + "x"), "fn.acme") is False
    wrong_user = "Basic " + base64.b64encode(f"beta:{acme}".encode()).decode()
    assert access.allows(wrong_user.encode(), "fn.acme") is False


async def test_a_remembered_token_is_forgotten_the_moment_it_is_rotated_or_removed(
    tenants: Tenants,
) -> None:
    access = Access(ADMIN_BASIC, tenants)
    _, old = await tenants.create("acme", None, None)
    assert access.allows(bearer(old), "fn.acme") is True
    assert access.allows(bearer(old), "fn.acme") is True  # from memory now
    new = await tenants.rotate("acme")
    assert access.allows(bearer(old), "fn.acme") is False
    assert access.allows(bearer(new), "fn.acme") is True
    await tenants.remove("acme")
    assert access.allows(bearer(new), "fn.acme") is False


async def test_made_up_tokens_are_not_remembered(tenants: Tenants) -> None:
    access = Access(ADMIN_BASIC, tenants)
    for i in range(KNOWN_MAX * 2):
        assert access.allows(bearer(f"plat_acme_{i}"), "fn.acme") is False
    assert len(access._known) == 0


def test_host_routing_names_deployed_functions_only() -> None:
    deployed = {"hello", "hello.acme"}
    assert host_key(b"hello.localhost:8080", deployed) == b"hello"
    assert host_key(b"HELLO.ACME.localhost", deployed) == b"hello.acme"
    assert host_key(b"hello.beta.localhost:8080", deployed) is None
    assert host_key(b"localhost:8080", deployed) is None
    assert host_key(b".localhost", deployed) is None
    assert host_key(b"hello.localhost.evil.com", deployed) is None
