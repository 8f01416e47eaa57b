"""The canonical form and the hash of a record, and what a record keeps of its inputs."""

from __future__ import annotations

import hashlib
import json

from plat.daemon.audit.chain import GENESIS, Entry, canonical, clean_params, link, text, timestamp


def entry(**kw: object) -> Entry:
    fields: dict[str, object] = {
        "time": "2026-11-30T12:00:00.000000Z",
        "actor": "admin",
        "origin": "uid:0",
        "action": "function.deploy",
        "target": "hello",
        "tenant": "default",
        "params": {"force": False},
        "outcome": "ok",
    }
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


def test_the_canonical_form_is_sorted_compact_ascii_json_of_the_ten_fields() -> None:
    rec = link(entry(target="héllo"), 1, GENESIS)
    expected = (
        '{"action":"function.deploy","actor":"admin","origin":"uid:0","outcome":"ok",'
        '"params":{"force":false},"prev":"' + GENESIS + '","seq":1,"target":"h\\u00e9llo",'
        '"tenant":"default","time":"2026-11-30T12:00:00.000000Z"}'
    ).encode()
    assert canonical(rec.fields()) == expected
    assert rec.hash == hashlib.sha256(expected).hexdigest() == rec.digest()


def test_each_record_holds_the_hash_of_the_one_before() -> None:
    first = link(entry(), 1, GENESIS)
    second = link(entry(action="function.rm"), 2, first.hash)
    assert second.prev == first.hash
    assert link(entry(), 1, GENESIS).hash == first.hash  # deterministic
    assert link(entry(outcome="forbidden"), 1, GENESIS).hash != first.hash
    assert link(entry(), 2, GENESIS).hash != first.hash  # the seq is hashed too


def test_fields_lose_control_characters_and_are_bounded() -> None:
    assert text("a\x1b[2Jb\nc") == "a\ufffd[2Jb\ufffdc"
    assert len(text("x" * 10_000)) == 256


def test_params_keep_json_scalars_and_turn_the_rest_into_bounded_text() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    params = clean_params(
        {
            "n": 3,
            "big": 2**70,
            "f": 1.5,
            "ok": True,
            "none": None,
            "s": "y" * 1000,
            "list": list(range(100)),
            "set": {"b", "a"},
            "nested": {"deeper": {"x": 1}},
            "obj": Odd(),
        }
    )
    assert params["n"] == 3 and params["ok"] is True and params["none"] is None
    assert params["big"] == str(2**70) and params["f"] == "1.5"
    assert len(params["s"]) == 256
    assert params["list"] == list(range(32))
    assert params["set"] == ["a", "b"]
    assert params["nested"] == {"deeper": "{'x': 1}"}
    assert params["obj"] == "odd"
    json.dumps(params, allow_nan=False)  # always representable
    assert len(clean_params({str(i): i for i in range(1000)})) == 32
    assert clean_params(None) == {}


def test_times_are_fixed_width_utc_so_text_order_is_time_order() -> None:
    assert timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert timestamp(1.5) < timestamp(10) < timestamp(100)
