"""A SIMULATED model for the Ray tests, as ``py:tests.ray_model:answer``: answers like
``sim:renewal@v1``, appends the key of every request it answers to ``$SDB_TEST_ASKED`` (one line per
answer, from any worker process), and once, at the ``$SDB_TEST_KILL_AT``-th answer, kills the worker
process it runs in with SIGKILL before answering, as a crashed node would."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from tests.llm_server import LLMServer, simulator_answer

_answer = simulator_answer("sim:renewal@v1")


def answer(request: dict[str, Any]) -> dict[str, Any]:
    asked = Path(os.environ["SDB_TEST_ASKED"])
    kill_at = int(os.environ.get("SDB_TEST_KILL_AT", "0"))
    marker = asked.with_suffix(".killed")
    if kill_at:
        count = len(asked.read_text().splitlines()) if asked.exists() else 0
        if count >= kill_at and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    key = LLMServer.key(request)
    with open(asked, "a", encoding="utf-8") as fh:  # O_APPEND: one whole line per write
        fh.write(key + "\n")
    return _answer(request)
