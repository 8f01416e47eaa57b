"""The dashboard's own logic run in a real headless Chromium, on the files the
routes serve (no daemon): the waterfall's tree order and layout on hostile spans,
the chart's scale, the status of a function, links only to http(s), and data
rendered as text. Each case runs the shipped module as the page imports it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiohttp import web

from plat.daemon.ui import ui_routes
from tests.daemon.ui.browser import WebDriver, chromium, console, severe, wait

HOSTILE = '<img src=x onerror="window.pwned=1">'


@contextmanager
def serving() -> Iterator[str]:
    """The dashboard's routes on a loopback port, served from a thread (the browser
    is driven synchronously from the test)."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.add_routes(ui_routes())
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.fixture(scope="module")
def page() -> Iterator[WebDriver]:
    """A browser on the dashboard's login page (no token: it calls no API)."""
    with serving() as base, chromium() as driver:
        driver.get(f"{base}/ui/")
        wait(driver, lambda d: d.find_elements("css selector", "#token"))
        yield driver
        assert severe(console(driver)) == []


def run(driver: WebDriver, module: str, body: str, *args: Any) -> Any:
    """``body`` (a function body, ``m`` the imported module, ``args`` the arguments)
    run in the page; its return value as JSON."""
    script = f"""
        const done = arguments[arguments.length - 1];
        const args = JSON.parse(arguments[0]);
        import("/ui/static/js/{module}")
          .then((m) => JSON.stringify((function (m, args) {{ {body} }})(m, args)))
          .then(done, (e) => done(JSON.stringify({{ error: String(e && e.stack || e) }})));
    """
    answer = json.loads(driver.execute_async_script(script, json.dumps(list(args))))
    assert not (isinstance(answer, dict) and "error" in answer), answer
    return answer


def span(
    span_id: str, parent: str | None, start: float, end: float, **extra: Any
) -> dict[str, Any]:
    return {
        "span_id": span_id,
        "parent_id": parent,
        "name": span_id,
        "start": start,
        "end": end,
        **extra,
    }


ORDER = "return m.treeOrder(args[0]).map((r) => [r.span.span_id, r.depth]);"


def test_tree_order_puts_children_under_parents_by_start(page: WebDriver) -> None:
    spans = [
        span("b", "a", 2.0, 3.0),
        span("a", None, 1.0, 5.0),
        span("c", "a", 1.5, 1.8),
        span("d", "b", 2.1, 2.2),
        span("e", "missing", 0.5, 0.6),  # its parent is another tenant's: a root
    ]
    assert run(page, "widgets/waterfall.js", ORDER, spans) == [
        ["e", 0],
        ["a", 0],
        ["c", 1],
        ["b", 1],
        ["d", 2],
    ]


def test_tree_order_keeps_every_span_of_hostile_traces(page: WebDriver) -> None:
    cycle = [span("f", "g", 1.0, 2.0), span("g", "f", 1.5, 1.6), span("s", "s", 3.0, 4.0)]
    assert run(page, "widgets/waterfall.js", ORDER, cycle) == [["s", 0], ["f", 0], ["g", 1]]
    twins = [span("x", None, 1.0, 2.0), span("x", None, 1.1, 2.0), span("y", "x", 1.2, 1.3)]
    assert sorted(run(page, "widgets/waterfall.js", ORDER, twins)) == [
        ["x", 0],
        ["x", 0],
        ["y", 1],
    ]
    chain = [span(f"s{i}", f"s{i - 1}" if i else None, i, i + 1) for i in range(20_000)]
    depths = run(
        page, "widgets/waterfall.js", "return m.treeOrder(args[0]).map((r) => r.depth);", chain
    )
    assert depths == list(range(20_000))


