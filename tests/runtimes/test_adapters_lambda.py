"""AWS Lambda handlers served by the Python shim: the API Gateway HTTP API event
(payload 2.0), the Lambda-like context, and answers read as API Gateway reads
them; shapes it would refuse are a clear 500 with the reason in the log."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtimes import ServerProcess
from tests.runtimes.adapters import serve_app

pytestmark = pytest.mark.timeout(60)

HANDLER = textwrap.dedent(
    """
    import base64
    import json


    def lambda_handler(event, context):
        path = event["rawPath"]
        if path == "/event":
            return {"statusCode": 200, "body": json.dumps({
                "event": event,
                "context": {
                    "function_name": context.function_name,
                    "function_version": context.function_version,
                    "memory_limit_in_mb": context.memory_limit_in_mb,
                    "aws_request_id": context.aws_request_id,
                    "remaining": context.get_remaining_time_in_millis(),
                    "arn": context.invoked_function_arn,
                    "log_group_name": context.log_group_name,
                },
            })}
        if path == "/reverse":
            data = base64.b64decode(event["body"]) if event["isBase64Encoded"] else b""
            return {
                "statusCode": 200,
                "headers": {"Content-Type": "application/octet-stream"},
                "body": base64.b64encode(data[::-1]).decode(),
                "isBase64Encoded": True,
            }
        if path == "/query":
            q = event.get("queryStringParameters") or {}
            return {"statusCode": "201", "body": q.get("name", "nobody"),
                    "headers": {"Content-Type": "text/plain"}}
        if path == "/cookies":
            return {"statusCode": 200, "cookies": ["a=1; Path=/", "b=2"],
                    "multiValueHeaders": {"X-Many": ["one", "two"]}, "body": "ok"}
        if path == "/dict":
            return {"plain": "dict"}
        if path == "/str":
            return "just text"
        if path == "/list":
            return [1, 2]
        if path == "/raise":
            raise KeyError("missing thing 4321")
        if path == "/dict-body":
            return {"statusCode": 200, "body": {"not": "a string"}}
        if path == "/bad-base64":
            return {"statusCode": 200, "body": "%%%", "isBase64Encoded": True}
        if path == "/bad-status":
            return {"statusCode": "teapot"}
        if path == "/bad-header":
            return {"statusCode": 200, "headers": {"X-Bad": "a\\r\\nInjected: 1"}}
        if path == "/unserializable":
            return {"when": object()}
        return {"statusCode": 404, "body": path}
    """
)


@pytest.fixture(scope="module")
def lam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("lambda") / "app"
    with serve_app(
        folder,
        {"lambda_function.py": HANDLER},
        "lambda_function.lambda_handler",
        PLAT_TIMEOUT="12",
        PLAT_MEMORY_MB="512",
        PLAT_FUNCTION="orders",
        PLAT_VERSION="v3",
    ) as server:
        yield server


def test_the_api_gateway_v2_event(lam: ServerProcess) -> None:
    res = lam.request(
        "POST",
        "/event?tag=a&tag=b&name=x%20y",
        body='{"k": 1}',
        headers={
            "Content-Type": "application/json",
            "Cookie": "c1=v1; c2=v2",
            "X-Multi": "one",
            "User-Agent": "tester/1",
            "X-Call-Id": "call-77",
            "X-Forwarded-For": "198.51.100.7",
            "X-Forwarded-Host": "127.0.0.1:8080",
        },
    )
    assert res.status == 200, res.text
    data = res.json()
    event, context = data["event"], data["context"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/event"
    assert event["rawQueryString"] == "tag=a&tag=b&name=x%20y"
    assert event["queryStringParameters"] == {"tag": "a,b", "name": "x y"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-multi"] == "one"
    assert event["headers"]["host"] == "127.0.0.1:8080"
    assert event["body"] == '{"k": 1}'
    assert event["isBase64Encoded"] is False
    http = event["requestContext"]["http"]
    assert http == {
        "method": "POST",
        "path": "/event",
        "protocol": "HTTP/1.1",
        "sourceIp": "198.51.100.7",
        "userAgent": "tester/1",
    }
    assert event["requestContext"]["requestId"] == "call-77"
    assert event["requestContext"]["stage"] == "$default"
    assert isinstance(event["requestContext"]["timeEpoch"], int)
    assert context["function_name"] == "orders"
    assert context["function_version"] == "v3"
    assert context["memory_limit_in_mb"] == 512
    assert context["aws_request_id"] == "call-77"
    assert 11_000 < context["remaining"] <= 12_000
    assert context["arn"].endswith(":function:orders")
    assert context["log_group_name"] == "/aws/lambda/orders"


def test_no_query_and_no_body_leave_their_keys_out(lam: ServerProcess) -> None:
    event = lam.request("GET", "/event").json()["event"]
    assert "queryStringParameters" not in event
    assert "body" not in event
    assert "cookies" not in event


def test_binary_bodies_arrive_and_leave_intact(lam: ServerProcess) -> None:
    data = bytes(range(256)) * 1024
    res = lam.request("POST", "/reverse", data, {"Content-Type": "application/octet-stream"})
    assert res.status == 200
    assert res.body == data[::-1]
    # Text that is not UTF-8 is base64 too.
    res = lam.request("POST", "/reverse", b"\xff\xfe", {"Content-Type": "text/plain"})
    assert res.body == b"\xfe\xff"


def test_answers_as_api_gateway_reads_them(lam: ServerProcess) -> None:
    res = lam.request("GET", "/query?name=ada")
    assert (res.status, res.body, res.headers["content-type"]) == (201, b"ada", "text/plain")
    res = lam.request("GET", "/dict")
    assert (res.status, res.json(), res.headers["content-type"]) == (
        200,
        {"plain": "dict"},
        "application/json",
    )
    assert lam.request("GET", "/str").body == b"just text"
    assert lam.request("GET", "/list").json() == [1, 2]


def test_cookies_become_set_cookie_headers(lam: ServerProcess) -> None:
    conn = lam.connection()
    conn.request("GET", "/cookies")
    resp = conn.getresponse()
    assert resp.read() == b"ok"
    assert resp.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    assert resp.headers.get_all("X-Many") == ["one", "two"]
    conn.close()


@pytest.mark.parametrize(
    ("path", "error", "logged"),
    [
        ("/raise", "handler_error", "missing thing 4321"),
        ("/dict-body", "invalid_response", "body must be a string"),
        ("/bad-base64", "invalid_response", "not valid base64"),
        ("/bad-status", "invalid_response", "from 100 to 599"),
        ("/bad-header", "invalid_response", "contains a line break"),
        ("/unserializable", "invalid_response", "not JSON-serializable"),
    ],
)
def test_shapes_api_gateway_refuses_are_a_clear_500(
    lam: ServerProcess, path: str, error: str, logged: str
) -> None:
    res = lam.request("GET", path)
    assert res.status == 500
    assert res.json()["error"] == error
    assert "injected" not in res.headers
    assert logged in lam.wait_output(logged, stream="stderr")
    assert lam.request("GET", "/str").status == 200


def test_huge_headers_and_query(lam: ServerProcess) -> None:
    headers = {f"X-H-{i}": "v" * 500 for i in range(100)}
    event = lam.request("GET", "/event?" + "q=1&" * 2000, headers=headers).json()["event"]
    assert event["headers"]["x-h-99"] == "v" * 500
    assert event["queryStringParameters"]["q"] == ",".join(["1"] * 2000)


def test_an_async_handler_and_detection_by_name(tmp_path: Path) -> None:
    source = "async def lambda_handler(event, context):\n    return {'async': event['rawPath']}\n"
    with serve_app(tmp_path / "app", {"app.py": source}, "app.lambda_handler") as server:
        assert server.request("GET", "/x").json() == {"async": "/x"}


def test_a_plain_handle_is_not_taken_for_lambda(tmp_path: Path) -> None:
    source = "def handle(event, context):\n    return {'path': event.path}\n"
    with serve_app(tmp_path / "app", {"handler.py": source}, "handler.handle") as server:
        assert server.request("GET", "/y").json() == {"path": "/y"}


def test_an_explicit_kind_wins(tmp_path: Path) -> None:
    source = "def lambda_handler(event, context):\n    return {'native': event.path}\n"
    files = {"lambda_function.py": source}
    handler = "lambda_function.lambda_handler"
    with serve_app(tmp_path / "app", files, handler, PLAT_ADAPTER="plat") as server:
        assert server.request("GET", "/z").json() == {"native": "/z"}


def test_an_unknown_kind_stops_the_start(tmp_path: Path) -> None:
    files = {"handler.py": "def handle(e, c):\n    return 1\n"}
    with serve_app(tmp_path / "app", files, "handler.handle", ready=False, PLAT_ADAPTER="cgi") as s:
        assert s.wait_exit() == 1
        assert "no handler adapter for 'cgi'" in s.stderr
