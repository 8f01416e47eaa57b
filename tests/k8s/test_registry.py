"""Registry references: what --registry accepts, where a function's image goes."""

from __future__ import annotations

import pytest

from plat.errors import PlatError
from plat.k8s.registry import parse_registry, pushed_reference, repository

DIGEST = "sha256:" + "c" * 64


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("localhost:5000", "localhost:5000"),
        (" localhost:5000/ ", "localhost:5000"),
        ("127.0.0.1:5000/team/apps", "127.0.0.1:5000/team/apps"),
        ("registry.example.com", "registry.example.com"),
        ("[::1]:5000/x", "[::1]:5000/x"),
        ("ghcr.io/my-org/sub_team", "ghcr.io/my-org/sub_team"),
    ],
)
def test_accepted(value: str, parsed: str) -> None:
    assert parse_registry(value) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("https://registry.example.com", "has a scheme"),
        ("localhost:5000/Team", "is not HOST[:PORT][/prefix]"),
        ("local host:5000", "is not HOST[:PORT][/prefix]"),
        ("localhost:70000", "is not HOST[:PORT][/prefix]"),
        ("localhost:0", "is not HOST[:PORT][/prefix]"),
        ("localhost:5000//x", "is not HOST[:PORT][/prefix]"),
        ("localhost:5000/x\ny", "is not"),
        ("-bad.example.com", "is not HOST[:PORT][/prefix]"),
        ("a" * 300, "longer than 255"),
        ("r/\x00", "is not"),
    ],
)
def test_refused_with_the_reason(value: str, message: str) -> None:
    with pytest.raises(PlatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_registry(value)


def test_a_tenants_images_go_under_its_name() -> None:
    assert repository("r:5000/p", "hello") == "r:5000/p/hello"
    assert repository("r:5000/p", "hello", "acme") == "r:5000/p/acme/hello"


def test_the_reference_pins_the_digest() -> None:
    assert pushed_reference("r/hello", "abc", DIGEST) == f"r/hello:abc@{DIGEST}"
    with pytest.raises(PlatError, match="malformed digest"):
        pushed_reference("r/hello", "abc", "sha256:xyz")
