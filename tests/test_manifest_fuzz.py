"""Property tests of plat.manifest: whatever a plat.yaml holds, loading it gives a valid
Manifest or a PlatError with a message, never another exception.

Fast by default; PLAT_FUZZ_PROFILE=long runs many more examples (tests/fuzzing.py).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from plat.errors import PlatError
from plat.manifest import (
    ENV_KEY_RE,
    MANIFEST_NAME,
    NAME_RE,
    Manifest,
    load_manifest,
    validate_manifest,
)
from tests.fuzzing import fuzz_settings

FAST = fuzz_settings("manifest", fast=150, long=2000)

FIELDS = ["name", "runtime", "handler", "env", "auth", "timeout", "resources", "scale"]
NESTED = ["memory", "cpu", "pids", "min", "max", "concurrency"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "hello",
            "python",
            "node",
            "dockerfile",
            "basic",
            "public",
            "30s",
            "256Mi",
            "1e400Gi",
            "99999999999999999999h",
            "handler.handle",
            "a\0b",
            "x\ny",
            "-1",
            "0",
            ".nan",
        ]
    )
)
keys = st.sampled_from(FIELDS + NESTED) | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)
documents = st.dictionaries(keys, values, max_size=9) | values


def load_bytes(raw: bytes) -> Manifest | PlatError:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MANIFEST_NAME).write_bytes(raw)
        try:
            return load_manifest(Path(tmp))
        except PlatError as exc:
            return exc


def check(outcome: Manifest | PlatError) -> None:
    if isinstance(outcome, PlatError):
        assert outcome.message.strip()
        return
    assert NAME_RE.fullmatch(outcome.name)
    assert outcome.auth in ("basic", "public")
    assert math.isfinite(outcome.timeout) and 0 < outcome.timeout <= 3600
    assert outcome.resources.memory >= 16 * 1024**2
    assert 0.01 <= outcome.resources.cpu <= 64
    assert 0 <= outcome.scale.min <= outcome.scale.max
    for key, value in outcome.env.items():
        assert ENV_KEY_RE.fullmatch(key)
        assert "\0" not in value
    assert outcome.handler is None or "\0" not in outcome.handler
    outcome.to_dict()  # what the daemon stores


@FAST
@given(st.binary(max_size=400))
def test_any_bytes(raw: bytes) -> None:
    check(load_bytes(raw))


@FAST
@given(documents)
def test_any_yaml_document(document: Any) -> None:
    check(load_bytes(yaml.safe_dump(document, allow_unicode=True).encode()))


@FAST
@given(documents)
def test_any_structure(document: Any) -> None:
    try:
        check(validate_manifest(document))
    except PlatError as exc:
        check(exc)


@FAST
@given(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=8),
    st.binary(max_size=8),
    st.integers(min_value=0, max_value=400),
)
def test_valid_manifest_with_bytes_spliced_in(extra: dict[str, Any], junk: bytes, at: int) -> None:
    text = yaml.safe_dump({"name": "hello", "runtime": "python", **extra}).encode()
    at = min(at, len(text))
    check(load_bytes(text[:at] + junk + text[at:]))


@FAST
@given(st.text(alphabet=st.sampled_from("[]{}:,-?&*!|>'\"#%@` \n\tab01\\"), max_size=120))
def test_yaml_punctuation(text: str) -> None:
    check(load_bytes(("name: hello\nruntime: python\n" + text).encode()))
