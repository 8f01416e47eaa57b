"""The dashboard in a real headless Chromium against a real daemon (Podman, Buildah):
log in with a token, see the functions, follow a function's logs live while it is
called, open the call's trace waterfall; a tenant's token sees only its tenant; a
refused token returns to the login. The page must raise no console error."""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from plat.daemon.ui import CSP
from tests.commands.remote import create_tenant, remote
from tests.daemon.ui.browser import (
    WebDriver,
    chromium,
    console,
    elements,
    screenshot,
    severe,
    text_of,
    wait,
)
from tests.fixtures import PlatRunner, daemon_session, make_runner
from tests.functions import write_python_function

pytestmark = pytest.mark.container

# Prints markup in its log line: the dashboard must show it as text. With the
# OpenTelemetry SDK installed (screenshot runs) the work is a span of its own.
HELLO = """
import time

try:
    from opentelemetry import trace
    tracer = trace.get_tracer("hello")
except ImportError:
    tracer = None


def greet(marker):
    print(f"marker {marker} <b>bold</b> & <img src=x onerror=alert(1)>")
    return "hello"


def handle(event, context):
    query = dict(event.query)
    marker = query.get("marker", "-")
    time.sleep(int(query.get("ms", "0")) / 1000)
    status = int(query.get("status", "200"))
    if tracer is None:
        return {"statusCode": status, "body": greet(marker)}
    with tracer.start_as_current_span("greet") as span:
        span.set_attribute("greeting.marker", marker)
        return {"statusCode": status, "body": greet(marker)}
"""
GREET = """
def handle(event, context):
    print("greet called")
    return "hi from acme"
"""


@dataclass
class Dash:
    plat: PlatRunner
    admin: str
    acme: str

    @property
    def ui(self) -> str:
        return f"{self.plat.gateway}/ui/"


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    """A daemon with ``hello`` (default tenant) and acme's ``greet`` (with an SLO)."""
    root = tmp_path_factory.mktemp("ui")
    spans = "opentelemetry-sdk\n" if os.environ.get("PLAT_UI_SCREENSHOTS") else ""
    with daemon_session(make_runner(root)) as plat:
        plat.run("deploy", str(write_python_function(root, "hello", HELLO, requirements=spans)))
        acme = create_tenant(plat, "acme")
        greet = write_python_function(
            root / "acme", "greet", GREET, extra_manifest="slo: {availability: 99}\n"
        )
        remote(plat, acme).run("deploy", str(greet))
        yield Dash(plat, plat.run("auth", "token").stdout.strip(), acme)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def login(driver: WebDriver, dash: Dash, token: str) -> None:
    driver.get(dash.ui)
    field = wait(driver, lambda d: next(iter(elements(d, "#token")), None))
    screenshot(driver, "login")
    field.send_keys(token)
    elements(driver, "#login-button")[0].click()
    wait(driver, lambda d: elements(d, "#functions tbody tr"))


def listed(driver: WebDriver) -> list[tuple[str, str]]:
    rows = elements(driver, "#functions tbody tr")
    return [
        (cells[0].text, cells[1].text)
        for r in rows
        if (cells := r.find_elements("css selector", "td"))
    ]


def open_function(driver: WebDriver, tenant: str, name: str) -> None:
    (link,) = [
        a
        for a in elements(driver, "#functions a.fn-name")
        if (a.get_attribute("href") or "").endswith(f"#/fn/{tenant}/{name}")
    ]
    link.click()
    wait(driver, lambda d: text_of(d, "#logs-state") == "live")


