"""``--json`` lists are written one value at a time, exactly as the whole list would be."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from sdbctl.cli._render import print_json, print_json_array
from sdbctl.recorders.importers import import_chat
from tests.conftest import CLI

VALUES: list[list[Any]] = [
    [],
    [{}],
    [{"a": [1, {"b": "x\ny"}], "when": dt.datetime(2026, 12, 6, tzinfo=dt.UTC)}, [], "text", None],
    [{"huge": 2**70, "map": {1: "a"}}],  # the standard library's writer: HUGEINT and a MAP
]


class _Out:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("values", VALUES)
def test_a_streamed_array_is_the_list_written_whole(values: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    whole, streamed = _Out(), _Out()
    monkeypatch.setattr(sys, "stdout", whole)
    print_json(values)
    monkeypatch.setattr(sys, "stdout", streamed)
    print_json_array(iter(values))
    assert streamed.buffer.getvalue() == whole.buffer.getvalue()


def test_show_full_json_of_a_long_conversation_is_every_request_whole(sdbctl: CLI, tmp_path: Path) -> None:
    """``show --full --json`` parses as one array holding each call's request whole."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "s"}]
    for k in range(40):
        messages += [{"role": "user", "content": f"q{k}"}, {"role": "assistant", "content": f"a{k}"}]
    log = tmp_path / "log.json"
    log.write_text(json.dumps({"id": "c", "messages": messages}))
    import_chat(tmp_path / ".sdb", [log], run_id="long")
    out = sdbctl("show", "long", "--full", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    requests = [r["payload"]["request"] for r in rows if r["kind"] == "llm"]
    assert [len(r["messages"]) for r in requests] == [2 * k + 2 for k in range(40)]
