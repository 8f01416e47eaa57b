"""Preview names: valid function names from any branch, distinct for branches that
would clash, and the host form that routes to them."""

from __future__ import annotations

import pytest

from plat.daemon.access import host_key
from plat.daemon.hooks.previews import MAX_PREVIEWED_NAME, preview_name, preview_urls, slug
from plat.manifest import NAME_RE


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        ("feature/x", "feature-x"),
        ("Feature/X_1", "feature-x-1"),
        ("fix--double", "fix-double"),
        ("-leading/trailing-", "leading-trailing"),
        ("release-1.2", "release-1-2"),
    ],
)
def test_slugs_are_readable(branch: str, expected: str) -> None:
    assert slug(branch, 50) == expected


@pytest.mark.parametrize(
    "branch",
    ["feature/x", "x" * 255, "ü/ö/ä", "___", "a" * 40 + "/" + "b" * 40, "UPPER", "1"],
)
@pytest.mark.parametrize("name", ["a", "hello", "h" * MAX_PREVIEWED_NAME])
def test_preview_names_are_valid_function_names(name: str, branch: str) -> None:
    for hashed in (False, True):
        preview = preview_name(name, branch, hashed=hashed)
        assert NAME_RE.fullmatch(preview), preview
        assert len(preview) <= 63
        assert preview.startswith(name + "--")
        assert "--" not in preview[len(name) + 2 :]


def test_long_or_clashing_branches_get_a_digest() -> None:
    a = preview_name("hello", "x" * 100 + "a")
    b = preview_name("hello", "x" * 100 + "b")
    assert a != b
    plain = preview_name("hello", "feature/x")
    assert preview_name("hello", "feature-x") == plain  # the caller asks for hashed then
    assert preview_name("hello", "feature-x", hashed=True) != plain
    assert preview_name("hello", "___") != preview_name("hello", "---")


def test_preview_urls_and_the_host_that_routes_to_them() -> None:
    path, host = preview_urls("http://127.0.0.1:8080", "hello", "hello--feature-x", "default")
    assert path == "http://127.0.0.1:8080/function/hello--feature-x"
    assert host == "http://feature-x--hello.localhost:8080/"
    path, host = preview_urls("http://127.0.0.1:9000", "hello", "hello--f", "acme")
    assert path.endswith("/function/hello--f.acme")
    assert host == "http://f--hello.acme.localhost:9000/"
    deployed = {"hello", "hello--feature-x", "hello--f.acme", "my--fn"}
    assert host_key(b"feature-x--hello.localhost:8080", deployed) == b"hello--feature-x"
    assert host_key(b"F--HELLO.acme.localhost", deployed) == b"hello--f.acme"
    assert host_key(b"hello--feature-x.localhost", deployed) == b"hello--feature-x"
    assert host_key(b"my--fn.localhost", deployed) == b"my--fn"  # a plain name wins
    assert host_key(b"feature-x--hello.acme.localhost", deployed) is None
    assert host_key(b"nope--hello.localhost", deployed) is None
    assert host_key(b"--hello.localhost", deployed) is None
    assert host_key(b"x--.localhost", deployed) is None