def test_admin_follows_a_call_from_the_logs_to_its_waterfall(
    dash: Dash, browser: WebDriver
) -> None:
    started = time.monotonic()
    login(browser, dash, dash.admin)
    assert {("hello", "default"), ("greet", "acme")} <= set(listed(browser))
    screenshot(browser, "functions")

    open_function(browser, "default", "hello")
    wait(browser, lambda d: "ready" in text_of(d, ".about"))
    assert "No SLO" in wait(browser, lambda d: text_of(d, "#no-slo"))

    # Called only now, with the page open: the live follow is what shows the line.
    if os.environ.get("PLAT_UI_SCREENSHOTS"):  # some seconds of calls for the chart
        for i in range(64):
            status = 500 if i % 23 == 22 else 200
            dash.plat.http("GET", f"/function/hello?marker={i}&ms={(i * 7) % 30}&status={status}")
            time.sleep(0.25)
    marker = secrets.token_hex(6)
    answer = dash.plat.http("GET", f"/function/hello?marker={marker}")
    assert answer.status == 200, answer.body
    row = wait(
        browser,
        lambda d: next((r for r in elements(d, "#logs .log-line") if marker in r.text), None),
    )
    shown = row.find_element("css selector", ".log-text").text
    assert shown == f"marker {marker} <b>bold</b> & <img src=x onerror=alert(1)>"
    assert not elements(browser, "#logs b, #logs img, #logs script")
    wait(browser, lambda d: elements(d, "#chart rect.bar"), timeout=8)
    wait(browser, lambda d: text_of(d, "#calls-5m") not in ("", "0"))
    screenshot(browser, "function")

    # The line names its call's trace; the traces list has it too (polled).
    href = row.find_element("css selector", "a.log-call").get_attribute("href") or ""
    found = re.search(r"/trace/([0-9a-f]{32})$", href)
    assert found, href
    trace_id = found.group(1)
    link = wait(
        browser,
        lambda d: next(iter(elements(d, f'#traces a.trace-link[title="{trace_id}"]')), None),
        timeout=12,
    )
    link.click()
    names = wait(browser, lambda d: [n.text for n in elements(d, ".wf-span .wf-name")] or None)
    assert names[0] == "GET /function/hello"
    assert "upstream" in names
    rows = elements(browser, ".wf-span")
    indents = [
        float(
            r.find_element("css selector", ".wf-label").value_of_css_property("padding-left")[:-2]
        )
        for r in rows
    ]
    upstream = names.index("upstream")
    assert indents[upstream] > indents[0]  # a child of the server span
    widths = [b.size["width"] for b in elements(browser, ".wf-bar")]
    assert all(w > 0 for w in widths) and max(widths) > 200
    rows[0].click()
    attributes = wait(browser, lambda d: text_of(d, "#span-attributes"))
    assert "plat.call_id" in attributes and "http.response.status_code 200" in attributes
    assert marker in wait(browser, lambda d: text_of(d, ".logs.short"))
    if "greet" in names:
        rows[names.index("greet")].click()
    screenshot(browser, "trace")

    assert severe(console(browser)) == []
    assert time.monotonic() - started < 60


def test_a_tenant_token_sees_only_its_tenants_functions(dash: Dash, browser: WebDriver) -> None:
    login(browser, dash, dash.acme)
    assert listed(browser) == [("greet", "acme")]
    open_function(browser, "acme", "greet")
    slo = wait(browser, lambda d: text_of(d, "#slo"))
    assert "availability ≥ 99 %" in slo and "of the 30-day error budget left" in slo
    assert dash.plat.http("GET", "/function/greet.acme").status == 200
    wait(browser, lambda d: "greet called" in text_of(d, "#logs"))
    assert severe(console(browser)) == []

    # Another tenant's function is not there for this token: the API says 404.
    browser.get(dash.ui + "#/fn/default/hello")
    note = wait(browser, lambda d: text_of(d, ".about .notice"))
    assert "no function named" in note
    assert all("404" in line for line in severe(console(browser)))


def test_a_refused_token_returns_to_the_login_and_logout_forgets_it(
    dash: Dash, browser: WebDriver
) -> None:
    browser.get(dash.ui)
    field = wait(browser, lambda d: next(iter(elements(d, "#token")), None))
    field.send_keys("not-a-token")
    elements(browser, "#login-button")[0].click()
    assert "refused" in wait(browser, lambda d: text_of(d, "#login-message"))
    assert browser.execute_script("return sessionStorage.length") == 0

    # A kept token the API no longer takes (rotated, say): back to the login, told why.
    browser.execute_script("sessionStorage.setItem('plat.token', 'rotated-away')")
    browser.get(dash.ui + "#/")
    message = wait(browser, lambda d: text_of(d, "#login-message"))
    assert "refused the token" in message
    assert browser.execute_script("return sessionStorage.length") == 0
    assert all("401" in line for line in severe(console(browser)))

    login(browser, dash, dash.admin)
    elements(browser, "#logout")[0].click()
    wait(browser, lambda d: elements(d, "#token"))
    assert browser.execute_script("return sessionStorage.length") == 0
    browser.get(dash.ui + "#/fn/default/hello")
    wait(browser, lambda d: elements(d, "#token"))
    assert severe(console(browser)) == []


def _raw(dash: Dash, method: str, target: str) -> tuple[int, str, bytes]:
    with socket.create_connection(("127.0.0.1", dash.plat.port), timeout=10) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode("latin-1").lower(), body


def test_the_gateway_serves_only_the_shipped_files(dash: Dash) -> None:
    status, head, body = _raw(dash, "GET", "/ui/")
    assert status == 200 and f"content-security-policy: {CSP.lower()}" in head
    assert "x-content-type-options: nosniff" in head and b"/ui/static/js/app.js" in body
    status, head, body = _raw(dash, "HEAD", "/ui/static/js/app.js")
    assert status == 200 and body == b"" and "text/javascript" in head
    for target in (
        "/ui/static/../../__init__.py",
        "/ui/static/%2e%2e/%2e%2e/__init__.py",
        "/ui/static/..%2f..%2f__init__.py",
        "/ui/static/%2e%2e%2f%2e%2e%2fui%2f__init__.py",
        "/ui/static/../../../../../../etc/passwd",
        "/ui/static/" + "a" * 6000,
    ):
        status, _, body = _raw(dash, "GET", target)
        assert status in (400, 404, 414), (target, status)
        assert b"ui_routes" not in body and b"root:" not in body
