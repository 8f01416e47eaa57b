"""Does the daemon hold more file descriptors the longer it runs? A probe.

Starts a daemon in a temporary home, deploys a python function, then redeploys
it with a code change and scales it up and down, round after round. After each
round it counts the daemon's open file descriptors and its sockets connected to
the container engine's socket (``ss -xpn``: the engine's side of each connection
names its socket file and the peer's inode). A client that keeps connections
per URL, or on threads it never closes, shows as a count that grows with the
rounds; a bounded one stays flat.

    python -m benchmarks.engine_fds [--rounds 15] [--settle 3]

Needs a container engine (the daemon starts ``podman system service`` when none
answers), ``ss`` (iproute2) and Linux's /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

PLAT = str(Path(sys.executable).with_name("plat"))
FUNCTION = "fdprobe"
SS_LINE = re.compile(r"^u_str\s+\S+\s+\d+\s+\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)(?:\s+(.*))?$")


@dataclass(frozen=True)
class Sample:
    round: int
    fds: int
    engine_sockets: int


def plat(env: Mapping[str, str], *args: str) -> str:
    proc = subprocess.run([PLAT, *args], env=dict(env), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"plat {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def engine_sockets(pid: int, engine_socket: str) -> int:
    """The sockets of ``pid`` whose peer is a connection the engine accepted on
    ``engine_socket``."""
    out = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, check=True).stdout
    accepted: set[str] = set()  # the clients' inodes, seen from the engine's side
    ours: set[str] = set()  # the inodes of pid's sockets
    for line in out.splitlines():
        match = SS_LINE.match(line.strip())
        if match is None:
            continue
        local, local_inode, _peer, peer_inode, process = match.groups()
        if local == engine_socket:
            accepted.add(peer_inode)
        if f"pid={pid}," in (process or ""):
            ours.add(local_inode)
    return len(ours & accepted)


def write_handler(folder: Path, round_: int) -> None:
    (folder / "handler.py").write_text(
        f"def handle(event, context):\n    return 'round {round_}'\n"
    )


def log_problems(home: Path) -> list[str]:
    """The daemon log's warnings and errors (an engine call that failed shows there)."""
    try:
        text = (home / "daemon.log").read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line]


def probe(rounds: int, settle: float, home: Path) -> tuple[list[Sample], list[str]]:
    env = {**os.environ, "PLAT_HOME": str(home), "PLAT_PORT": str(free_port())}
    plat(env, "daemon", "start")
    try:
        status = json.loads(plat(env, "daemon", "status", "--json"))
        pid = int((home / "run" / "plat.pid").read_text())
        endpoint = str(status.get("engine", {}).get("endpoint", ""))
        sock = endpoint.removeprefix("unix://")
        print(f"daemon pid {pid}, engine {endpoint}", file=sys.stderr)
        folder = home / "fn"
        plat(env, "init", FUNCTION, "--dir", str(folder))
        samples = []
        for round_ in range(rounds + 1):
            write_handler(folder, round_)
            plat(env, "deploy", str(folder))
            answer = plat(env, "invoke", FUNCTION)
            assert f"round {round_}" in answer, answer
            plat(env, "scale", FUNCTION, "--min", "3")
            plat(env, "scale", FUNCTION, "--min", "1")
            time.sleep(settle)
            sample = Sample(round_, open_fds(pid), engine_sockets(pid, sock))
            print(json.dumps(asdict(sample)), file=sys.stderr)
            samples.append(sample)
    finally:
        plat(env, "daemon", "stop")
    return samples, log_problems(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="redeploys after the first deploy")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plat-fds-") as tmp:
        samples, problems = probe(args.rounds, args.settle, Path(tmp))
    for line in problems:
        print(line, file=sys.stderr)
    first, last = samples[0], samples[-1]
    summary = {
        "rounds": args.rounds,
        "fds": [first.fds, last.fds, max(s.fds for s in samples)],
        "engine_sockets": [
            first.engine_sockets,
            last.engine_sockets,
            max(s.engine_sockets for s in samples),
        ],
        "fd_growth_percent": round(100 * (last.fds - first.fds) / first.fds, 1),
        "log_warnings": len(problems),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
