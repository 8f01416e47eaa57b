"""Existing apps, unchanged, in real containers: the Flask, FastAPI, Lambda and
Express examples deployed with `plat deploy` and called through the gateway;
FastAPI's lifespan shutdown when its instance stops, and its startup again when
the next call specialises a pre-warmed pool instance; a Lambda handler under
`plat dev`, reloaded on save."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.serving.e2e import FAST_AUTOSCALER, daemon, running
from tests.fixtures import EXAMPLES, PlatRunner, wait_for

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

NAMES = ("flask-app", "fastapi-app", "lambda-handler", "express-app")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlatRunner, Path]]:
    """A daemon with a pool of one and quick scale-to-zero, every example deployed."""
    root = tmp_path_factory.mktemp("adapters")
    settings = {**FAST_AUTOSCALER, "PLAT_POOL_SIZE": "1", "PLAT_SCALE_TO_ZERO_AFTER": "4s"}
    with daemon(root, settings) as (plat, _):
        for name in NAMES:
            folder = root / name
            shutil.copytree(EXAMPLES / name, folder)
            if name == "fastapi-app":  # scales to zero, to come back from the pool
                with (folder / "plat.yaml").open("a") as fh:
                    fh.write("scale: {min: 0, max: 1}\n")
            plat.run("deploy", str(folder), timeout=600)
        yield plat, root


def _get(plat: PlatRunner, path: str) -> tuple[int, bytes, dict[str, str]]:
    res = plat.http("GET", path, auth=False)
    return res.status, res.body, {k.lower(): v for k, v in res.headers.items()}


def test_flask_blueprint_and_url_for(deployed: tuple[PlatRunner, Path]) -> None:
    plat, _ = deployed
    status, body, _ = _get(plat, "/function/flask-app/books/")
    assert status == 200, body
    assert json.loads(body) == {
        "books": ["/function/flask-app/books/1", "/function/flask-app/books/2"]
    }
    status, body, _ = _get(plat, "/function/flask-app/books/2")
    assert json.loads(body) == {"title": "Solaris", "self": "/function/flask-app/books/2"}
    assert _get(plat, "/function/flask-app/books/9")[0] == 404
    data = bytes(range(256)) * 64
    res = plat.http(
        "POST",
        "/function/flask-app/echo",
        data,
        {"Content-Type": "application/octet-stream"},
        auth=False,
    )
    assert res.body == data


def test_fastapi_path_parameter_body_and_lifespan(deployed: tuple[PlatRunner, Path]) -> None:
    plat, _ = deployed
    status, body, _ = _get(plat, "/function/fastapi-app/prices/tea")
    assert status == 200, body
    assert json.loads(body) == {
        "item": "tea",
        "price": 3.5,  # from the state the lifespan's startup made
        "url": f"http://127.0.0.1:{plat.port}/function/fastapi-app/prices/tea",
    }
    headers = {"Content-Type": "application/json"}
    order = plat.http(
        "POST", "/function/fastapi-app/orders", b'{"item": "cake", "quantity": 3}', headers, False
    )
    assert json.loads(order.body) == {"item": "cake", "quantity": 3, "total": 12.0}
    bad = plat.http("POST", "/function/fastapi-app/orders", b'{"quantity": 3}', headers, False)
    assert bad.status == 422
    assert "fastapi-app: startup" in plat.run("logs", "fastapi-app").stdout


def test_fastapi_shutdown_on_stop_and_startup_again_from_the_pool(
    deployed: tuple[PlatRunner, Path],
) -> None:
    plat, _ = deployed
    assert _get(plat, "/function/fastapi-app/prices/cake")[0] == 200
    # Idle, it scales to zero: SIGTERM, the drain, then the lifespan's shutdown.
    assert wait_for(lambda: running(plat, "fastapi-app") == 0, timeout=60)
    assert wait_for(
        lambda: "fastapi-app: shutdown" in plat.run("logs", "fastapi-app").stdout, timeout=20
    )
    assert wait_for(
        lambda: json.loads(plat.run("daemon", "status", "--json").stdout)["pool"]["pools"],
        timeout=60,
    )
    # The next call is a cold start: a pool instance imports the app and runs its startup.
    status, body, _ = _get(plat, "/function/fastapi-app/prices/tea")
    assert status == 200, body
    assert json.loads(body)["price"] == 3.5
    logs = plat.run("logs", "fastapi-app").stdout
    assert "specialised from the pre-warmed pool" in logs
    assert logs.count("fastapi-app: startup") >= 2


def test_lambda_query_and_binary_body(deployed: tuple[PlatRunner, Path]) -> None:
    plat, _ = deployed
    status, body, _ = _get(plat, "/function/lambda-handler/hi?name=Ada")
    assert status == 200, body
    data = json.loads(body)
    assert (data["hello"], data["path"]) == ("Ada", "/hi")
    assert 0 < data["ms_left"] <= 30_000
    status, body, headers = _get(plat, "/function/lambda-handler/?size=4")
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert body == bytes(range(256)) * 4  # base64 on the way out, bytes on the wire


def test_express_router(deployed: tuple[PlatRunner, Path]) -> None:
    plat, _ = deployed
    headers = {"Content-Type": "application/json"}
    made = plat.http("POST", "/function/express-app/notes/", b'{"text": "hi"}', headers, False)
    assert made.status == 201, made.body
    location = {k.lower(): v for k, v in made.headers.items()}["location"]
    assert location == "/function/express-app/notes/0"
    _, body, _ = _get(plat, location)
    assert json.loads(body) == {"id": "0", "text": "hi", "base": "/function/express-app/notes"}
    res = subprocess.run(
        [
            "python3",
            "-c",
            "import http.client as h; c=h.HTTPConnection('127.0.0.1', "
            f"{plat.port}); c.request('GET', '/function/express-app/'); "
            "print(c.getresponse().getheader('Location'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.strip() == "/function/express-app/notes/"


def test_a_lambda_handler_under_plat_dev_reloads_on_save(
    deployed: tuple[PlatRunner, Path], tmp_path: Path
) -> None:
    plat, _ = deployed
    folder = tmp_path / "lambda-dev"
    shutil.copytree(EXAMPLES / "lambda-handler", folder)
    text = (folder / "plat.yaml").read_text().replace("name: lambda-handler", "name: lambda-dev")
    (folder / "plat.yaml").write_text(text)
    log = tmp_path / "dev.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plat", "dev", str(folder)],
            env=plat.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        assert wait_for(lambda: "watching" in log.read_text(), timeout=180), log.read_text()
        assert json.loads(_get(plat, "/function/lambda-dev/?name=one")[1])["hello"] == "one"
        source = (folder / "lambda_function.py").read_text()
        (folder / "lambda_function.py").write_text(source.replace('"hello"', '"goodbye"'))

        def reloaded() -> bool:
            status, body, _ = _get(plat, "/function/lambda-dev/?name=two")
            return status == 200 and json.loads(body).get("goodbye") == "two"

        assert wait_for(reloaded, timeout=120), log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
