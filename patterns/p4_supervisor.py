"""P4 supervisor + gate: restart what died, refuse what is out of policy before any side effect.

A :class:`Supervisor` runs a worker and restarts it when it raises, at most ``max_restarts`` times,
recording each failure as an ``error`` event. A :class:`PolicyGate` reads a versioned policy file
(the renewal policy's YAML) and is a boundary guard: it runs before every side effect and its
``gate`` events are named after the policy version that decided (``policy:v7``). All tagged ``P4``.

Divergence here means the gate decided differently (``gate_changed``: an action that passed is now
denied, or the reverse) or a worker needed another number of restarts.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sdbctl.sdb.boundary import GuardDecision, ValidAction
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import EventSink

TAG = "P4"


class PolicyError(SdbError):
    """A policy file that cannot be read or lacks a field the gate needs."""


def load_policy(path: Path | str) -> dict[str, Any]:
    """Read a policy YAML file; it must carry a ``version``."""
    try:
        policy = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: cannot read policy ({exc})") from None
    if not isinstance(policy, dict) or "version" not in policy:
        raise PolicyError(f"{path}: a policy needs a top-level 'version'")
    return policy


@dataclass
class PolicyGate:
    """The discount rules of a renewal policy as a boundary guard."""

    policy: Mapping[str, Any]

    @property
    def version(self) -> str:
        return str(self.policy["version"])

    @property
    def name(self) -> str:
        return f"policy:{self.version}"

    def cap_for(self, tenant: str | None) -> float:
        """The discount ceiling for ``tenant``: its override if it has one, else ``max_pct``."""
        discount = self.policy.get("discount", {})
        overrides = discount.get("overrides") or {}
        if tenant is not None and tenant in overrides:
            return float(overrides[tenant])
        return float(discount.get("max_pct", 0))

    def guard(self, tenant: str | None = None, field: str = "discount_pct") -> Callable[[ValidAction], GuardDecision]:
        """A guard that denies ``field`` over the tenant's cap and warns over ``warn_pct``."""
        cap = self.cap_for(tenant)
        warn = float(self.policy.get("discount", {}).get("warn_pct", cap))

        def check(action: ValidAction) -> GuardDecision:
            value = action.args.get(field)
            if not isinstance(value, int | float):
                return GuardDecision.ok(self.name)
            if value > cap:
                return GuardDecision.deny(
                    self.name,
                    f"discount {value:g}% over the {cap:g}% cap of policy {self.version}",
                    cap=cap,
                    tenant=tenant,
                )
            if value > warn:
                return GuardDecision.ok(self.name, f"warn: discount {value:g}% over {warn:g}%, sampled review")
            return GuardDecision.ok(self.name)

        return check


class Supervisor:
    """Runs a worker, restarting it after a failure at most ``max_restarts`` times."""

    def __init__(self, name: str, max_restarts: int = 2) -> None:
        self.name = name
        self.max_restarts = max_restarts

    async def run(
        self, sink: EventSink, worker: Callable[[int], Any | Awaitable[Any]], *, step: str | None = None
    ) -> Any:
        """Call ``worker(attempt)`` until it returns; re-raises after the last allowed restart."""
        attempt = 0
        while True:
            try:
                result = worker(attempt)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except Exception as exc:
                sink.error(
                    f"worker:{self.name}",
                    f"{type(exc).__name__}: {exc}",
                    step=step,
                    detail={"attempt": attempt, "max_restarts": self.max_restarts},
                    actor="supervisor",
                    pattern=TAG,
                )
                if attempt >= self.max_restarts:
                    raise
                attempt += 1
