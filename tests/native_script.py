"""A recording that goes through every fast path of sdb/_native.c and every hand-over to Python.

Run as ``python -m tests.native_script STORE`` once with ``SDB_NATIVE=0`` and once without: the two
runs must be identical, column for column (tests/test_native.py). Prints which path ran and every
error a call raised, so that errors are compared too.
"""

from __future__ import annotations

import dataclasses
import decimal
import enum
import itertools
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.native import NATIVE


class Channel(enum.Enum):
    PHONE = "phone"


@dataclasses.dataclass
class Offer:
    discount: float
    term: int


ARGS: list[Any] = [
    {"customer_id": "7590-VHVEG", "discount_pct": 43.8, "term_months": 12, "channel": "phone"},
    {"discount_pct": 25.0, "term_months": 12.0, "flag": True, "none": None},  # integral floats, flat
    {"nested": {"a": [1.0, 2.5, {"b": 3.0}], "t": (4.0, "x")}, "big": 1e20, "neg": -0.0},  # nested ones
    {"text": "1.0, then 2e+5 and 25.0}"},  # looks like an integral float, inside a string
    {"é": "ü", "emoji": "\U0001f600"},
    {"inf": float("inf")},  # refused, never written as null: NaN, the infinities
    {"nan": float("nan"), "n": None},
    {"deep": [{"x": float("-inf")}], "text": "null"},
    {1: "a", "1": "b"},  # refused: two keys written as one text
    {"k": {True: 1, "true": 2}},
    {"decimal": decimal.Decimal("3.0"), "set": {3, 1}, "enum": Channel.PHONE, "offer": Offer(10.0, 12)},
    [1.0, {"x": 2.0}],
    "just a string",
    7.0,
    None,
    {3: "int key", "z": 1},
    {"big_int": 2**62, "deep": [[[[[[1.0]]]]]]},
]


