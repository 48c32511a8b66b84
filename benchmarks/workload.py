"""Event streams for the benchmarks: the sample renewal agent's six events per real Telco customer.

Payload objects are built before any timing starts, so the benchmarks time the recorders, not this.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sdbctl.fixtures.sample_run import MODEL, OFFER_TOOL, PROMPT, render_prompt, simulate_offer_model
from sdbctl.fixtures.telco import customers

EVENTS_PER_SESSION = 6


@dataclass(frozen=True)
class Episode:
    """One customer's episode, ready to be recorded: everything the six calls need."""

    session_id: str
    contract: dict[str, Any]
    request: dict[str, Any]
    response: dict[str, Any]
    args: dict[str, Any]


def episodes(n_events: int) -> list[Episode]:
    """Enough episodes for ``n_events`` events, cycling over the 7,043 real customers."""
    base = []
    for c in customers():
        response = simulate_offer_model(c)
        args = json.loads(response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        request = {"model": MODEL, "messages": render_prompt(c), "tools": [OFFER_TOOL], "temperature": 0.2}
        base.append((c.customer_id, c.as_payload(), request, response, args))
    needed = -(-n_events // EVENTS_PER_SESSION)
    return [
        Episode(f"{cid}#{i // len(base)}", contract, request, response, args)
        for i in range(needed)
        for cid, contract, request, response, args in [base[i % len(base)]]
    ]


def actions(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """``n`` (session id, action args) pairs: the hot path of a recording."""
    eps = episodes(n * EVENTS_PER_SESSION)
    for i in range(n):
        yield eps[i].session_id, eps[i].args


__all__ = ["EVENTS_PER_SESSION", "PROMPT", "Episode", "actions", "episodes"]
