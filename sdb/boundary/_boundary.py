"""The boundary: propose -> verify -> normalize -> commit, or reject. Every step is recorded.

A :class:`Boundary` holds an agent's action vocabulary. :meth:`Boundary.cross` takes a model's raw
answer and, for each action in it, writes the ``action`` event (status ``ok``, ``parse_failed``,
``invalid`` or ``gated``), one ``gate`` event per guard decision, then either the ``effect`` of the
committed handler (or an ``error`` if the handler raised) or a typed ``reject`` gate event. Parent
links: llm -> action -> gate/effect.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

from sdbctl.sdb.boundary._actions import ActionSpec, FieldError, Handler, InvalidArguments
from sdbctl.sdb.boundary._crossing import EXECUTE, Crossing, Rejection, StopSession
from sdbctl.sdb.boundary._guards import Guard, GuardDecision, ValidAction
from sdbctl.sdb.boundary._proposal import ParseFailure, Proposal, parse_response
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import EventSink, action_digest

# How a crossing commits a valid, allowed action: run the handler ("execute"), record nothing more
# ("skip", for step-mode replay), or a callable that returns the effect to record (a served effect).
Commit = str | Callable[[ValidAction], Any]
F = TypeVar("F", bound=Handler)


class UnknownAction(SdbError):
    """A name that is not in the boundary's vocabulary."""