def calls(rec: Recorder) -> list[Callable[[], Any]]:
    s: Any = rec.session("main")  # Any: some calls below are wrong on purpose
    other = rec.session("other", actor="reviewer", pattern="approval")
    out: list[Callable[[], Any]] = []
    for i, v in enumerate(ARGS):
        out += [
            partial(s.action, "propose_offer", v),
            partial(s.action, "propose_offer", v, step=f"day-{i:03d}/offer", parent=0),
            partial(s.input, "contract", v),
            partial(s.state, "offer_sent", v, parent=1, step="s"),
            partial(s.effect, "send", v, parent=1),
            partial(s.gate, "policy:v7", v, "why"),
            partial(other.llm, {"messages": [v]}, {"choices": [v]}, model="m", prompt="offer@v2"),
        ]
    out += [
        # hand-overs to the Python methods: extra fields, other statuses, odd types
        lambda: s.action("propose_offer", {"a": 1}, call_id="call-1"),
        lambda: s.action("propose_offer", {"a": 1}, error={"reason": "bad"}, status="invalid"),
        lambda: s.action("propose_offer", {"a": 1}, replay={"mode": "recorded"}),
        lambda: s.action("propose_offer", {"a": 1}, status="ok", actor="", pattern=""),
        lambda: s.action("propose_offer", {"a": 1}, actor="tool", pattern="p"),
        lambda: s.action("propose_offer", {"a": 1}, status="nonsense"),
        lambda: s.action(name="propose_offer", args={"a": 1}),
        lambda: s.action("propose_offer", {"a": 1}, step=3),
        lambda: s.action("propose_offer", {"a": 1}, parent=True),
        lambda: s.action(5, {"a": 1}),
        lambda: s.action("propose_offer", {"a": object()}),
        lambda: s.action("propose_offer", {"a": 2**70}),
        lambda: s.action("propose_offer", {"a": 1}, unknown=1),
        lambda: s.input("contract", {"a": 1}, parent=0),
        lambda: s.effect("send", {"ok": True}, status="error"),
        lambda: s.effect("send", {"ok": True}, status="nonsense"),
        lambda: s.gate("policy", True),
        lambda: s.gate("policy", False),
        lambda: s.gate("policy", "allow"),
        lambda: s.gate("policy", " Approved "),
        lambda: s.gate("policy", "deny", None),
        lambda: s.gate("policy", "denied", reason={"rule": 7.0}, status="ok"),
        lambda: s.gate("policy", {"decision": "allow"}),
        lambda: s.llm({"q": 1}, {"usage": {"prompt_tokens": 10, "completion_tokens": 2}}, model="m"),
        lambda: s.llm({"q": 1}, {"usage": {"input_tokens": 3, "output_tokens": 4}}, model="m", name="judge"),
        lambda: s.llm({"q": 1}, {"usage": {"prompt_tokens": None, "input_tokens": 3}}, model="m", tokens_out=9),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", prompt="offer@v1", latency_ms=12.5, variables={"x": 1.0}),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", latency_ms=3, tokens_in=1, tokens_out=2, parent=0),
        lambda: s.llm({"q": 1}, "plain text answer", model="m", replay={"mode": "live"}),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", content_missing=True),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", prompt="no-version"),
        lambda: s.llm({"q": 1}, {"a": 1}, model=3),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", latency_ms="slow"),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", name=""),
        lambda: s.error("provider", "timeout", detail={"after": 30.0}),
        # found by review: each once wrote different bytes, or lost a seq, on one of the two paths
        lambda: s.gate("policy", "ok\x00junk"),
        lambda: s.gate("policy", "allow\x00"),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", tokens_in=3.0),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", latency_ms=10**400),
        lambda: s.llm({"q": 1}, {"usage": {"prompt_tokens": 2**70, "completion_tokens": 1}}, model="m"),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", tokens_out=2**64),
        lambda: s.action("propose_offer", {"a": 1}, parent=2**64),
        lambda: s.action("propose_offer", {"a": 1}, step="\ud800"),
        lambda: s.state("n\ud800", {"a": 1}),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m\ud800"),
        lambda: rec.session("x", actor="\udc00"),
        lambda: s.action("propose_offer", {"a": 1}, actor="tool", step="é"),
        # refused in the caller, on both paths, with no seq taken: a name that is not a string (once a
        # TypeError in C, an AttributeError in Python), a name that is not UTF-8 text (a UnicodeEncodeError)
        lambda: s.gate(5, True),
        lambda: s.effect(7, {"ok": True}),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", name=5),
        lambda: s.input("contract\udc00", {"a": 1}),
        lambda: s.error("provider\ud800", "timeout"),
        lambda: s.llm({"q": 1}, {"a": float("nan")}, model="m"),
        lambda: s.llm({"q": 1}, {"a": 1}, model="m", variables={1: "x", "1": "y"}),
        lambda: s.gate("policy", "allow", reason={"score": float("inf")}),
        lambda: s.action("propose_offer", {"a": 1}, call_id="c", error={"why": float("nan")}),
        lambda: s.state("after the refusals", {"a": 1}),
    ]
    return out


def main() -> None:
    ticks = itertools.count(1_700_000_000_000_000_000, 1_000)
    with Recorder(store=sys.argv[1], run_id="same", handle_signals=False, clock=lambda: next(ticks)) as rec:
        print("native" if NATIVE else "python")
        for i, call in enumerate(calls(rec)):
            try:
                call()
            except Exception as exc:  # compared between the two paths
                print(i, type(exc).__name__, exc)
        with rec.unit():  # events held by a unit block, then queued together
            s = rec.session("main")
            s.llm({"q": 2}, {"a": 2}, model="m")
            s.action("propose_offer", {"a": 2.0})
    try:
        s.action("propose_offer", {"a": 3})
    except Exception as exc:
        print("after close", type(exc).__name__, exc)


if __name__ == "__main__":
    main()
