"""The boundary: parsing every answer shape, validation, guards, normalisation, commit and reject."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.boundary import Boundary, GuardDecision, ParseFailure, Proposal, ValidAction, parse_response
from sdbctl.sdb.events import action_digest, read_events
from sdbctl.sdb.store import Store

SENT: list[dict[str, Any]] = []
ARGS_TEXT = '{"customer_id": "C-1", "discount_pct": 10}'


def make_boundary() -> Boundary:
    b = Boundary("renewal")

    @b.action(critical=True, rounding={"discount_pct": 0})
    def send_offer(customer_id: str, discount_pct: float, channel: str = "email") -> dict[str, Any]:
        """Send a renewal offer."""
        SENT.append({"customer_id": customer_id, "discount_pct": discount_pct})
        return {"sent": True}

    @b.action(pure=True)
    async def lookup(customer_id: str) -> dict[str, str]:
        return {"customer_id": customer_id}

    @b.action
    def explode(n: int) -> None:
        raise RuntimeError("downstream is down")

    return b


def openai(name: str, arguments: str, call_id: str = "call-1") -> dict[str, Any]:
    return {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
                    ],
                }
            }
        ]
    }


def cap(limit: float) -> Any:
    def guard(action: ValidAction) -> GuardDecision:
        pct = action.args.get("discount_pct", 0)
        if pct > limit:
            return GuardDecision.deny("policy:v7", f"discount {pct}% over the {limit}% cap")
        return GuardDecision.ok("policy:v7")

    return guard


@pytest.mark.parametrize(
    "response",
    [
        openai("send_offer", '{"customer_id": "C-1", "discount_pct": 10}'),
        {
            "content": [
                {"type": "text", "text": "ok"},
                {
                    "type": "tool_use",
                    "id": "call-1",
                    "name": "send_offer",
                    "input": {"customer_id": "C-1", "discount_pct": 10},
                },
            ]
        },
        'Here you go:\n```json\n{"name": "send_offer", "arguments": {"customer_id": "C-1", "discount_pct": 10}}\n```',
        'I propose {"tool": "send_offer", "args": {"customer_id": "C-1", "discount_pct": 10}} as the action.',
        {
            "choices": [
                {
                    "message": {
                        "content": '{"name": "send_offer", "arguments": '
                        '"{\\"customer_id\\": \\"C-1\\", \\"discount_pct\\": 10}"}'
                    }
                }
            ]
        },
    ],
    ids=["openai", "anthropic", "fenced-text", "bare-text", "openai-content-json"],
)
def test_every_answer_shape_parses_to_the_same_proposal(response: Any) -> None:
    found = parse_response(response)
    assert isinstance(found, list) and len(found) == 1
    assert (found[0].name, found[0].args) == ("send_offer", {"customer_id": "C-1", "discount_pct": 10})


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (openai("send_offer", '{"customer_id": "C-1", '), "not valid JSON"),
        ({"choices": [{"message": {"content": "I would rather not."}}]}, "no JSON object"),
        ({"choices": []}, "no choices"),
        ('{"arguments": {}}', "no action name"),
        (42, "not a chat completion"),
    ],
)
def test_unreadable_answers_fail_with_a_reason(response: Any, reason: str) -> None:
    found = parse_response(response)
    assert isinstance(found, ParseFailure) and reason in found.reason


def test_verify_coerces_normalises_and_digests() -> None:
    b = make_boundary()
    valid = b.verify(Proposal("send_offer", {"customer_id": "  C-1 ", "discount_pct": "12.6"}))
    assert valid.args == {"customer_id": "C-1", "discount_pct": 13.0, "channel": "email"}
    assert valid.digest == action_digest("send_offer", {"channel": "email", "customer_id": "C-1", "discount_pct": 13})
    assert valid.critical and not valid.pure
    tool = b.tools(["send_offer"])[0]["function"]
    assert tool["name"] == "send_offer" and tool["parameters"]["required"] == ["customer_id", "discount_pct"]


def _cross(b: Boundary, store: Path, response: Any, **kw: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    async def go() -> list[Any]:
        with Recorder(store=store, run_id="b") as rec:
            s = rec.session("s")
            return await b.cross(s, response, request={"messages": []}, model="m", step="d30", pattern="P4", **kw)

    crossings = asyncio.run(go())
    events = read_events(Store.open(store).part_paths("b")).to_pylist()
    return crossings, events


def test_commit_runs_the_handler_and_links_events(store: Path) -> None:
    SENT.clear()
    (c,), events = _cross(
        make_boundary(), store, openai("send_offer", '{"customer_id": "C-1", "discount_pct": 10}'), guards=[cap(30)]
    )
    assert c.committed and c.effect == {"sent": True} and SENT == [{"customer_id": "C-1", "discount_pct": 10.0}]
    assert [(e["kind"], e["name"], e["status"], e["parent"]) for e in events] == [
        ("llm", "chat", "ok", None),
        ("action", "send_offer", "ok", 0),
        ("gate", "policy:v7", "ok", 1),
        ("effect", "send_offer", "ok", 1),
    ]
    assert all(e["step"] == "d30" and e["pattern"] == "P4" for e in events)


def test_gate_denies_with_reason_and_nothing_is_committed(store: Path) -> None:
    SENT.clear()
    (c,), events = _cross(
        make_boundary(), store, openai("send_offer", '{"customer_id": "C-1", "discount_pct": 45}'), guards=[cap(30)]
    )
    assert c.status == "gated" and not c.committed and SENT == []
    assert c.rejection is not None and c.rejection.guard == "policy:v7" and "over the 30" in c.rejection.reason
    message = c.rejection.as_tool_message()
    assert (
        message["role"] == "tool" and message["tool_call_id"] == "call-1" and "REJECTED (gated)" in message["content"]
    )
    kinds = [(e["kind"], e["name"], e["status"]) for e in events]
    assert kinds == [
        ("llm", "chat", "ok"),
        ("action", "send_offer", "gated"),
        ("gate", "policy:v7", "gated"),
        ("gate", "reject", "gated"),
    ]
    assert not any(e["kind"] == "effect" for e in events)


def test_invalid_arguments_are_rejected_with_field_errors(store: Path) -> None:
    (c,), events = _cross(
        make_boundary(), store, openai("send_offer", '{"customer_id": "C-1", "discount_pct": "lots"}')
    )
    assert c.status == "invalid" and c.rejection is not None
    assert c.rejection.errors[0]["path"] == "discount_pct"
    action = next(e for e in events if e["kind"] == "action")
    payload = json.loads(action["payload"])
    assert action["status"] == "invalid" and payload["error"]["fields"][0]["path"] == "discount_pct"


def test_unknown_action_and_parse_failure_are_rejected(store: Path) -> None:
    (c,), _ = _cross(make_boundary(), store, openai("delete_everything", "{}"))
    assert c.status == "invalid" and "unknown action 'delete_everything'" in c.rejection.reason
    (c2,), events = _cross(make_boundary(), store.parent / "s2", {"choices": [{"message": {"content": "no idea"}}]})
    assert c2.status == "parse_failed"
    assert [(e["kind"], e["status"]) for e in events][1:] == [("action", "parse_failed"), ("gate", "parse_failed")]


def test_handler_failure_is_an_error_event_not_a_success(store: Path) -> None:
    (c,), events = _cross(make_boundary(), store, openai("explode", '{"n": 1}'))
    assert not c.committed and "downstream is down" in (c.error or "")
    assert [e["kind"] for e in events] == ["llm", "action", "error"]


def test_skip_commit_records_no_effect(store: Path) -> None:
    SENT.clear()
    (c,), events = _cross(
        make_boundary(), store, openai("send_offer", '{"customer_id": "C-1", "discount_pct": 5}'), commit="skip"
    )
    assert c.status == "ok" and SENT == [] and [e["kind"] for e in events] == ["llm", "action"]