class Boundary:
    """An agent's action vocabulary and the rules for crossing it."""

    def __init__(self, name: str = "agent", guards: Iterable[Guard] = (), *, open_vocabulary: bool = False) -> None:
        self.name = name
        self.actions: dict[str, ActionSpec] = {}
        self.guards: list[Guard] = list(guards)
        # an open vocabulary accepts any action name with object arguments, unvalidated: for runs
        # whose agent code is not at hand (recorded by the proxy or an importer)
        self.open_vocabulary = open_vocabulary

    @overload
    def action(self, fn: F) -> F: ...

    @overload
    def action(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        critical: bool = False,
        pure: bool = False,
        rounding: Mapping[str, int] | None = None,
    ) -> Callable[[F], F]: ...

    def action(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        critical: bool = False,
        pure: bool = False,
        rounding: Mapping[str, int] | None = None,
    ) -> F | Callable[[F], F]:
        """Decorator: declare ``fn`` an action. ``@b.action`` or ``@b.action(critical=True, ...)``."""

        def register(f: F) -> F:
            spec = ActionSpec.from_function(f, name=name, critical=critical, pure=pure, rounding=rounding)
            self.actions[spec.name] = spec
            return f

        return register(fn) if fn is not None else register

    def spec(self, name: str) -> ActionSpec:
        try:
            return self.actions[name]
        except KeyError:
            raise UnknownAction(f"unknown action {name!r}; known: {', '.join(sorted(self.actions))}") from None

    def tools(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """OpenAI tool definitions of the actions (all, or the ones named)."""
        return [self.actions[n].tool() for n in (names or sorted(self.actions))]

    def verify(self, proposal: Proposal) -> ValidAction:
        """Validate and normalise one proposal; raises :class:`InvalidArguments` or :class:`UnknownAction`."""
        if self.open_vocabulary and proposal.name not in self.actions:
            if not isinstance(proposal.args, Mapping):
                raise InvalidArguments([FieldError("(arguments)", "expected an object")])
            args = dict(proposal.args)
            return ValidAction(proposal.name, args, action_digest(proposal.name, args), proposal.call_id)
        spec = self.spec(proposal.name)
        args = spec.normalize(spec.validate(proposal.args))
        return ValidAction(
            spec.name, args, action_digest(spec.name, args), proposal.call_id, critical=spec.critical, pure=spec.pure
        )

    async def cross(
        self,
        sink: EventSink,
        response: Any,
        *,
        request: Any = None,
        model: str | None = None,
        prompt: str | None = None,
        variables: Mapping[str, Any] | None = None,
        latency_ms: float | None = None,
        llm_seq: int | None = None,
        step: str | None = None,
        actor: str | None = None,
        pattern: str | None = None,
        guards: Iterable[Guard] = (),
        commit: Commit = "execute",
    ) -> list[Crossing]:
        """Take ``response`` across the boundary; one :class:`Crossing` per proposed action.

        With ``request`` (and ``model``), the ``llm`` event is recorded first; otherwise ``llm_seq``
        names the already recorded one, as the parent of the action events.
        """
        where: dict[str, Any] = {"step": step, "actor": actor, "pattern": pattern}
        if request is not None:
            llm_seq = sink.llm(
                request,
                response,
                model=model or "unknown",
                prompt=prompt,
                variables=variables,
                latency_ms=latency_ms,
                parent=None,
                **where,
            )
        found = parse_response(response)
        if isinstance(found, ParseFailure):
            seq = sink.action("?", {}, status="parse_failed", parent=llm_seq, error=found.reason, **where)
            rejection = Rejection("parse_failed", found.reason)
            self._record_rejection(sink, rejection, seq, where)
            return [Crossing("parse_failed", None, seq, llm_seq, rejection=rejection)]
        return [await self._cross_one(sink, p, llm_seq, where, [*self.guards, *guards], commit) for p in found]

    async def _cross_one(
        self,
        sink: EventSink,
        proposal: Proposal,
        llm_seq: int | None,
        where: dict[str, Any],
        guards: list[Guard],
        commit: Commit,
    ) -> Crossing:
        try:
            valid = self.verify(proposal)
        except (InvalidArguments, UnknownAction) as exc:
            errors = [e.as_dict() for e in exc.errors] if isinstance(exc, InvalidArguments) else []
            reason = str(exc) if isinstance(exc, UnknownAction) else f"arguments of {proposal.name!r} are invalid"
            args = proposal.args if isinstance(proposal.args, Mapping) else {"(arguments)": proposal.args}
            seq = sink.action(
                proposal.name,
                args,
                status="invalid",
                parent=llm_seq,
                call_id=proposal.call_id,
                error={"reason": reason, "fields": errors},
                **where,
            )
            rejection = Rejection("invalid", reason, proposal.name, proposal.call_id, errors)
            self._record_rejection(sink, rejection, seq, where)
            return Crossing("invalid", None, seq, llm_seq, rejection=rejection)

        decisions: list[GuardDecision] = []
        denied: GuardDecision | None = None
        for guard in guards:
            decision = guard(valid)
            if inspect.isawaitable(decision):
                decision = await decision
            decisions.append(decision)
            if not decision.allow:
                denied = decision
                break
        status = "gated" if denied else "ok"
        seq = sink.action(valid.name, valid.args, status=status, parent=llm_seq, call_id=valid.call_id, **where)
        for decision in decisions:
            sink.gate(
                decision.name,
                "allow" if decision.allow else "deny",
                decision.reason,
                parent=seq,
                **where,
            )
        if denied is not None:
            rejection = Rejection("gated", denied.reason or "denied", valid.name, valid.call_id, guard=denied.name)
            self._record_rejection(sink, rejection, seq, where)
            return Crossing("gated", valid, seq, llm_seq, tuple(decisions), rejection=rejection)

        if commit == "skip":
            return Crossing("ok", valid, seq, llm_seq, tuple(decisions))
        started = time.perf_counter()
        try:
            result = EXECUTE
            if callable(commit):
                result = commit(valid)
                if inspect.isawaitable(result):
                    result = await result
            if result is EXECUTE:
                result = await self.spec(valid.name).run(valid.args)
        except StopSession:
            raise
        except Exception as exc:  # a handler failure is recorded, never reported as success
            message = f"{type(exc).__name__}: {exc}"
            sink.error(
                valid.name, message, parent=seq, detail={"after_ms": (time.perf_counter() - started) * 1000}, **where
            )
            return Crossing("ok", valid, seq, llm_seq, tuple(decisions), error=message)
        effect_seq = sink.effect(valid.name, result, parent=seq, **where)
        return Crossing("ok", valid, seq, llm_seq, tuple(decisions), effect=result, effect_seq=effect_seq)

    @staticmethod
    def _record_rejection(sink: EventSink, rejection: Rejection, parent: int, where: dict[str, Any]) -> None:
        sink.gate("reject", "reject", rejection.reason, parent=parent, status=rejection.status, **where)
