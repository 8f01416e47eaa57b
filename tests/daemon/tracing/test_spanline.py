"""plat.daemon.tracing.spanline: the ``plat-span:`` lines a handler's shim writes,
read as spans; the line comes from code the daemon does not trust, so every field
is checked and bounded, and a line that is no valid span is left a log line."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from plat.daemon.store import SpanRecord
from plat.daemon.tracing.spanline import (
    MAX_ATTRIBUTES,
    MAX_LINE,
    MAX_NAME,
    MAX_VALUE,
    PREFIX,
    parse_span_line,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = "53995c3f42cd8ad8"
START = 1_700_000_000_123_456_789
END = START + 2_500_000


def fields(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "trace_id": TRACE,
        "span_id": SPAN,
        "parent_id": PARENT,
        "name": "work",
        "kind": "internal",
        "start": START,
        "end": END,
        "error": False,
        "status": "",
        "attributes": {"user": "ann", "n": 3, "ratio": 0.5, "ok": True, "tags": ["a", "b"]},
    }
    data.update(changes)
    return data


def line(**changes: Any) -> str:
    return PREFIX + json.dumps(fields(**changes), separators=(",", ":"))


def parse(text: str) -> SpanRecord | None:
    return parse_span_line(text, "hello.acme", "inst-1")


def parsed(**changes: Any) -> SpanRecord:
    record = parse(line(**changes))
    assert record is not None, changes
    return record


def storable(record: SpanRecord) -> None:
    """Every text field goes into SQLite as UTF-8, as the store writes it."""
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE t (name TEXT, status TEXT, attributes TEXT)")
        conn.execute(
            "INSERT INTO t VALUES (?, ?, ?)",
            (record.name, record.status, json.dumps(record.attributes)),
        )


def test_a_valid_line_is_the_span_it_reports() -> None:
    record = parsed()
    assert record == SpanRecord(
        function="hello.acme",
        instance="inst-1",
        trace_id=TRACE,
        span_id=SPAN,
        parent_id=PARENT,
        name="work",
        kind="internal",
        start=pytest.approx(START / 1e9, abs=1e-6),  # type: ignore[arg-type]
        end=pytest.approx(END / 1e9, abs=1e-6),  # type: ignore[arg-type]
        error=False,
        status="",
        attributes={"user": "ann", "n": 3, "ratio": 0.5, "ok": True, "tags": ["a", "b"]},
    )
    assert record.end - record.start == pytest.approx(0.0025, abs=1e-6)


def test_a_root_span_an_error_and_every_kind() -> None:
    root = parsed(parent_id=None, error=True, status="boom")
    assert (root.parent_id, root.error, root.status) == (None, True, "boom")
    assert parsed(parent_id=None).parent_id is None
    for kind in ("internal", "server", "client", "producer", "consumer"):
        assert parsed(kind=kind).kind == kind
    data = fields()
    del data["kind"], data["attributes"], data["status"], data["error"]
    bare = parse(PREFIX + json.dumps(data))
    assert bare is not None
    assert (bare.kind, bare.attributes, bare.status, bare.error) == ("internal", {}, "", False)
    # error is a flag only when it is true itself
    assert parsed(error="yes").error is False and parsed(error=1).error is False


def test_lines_that_are_not_span_lines() -> None:
    assert parse("") is None
    assert parse("hello world") is None
    assert parse(" " + line()) is None  # the prefix begins the line
    assert parse("PLAT-SPAN:" + line()[len(PREFIX) :]) is None
    assert parse(PREFIX) is None
    assert parse(PREFIX + "{") is None
    assert parse(PREFIX + "not json") is None
    assert parse(PREFIX + "[1, 2]") is None
    assert parse(PREFIX + json.dumps([fields()])) is None
    assert parse(PREFIX + '"a string"') is None
    assert parse(PREFIX + "null") is None
    assert parse(PREFIX + "3") is None
    assert parse(line() + "garbage") is None


def test_deeply_nested_json_is_refused_not_raised() -> None:
    # json.loads raises RecursionError (no ValueError) past its nesting depth.
    assert parse(PREFIX + "[" * 10_000) is None
    assert parse(PREFIX + '{"a":' * 3_000 + "1" + "}" * 3_000) is None
    nested = '{"attributes": ' + '{"a":' * 3_000 + "1" + "}" * 3_001
    assert parse(PREFIX + nested) is None


def test_oversized_lines_are_refused() -> None:
    big = line(attributes={"pad": "x" * (MAX_LINE - len(line()) + 100)})
    assert len(big) > MAX_LINE
    assert parse(big) is None
    fits = line(attributes={"pad": "x" * 1000})
    assert parse(fits) is not None
    # The bound is on bytes: 16 Ki characters of 3-byte UTF-8 is 48 KiB.
    wide = PREFIX + json.dumps(fields(name="€" * 6000), ensure_ascii=False)
    assert len(wide) < MAX_LINE < len(wide.encode())
    assert parse(wide) is None
    assert parse(PREFIX + json.dumps(fields(name="€" * 100), ensure_ascii=False)) is not None


@pytest.mark.parametrize(
    "field,value",
    [
        ("trace_id", None),
        ("trace_id", ""),
        ("trace_id", "0" * 32),
        ("trace_id", TRACE.upper()),
        ("trace_id", TRACE[:-1]),
        ("trace_id", TRACE + "0"),
        ("trace_id", TRACE[:-1] + "g"),
        ("trace_id", int(TRACE, 16)),
        ("trace_id", [TRACE]),
        ("trace_id", f" {TRACE}"),
        ("trace_id", f"{TRACE}\n"),
        ("span_id", "0" * 16),
        ("span_id", SPAN.upper()),
        ("span_id", SPAN[:-1]),
        ("span_id", SPAN + "0"),
        ("span_id", 12345),
        ("span_id", None),
        ("parent_id", "0" * 16),
        ("parent_id", ""),
        ("parent_id", "xyz"),
        ("parent_id", PARENT[:-1]),
        ("parent_id", TRACE),
        ("parent_id", 7),
        ("parent_id", False),
        ("parent_id", {}),
    ],
)
def test_bad_ids_make_no_span(field: str, value: Any) -> None:
    assert parse(line(**{field: value})) is None


def test_a_missing_id_makes_no_span() -> None:
    for field in ("trace_id", "span_id"):
        data = fields()
        del data[field]
        assert parse(PREFIX + json.dumps(data)) is None
    data = fields()
    del data["parent_id"]
    missing_parent = parse(PREFIX + json.dumps(data))
    assert missing_parent is not None and missing_parent.parent_id is None


@pytest.mark.parametrize("name", [None, "", 3, ["work"], {"a": 1}, True])
def test_names_must_be_text(name: Any) -> None:
    assert parse(line(name=name)) is None


def test_huge_names_keys_and_values_are_truncated() -> None:
    record = parsed(name="n" * 5000, status="s" * 9000)
    assert record.name == "n" * MAX_NAME
    assert record.status == "s" * MAX_VALUE
    record = parsed(attributes={"k" * 1000: "v" * 5000, "list": ["w" * 5000]})
    assert record.attributes == {"k" * MAX_NAME: "v" * MAX_VALUE, "list": ["w" * MAX_VALUE]}


@pytest.mark.parametrize("kind", ["INTERNAL", "span", "", 1, None, [], {}, ["server"]])
def test_unknown_kinds_make_no_span(kind: Any) -> None:
    assert parse(line(kind=kind)) is None


@pytest.mark.parametrize(
    "start,end",
    [
        (END, START),  # ends before it starts
        (True, END),
        (START, True),
        (0, END),
        (-1, END),
        (-START, END),
        (START, 2**63),  # past int64 nanoseconds
        (START, 2**200),
        (float(START), float(END)),
        (START / 1e9, END / 1e9),
        ("1700000000", END),
        (None, END),
        (START, None),
        ([START], END),
    ],
)
def test_bad_times_make_no_span(start: Any, end: Any) -> None:
    assert parse(line(start=start, end=end)) is None


def test_times_edge_cases() -> None:
    same = parsed(start=START, end=START)
    assert same.start == same.end
    largest = parsed(start=START, end=2**63 - 1)
    assert largest.end == pytest.approx(9.223372036854776e9)
    # 1e400 in JSON is a float (infinity): no nanoseconds
    raw = line().replace(f'"end":{END}', '"end":1e400')
    assert '"end":1e400' in raw and parse(raw) is None
    # An integer of thousands of digits is a ValueError in json.loads (int limits).
    digits = line().replace(f'"end":{END}', '"end":' + "9" * 5000)
    assert parse(digits) is None


def test_non_finite_and_unbounded_attributes_are_dropped() -> None:
    raw = line(attributes={"keep": 1, "nan": 0.0, "inf": 0.0, "ninf": 0.0}).replace(
        '"nan":0.0', '"nan":NaN'
    )
    raw = raw.replace('"inf":0.0', '"inf":Infinity').replace('"ninf":0.0', '"ninf":-Infinity')
    assert "NaN" in raw and "-Infinity" in raw
    record = parse(raw)
    assert record is not None and record.attributes == {"keep": 1}
    big = parsed(
        attributes={"big": 2**63, "small": -(2**63) - 1, "edge": 2**63 - 1, "neg": -(2**63)}
    )
    assert big.attributes == {"edge": 2**63 - 1, "neg": -(2**63)}
    listed = line(attributes={"l": [1.0, 0.0]}).replace("[1.0,0.0]", "[1.0,NaN]")
    assert parse(listed) is not None and parse(listed).attributes == {}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        [[1], [2]],  # nested lists
        [1, [2]],
        [[]],
        [1, "a"],  # mixed types
        [1, 1.5],
        [True, 1],
        ["a", None],
        [None],
        [{"a": 1}],
        {"a": 1},
        None,
        list(range(65)),  # too long
    ],
)
def test_attributes_otlp_cannot_carry_are_dropped_whole(value: Any) -> None:
    record = parsed(attributes={"bad": value, "good": "yes"})
    assert record.attributes == {"good": "yes"}


def test_homogeneous_lists_are_kept() -> None:
    record = parsed(
        attributes={
            "ints": [1, 2, 3],
            "floats": [0.5, 1.5],
            "bools": [True, False],
            "strs": ["a", ""],
            "empty": [],
            "max": list(range(64)),
        }
    )
    assert record.attributes == {
        "ints": [1, 2, 3],
        "floats": [0.5, 1.5],
        "bools": [True, False],
        "strs": ["a", ""],
        "empty": [],
        "max": list(range(64)),
    }


def test_a_thousand_attributes_are_bounded() -> None:
    many = {f"k{i:04d}": i for i in range(1000)}
    raw = line(attributes=many)
    assert len(raw) < MAX_LINE
    record = parse(raw)
    assert record is not None
    assert len(record.attributes) == MAX_ATTRIBUTES == 128
    assert list(record.attributes) == [f"k{i:04d}" for i in range(128)]


def test_attributes_that_are_not_an_object_or_have_empty_keys() -> None:
    assert parsed(attributes=[["a", 1]]).attributes == {}
    assert parsed(attributes="a=1").attributes == {}
    assert parsed(attributes=None).attributes == {}
    # JSON keys are always strings: an empty one is dropped, a number-like one kept.
    assert parsed(attributes={"": 1, "1": 2, "k": 3}).attributes == {"1": 2, "k": 3}
    assert parsed(status=5).status == ""


def test_lone_surrogates_are_made_storable() -> None:
    # "\ud800" is valid JSON but no valid UTF-8: SQLite refuses such a str outright.
    raw = line(name="a\ud800b", status="\udfff", attributes={"k\ud800": "v\udc00", "l": ["\ud83d"]})
    assert "\\ud800" in raw  # json.dumps escapes them, as a shim's would
    record = parse(raw)
    assert record is not None
    assert record.name == "a?b" and record.status == "?"
    assert record.attributes == {"k?": "v?", "l": ["?"]}
    storable(record)
    # A valid pair of surrogates is the character it encodes.
    emoji = parse(line(name="\U0001f600 ok"))
    assert emoji is not None and emoji.name == "\U0001f600 ok"
    storable(emoji)


def test_non_ascii_and_control_characters_are_text() -> None:
    record = parsed(name="naïve ✓\x00\n", attributes={"ключ": "значение"})
    assert record.name == "naïve ✓\x00\n"
    assert record.attributes == {"ключ": "значение"}
    storable(record)
