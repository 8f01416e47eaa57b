"""plat.daemon.tracing.context: ``traceparent`` (W3C trace context) read and written.
A header that is not valid makes the call start a trace of its own, so every
malformed shape must read as None, never as a parent with wrong ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plat.daemon.tracing.context import (
    Parent,
    parse_traceparent,
    span_hex,
    trace_hex,
    traceparent,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01".encode()
PARENT = Parent(int(TRACE, 16), int(SPAN, 16), 1)


def test_the_specs_example_is_read() -> None:
    assert len(VALID) == 55
    assert parse_traceparent(VALID) == PARENT
    unsampled = parse_traceparent(f"00-{TRACE}-{SPAN}-00".encode())
    assert unsampled == Parent(PARENT.trace_id, PARENT.span_id, 0)
    # Flags other than "sampled" are kept as given (the caller decides what they mean).
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-ff".encode()) == PARENT._replace(flags=0xFF)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-02".encode()) == PARENT._replace(flags=2)


def test_ids_of_one_are_valid_ids() -> None:
    value = b"00-" + b"0" * 31 + b"1-" + b"0" * 15 + b"1-01"
    assert parse_traceparent(value) == Parent(1, 1, 1)


def test_absent_or_empty_is_none() -> None:
    assert parse_traceparent(None) is None
    assert parse_traceparent(b"") is None
    assert parse_traceparent(b"   ") is None
    assert parse_traceparent(b"-" * 55) is None


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE.upper()}-{SPAN}-01",  # uppercase hex is invalid (the spec: lowercase)
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"00-{TRACE[:-1]}A-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0A",
        f"0A-{TRACE}-{SPAN}-01",
    ],
)
def test_uppercase_hex_is_invalid(value: str) -> None:
    assert parse_traceparent(value.encode()) is None


def test_all_zero_ids_are_invalid() -> None:
    assert parse_traceparent(f"00-{'0' * 32}-{SPAN}-01".encode()) is None
    assert parse_traceparent(f"00-{TRACE}-{'0' * 16}-01".encode()) is None
    assert parse_traceparent(f"00-{'0' * 32}-{'0' * 16}-00".encode()) is None


def test_version_ff_is_invalid() -> None:
    assert parse_traceparent(f"ff-{TRACE}-{SPAN}-01".encode()) is None
    assert parse_traceparent(f"ff-{TRACE}-{SPAN}-01-extra".encode()) is None


def test_a_future_version_is_read_and_its_extra_fields_ignored() -> None:
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01".encode()) == PARENT
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be".encode()) == PARENT
    assert parse_traceparent(f"fe-{TRACE}-{SPAN}-00-".encode()) == PARENT._replace(flags=0)
    # ...but only after a dash: more characters glued to the flags make it unreadable.
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01x".encode()) is None
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-011".encode()) is None
    # A future version must still carry valid ids.
    assert parse_traceparent(f"01-{'0' * 32}-{SPAN}-01-x".encode()) is None


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE}-{SPAN}-01-",  # version 00 is exactly 55 characters
        f"00-{TRACE}-{SPAN}-01-extra",
        f"00-{TRACE}-{SPAN}-010",
        f"00-{TRACE}-{SPAN}-01x",
        f"00-{TRACE}-{SPAN}-01 x",
        f"00-{TRACE}-{SPAN}-01\x00",
    ],
)
def test_version_00_with_extra_characters_is_invalid(value: str) -> None:
    assert parse_traceparent(value.encode()) is None


@pytest.mark.parametrize(
    "value",
    [
        f"00_{TRACE}-{SPAN}-01",
        f"00-{TRACE}_{SPAN}-01",
        f"00-{TRACE}-{SPAN}_01",
        f"00:{TRACE}:{SPAN}:01",
        f"00{TRACE}-{SPAN}-01-",  # the right length, the separators in the wrong places
        f"00-{TRACE}{SPAN}-01--",
        f"00-{TRACE}-{SPAN}01-",
        f"00-{TRACE[:-1]}-{SPAN}0-01",  # a short trace id, a long span id
        f"00-{TRACE}0-{SPAN[:-1]}-01",
        f"00-{TRACE[:-1]}-{SPAN}-01",  # too short
        f"00-{TRACE}-{SPAN[:-1]}-01",
        f"00-{TRACE}-{SPAN}-1",
        f"0-{TRACE}-{SPAN}-01",
        f"000-{TRACE}-{SPAN}-01",
        f"00-{TRACE}0-{SPAN}-01",  # too long
        f"00-{TRACE}-{SPAN}0-01",
        f"00-{TRACE}--{SPAN}-01",
        f"00-{TRACE}-{SPAN}--01",
        f"-00-{TRACE}-{SPAN}-1",
        f"00-{TRACE[:-1]}g-{SPAN}-01",  # not hex
        f"00-{TRACE}-{SPAN[:-1]}z-01",
        f"00-{TRACE}-{SPAN}-0g",
        f"0x-{TRACE}-{SPAN}-01",
        f"00-{TRACE[:-2]}0x-{SPAN}-01",
        f"00-+{TRACE[1:]}-{SPAN}-01",  # int() would take a sign...
        f"00-{TRACE}--{SPAN[1:]}-01",
        f"00-{TRACE[:-2]}_1-{SPAN}-01",  # ...and an underscore
        f"00-{TRACE[:-1]} -{SPAN}-01",
        f"00- {TRACE[1:]}-{SPAN}-01",
    ],
)
def test_wrong_separators_lengths_and_digits_are_invalid(value: str) -> None:
    assert parse_traceparent(value.encode()) is None


def test_surrounding_whitespace_is_ignored_inner_whitespace_is_not() -> None:
    assert parse_traceparent(b"  " + VALID + b" ") == PARENT
    assert parse_traceparent(b"\t" + VALID + b"\t") == PARENT
    assert parse_traceparent(VALID + b"\r\n") == PARENT
    assert parse_traceparent(VALID.replace(b"-", b" - ", 1)) is None
    assert parse_traceparent(VALID[:10] + b" " + VALID[11:]) is None


def test_non_ascii_is_invalid() -> None:
    latin = VALID[:10] + b"\xe9" + VALID[11:]  # the right length, one byte not hex
    assert len(latin) == 55 and parse_traceparent(latin) is None
    utf8 = VALID[:10] + "é".encode() + VALID[12:]
    assert len(utf8) == 55 and parse_traceparent(utf8) is None
    # Unicode digits that int() accepts are no hex digits.
    arabic = VALID[:10] + "٣".encode() + VALID[12:]
    assert len(arabic) == 55 and parse_traceparent(arabic) is None
    assert parse_traceparent(VALID[:54] + b"\xff") is None
    assert parse_traceparent(b"\x00" * 55) is None
    assert parse_traceparent(f"00-{'é' * 32}-{SPAN}-01".encode()) is None
    assert parse_traceparent(f"00-{'é' * 16}-{SPAN}-01".encode()) is None  # 32 bytes


def test_eight_kib_headers() -> None:
    assert parse_traceparent(VALID + b"-" + b"a" * 8192) is None  # version 00
    assert parse_traceparent(b"a" * 8192) is None
    assert parse_traceparent(b"-" * 8192) is None
    assert parse_traceparent(b" " * 8192 + VALID + b" " * 8192) == PARENT
    future = b"01" + VALID[2:] + b"-" + b"x" * 8192
    assert parse_traceparent(future) == PARENT


def test_traceparent_is_version_00_naming_the_span() -> None:
    assert traceparent(PARENT.trace_id, PARENT.span_id, True) == VALID
    assert traceparent(PARENT.trace_id, PARENT.span_id, False) == VALID[:-2] + b"00"
    assert traceparent(1, 1, True) == b"00-" + b"0" * 31 + b"1-" + b"0" * 15 + b"1-01"
    top = traceparent(2**128 - 1, 2**64 - 1, False)
    assert top == b"00-" + b"f" * 32 + b"-" + b"f" * 16 + b"-00"
    assert trace_hex(PARENT.trace_id) == TRACE and span_hex(PARENT.span_id) == SPAN
    assert trace_hex(1) == "0" * 31 + "1" and span_hex(1) == "0" * 15 + "1"


@given(
    trace_id=st.integers(min_value=1, max_value=2**128 - 1),
    span_id=st.integers(min_value=1, max_value=2**64 - 1),
    sampled=st.booleans(),
)
def test_what_is_written_reads_back(trace_id: int, span_id: int, sampled: bool) -> None:
    value = traceparent(trace_id, span_id, sampled)
    assert len(value) == 55
    assert parse_traceparent(value) == Parent(trace_id, span_id, int(sampled))
    assert value.decode() == f"00-{trace_hex(trace_id)}-{span_hex(span_id)}-0{int(sampled)}"


@given(st.binary(max_size=80))
def test_any_bytes_read_as_none_or_a_valid_parent(value: bytes) -> None:
    parent = parse_traceparent(value)
    if parent is not None:
        assert 0 < parent.trace_id < 2**128 and 0 < parent.span_id < 2**64
        assert 0 <= parent.flags <= 0xFF
        stripped = value.strip()
        assert stripped[3:35].decode() == trace_hex(parent.trace_id)
        assert stripped[36:52].decode() == span_hex(parent.span_id)


@given(
    st.text(alphabet="0123456789abcdefABCDEF- \t", min_size=50, max_size=60),
)
def test_near_misses_never_misread(value: str) -> None:
    parent = parse_traceparent(value.encode())
    if parent is not None:
        stripped = value.strip()
        assert stripped[:2] != "ff"
        assert stripped == stripped.lower()[:55] + stripped[55:]
        assert stripped[:2] != "00" or len(stripped) == 55
        assert traceparent(parent.trace_id, parent.span_id, True)[3:52] == stripped[3:52].encode()
