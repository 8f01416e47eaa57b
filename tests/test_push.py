"""The push's parts that need no registry: buildah's command, what its failures mean,
and the push records (concurrent writers, a damaged file, the cap)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from plat.daemon.drivers.container.push import PushJob, classify, push_command
from plat.daemon.drivers.container.pushes import KEPT, PushRecords
from plat.k8s.registry import PushRecord

JOB = PushJob("localhost/plat/hello:abc", "r.example.com:5000/hello:abc")


def test_the_command_pushes_by_digest_with_few_retries() -> None:
    cmd = push_command(
        PushJob(JOB.image, JOB.destination, tls_verify=False, authfile="/a.json"), "/d"
    )
    assert cmd[:2] == ["buildah", "push"]
    assert cmd[cmd.index("--digestfile") + 1] == "/d"
    assert "--tls-verify=false" in cmd and "--retry=1" in cmd
    assert cmd[cmd.index("--authfile") + 1] == "/a.json"
    assert cmd[-2:] == [JOB.image, "docker://r.example.com:5000/hello:abc"]
    assert "--authfile" not in push_command(JOB, "/d")
    assert "--tls-verify=true" in push_command(JOB, "/d")


ERR = 'Error: pushing image "x" to "docker://r.example.com:5000/hello:abc": '


@pytest.mark.parametrize(
    ("output", "message", "hint"),
    [
        (
            ERR
            + "pinging container registry r.example.com:5000: "
            + 'Get "https://r.example.com:5000/v2/": '
            + "http: server gave HTTP response to HTTPS client",
            "registry r.example.com:5000 speaks plain HTTP",
            "--no-tls-verify",
        ),
        (
            ERR + "x509: certificate signed by unknown authority",
            "TLS with registry r.example.com:5000 failed",
            "certs.d",
        ),
        (
            "Copying blob sha256:1\n" + ERR + "trying to reuse blob: authentication required",
            "refused the push: not logged in",
            "podman login r.example.com:5000",
        ),
        (
            ERR + "unauthorized: access to the requested resource is not authorized",
            "refused the push",
            "--authfile",
        ),
        (
            "Copying blob a\nCopying blob b\n"
            + ERR
            + "dial tcp 10.0.0.1:5000: connect: connection refused",
            "registry r.example.com:5000 cannot be reached\n" + ERR,
            "is the registry running",
        ),
        (ERR + "lookup r.example.com: no such host", "cannot be reached", "check the host"),
        ("something else entirely", "buildah push to r.example.com:5000/hello:abc failed", None),
    ],
)
def test_failures_are_told_by_their_cause(output: str, message: str, hint: str | None) -> None:
    error = classify(output, JOB)
    assert message in error.message
    assert "Copying blob" not in error.message or hint is None
    if hint is None:
        assert error.hint is None
    else:
        assert hint in str(error.hint)
    assert error.status == 502


def record(version: str, n: int = 0) -> PushRecord:
    return {
        "function": "hello",
        "tenant": "default",
        "version": version,
        "registry": "r:5000",
        "repository": "r:5000/hello",
        "digest": "sha256:" + f"{n:064d}",
        "reference": f"r:5000/hello:{version}@sha256:{n:064d}",
        "pushed_at": float(n),
    }


async def test_records_newest_first_capped_and_shared_by_concurrent_pushes(tmp_path: Path) -> None:
    records = PushRecords(tmp_path / "pushes.json")
    assert await records.of("hello") == []
    await asyncio.gather(*(records.add("hello", record(f"v{n}", n)) for n in range(KEPT + 5)))
    kept = await records.of("hello")
    assert len(kept) == KEPT
    assert [r["pushed_at"] for r in kept] == sorted((r["pushed_at"] for r in kept), reverse=True)
    # The same reference pushed again moves to the front instead of repeating.
    await records.add("hello", kept[-1])
    again = await records.of("hello")
    assert again[0] == kept[-1] and len(again) == KEPT
    assert await PushRecords(tmp_path / "pushes.json").of("hello") == again  # on disk
    await records.forget("hello")
    assert await records.of("hello") == []


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"hello": "x"}', b"\xff\xfe", b""])
async def test_a_damaged_file_counts_as_empty_and_is_rewritten(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "pushes.json"
    path.write_bytes(content)
    records = PushRecords(path)
    assert await records.of("hello") == []
    await records.add("hello", record("v1"))
    assert json.loads(path.read_text())["hello"][0]["version"] == "v1"