def test_the_waterfall_places_bars_on_the_time_axis_and_shows_names_as_text(
    page: WebDriver,
) -> None:
    spans = [
        span("root", None, 100.0, 100.4, name=HOSTILE, kind="server", service=HOSTILE),
        span("child", "root", 100.1, 100.3, kind="client", error=True),
    ]
    body = """
        const el = m.waterfall(args[0], () => {});
        document.body.append(el);
        const bars = [...el.querySelectorAll(".wf-bar")]
          .map((b) => [b.style.left, b.style.width, b.className]);
        const out = {
          bars,
          names: [...el.querySelectorAll(".wf-name")].map((n) => n.textContent),
          imgs: el.querySelectorAll("img").length,
          pwned: Boolean(window.pwned),
        };
        el.remove();
        return out;
    """
    out = run(page, "widgets/waterfall.js", body, spans)
    assert out["names"] == [HOSTILE, "child"]
    assert out["imgs"] == 0 and out["pwned"] is False
    (left0, width0, class0), (left1, width1, class1) = out["bars"]
    assert (left0, width0) == ("0%", "100%") and "kind-server" in class0
    assert float(left1[:-1]) == pytest.approx(25) and float(width1[:-1]) == pytest.approx(50)
    assert "error" in class1 and "kind-client" in class1


@pytest.mark.parametrize(
    ("value", "nice"),
    [
        (0, 1),
        (-3, 1),
        (0.3, 0.5),
        (1, 1),
        (1.2, 2),
        (3, 5),
        (7, 10),
        (10, 10),
        (11, 20),
        (4500, 5000),
    ],
)
def test_the_chart_rounds_its_scale_up_to_1_2_5(page: WebDriver, value: float, nice: float) -> None:
    got = run(page, "widgets/chart.js", "return m.niceCeil(args[0]);", value)
    assert got == pytest.approx(nice)


@pytest.mark.parametrize(
    ("summary", "status"),
    [
        ({"url": None, "instances": 0}, "not serving"),
        ({"url": "http://x/function/a", "instances": 2, "desired": 2}, "ready"),
        ({"url": "http://x/function/a", "instances": 0, "desired": 1}, "starting"),
        ({"url": "http://x/function/a", "instances": 0, "desired": 0}, "idle"),
    ],
)
def test_the_status_of_a_function(page: WebDriver, summary: dict[str, Any], status: str) -> None:
    assert run(page, "pages/functions.js", "return m.statusOf(args[0])[0];", summary) == status


@pytest.mark.parametrize(
    ("url", "tag"),
    [
        ("http://127.0.0.1:8080/function/hello", "A"),
        ("https://example.test/x", "A"),
        ("javascript:window.pwned=1", "SPAN"),
        ("JaVaScRiPt:window.pwned=1", "SPAN"),
        ("data:text/html,<script>window.pwned=1</script>", "SPAN"),
        ("not a url", "SPAN"),
    ],
)
def test_function_urls_become_links_only_when_http(page: WebDriver, url: str, tag: str) -> None:
    body = "const el = m.externalLink(args[0]); return [el.tagName, el.textContent];"
    assert run(page, "widgets/common.js", body, url) == [tag, url]


def test_a_hostile_log_line_is_text_and_links_only_to_its_trace(page: WebDriver) -> None:
    line = {
        "id": 1,
        "ts": 1_700_000_000.25,
        "instance": HOSTILE,
        "stream": 'stderr" onclick="x',
        "call_id": HOSTILE,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "line": HOSTILE,
    }
    body = """
        const el = m.logRow(args[0], "acme", "hello");
        const link = el.querySelector("a.log-call");
        return {
          text: el.querySelector(".log-text").textContent,
          imgs: el.querySelectorAll("img").length,
          href: link && link.getAttribute("href"),
          onclick: el.getAttribute("onclick"),
          cls: el.className,
        };
    """
    out = run(page, "widgets/logs.js", body, line)
    assert out["text"] == HOSTILE and out["imgs"] == 0 and out["onclick"] is None
    assert out["href"] == "#/fn/acme/hello/trace/0af7651916cd43dd8448eb211c80319c"
    assert out["cls"] == "log-line "  # an unknown stream gets no class of its own
    untraced = run(
        page,
        "widgets/logs.js",
        "return m.logRow(args[0], 'a', 'b').querySelectorAll('a').length;",
        {**line, "trace_id": None},
    )
    assert untraced == 0
