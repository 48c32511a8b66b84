"""Session mode (closed loop): the agent runs again on the recorded inputs. An action identical (same
digest) to a recorded one gets the recorded effect, and so does a human question identical to a
recorded one; at the first action with no recorded effect the session stops (or, with
``on_divergence="continue"``, goes on through handlers marked ``pure``). A session's events are
buffered and written as one unit at its end, so an interrupted replay leaves no half session behind
and ``--resume`` runs it again from the start."""

from __future__ import annotations

import asyncio
import copy
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import xxhash

from sdbctl.sdb.agents import AgentContext, SessionItem, Workload
from sdbctl.sdb.boundary import EXECUTE, StopSession, ValidAction
from sdbctl.sdb.errors import SdbError, UsageError
from sdbctl.sdb.events import canonical_bytes, digest, with_requests
from sdbctl.sdb.providers import Completion, Provider, ProviderError
from sdbctl.sdb.recording import Session
from sdbctl.sdb.replay._calling import CachedCompletion, Caller, without_model
from sdbctl.sdb.replay._job import Job
from sdbctl.sdb.replay._options import RECORDED
from sdbctl.sdb.store import Store, connect, query_arrow


@dataclass
class _Recorded:
    """One recorded session as its replay consults it: answers by request, effects by action digest,
    human answers by question, and the digests of its actions in order."""

    answers: defaultdict[bytes, deque[Any]] = field(default_factory=lambda: defaultdict(deque))
    effects: defaultdict[int, deque[Any]] = field(default_factory=lambda: defaultdict(deque))
    humans: defaultdict[bytes, deque[Any]] = field(default_factory=lambda: defaultdict(deque))
    actions: list[int] = field(default_factory=list)
    digest_of: dict[int, int] = field(default_factory=dict)  #: an action's seq -> its digest
    prompts: dict[str, str] = field(default_factory=dict)  #: template name -> the version its llm events name


def _answer_key(request: Mapping[str, Any]) -> bytes:
    """The key of a recorded answer: a digest of its request apart from the model, so that a long
    conversation's session holds 16 bytes per call, not its requests' text."""
    return xxhash.xxh3_128_digest(without_model(request))


def _recorded(store: Store, run_id: str) -> defaultdict[str, _Recorded]:
    """Every session of ``run_id`` as its replay consults it."""
    rows = query_arrow(
        connect(store, run_id),
        "SELECT session_id, seq, kind, name, parent, digest, prompt, payload FROM events "
        "WHERE kind IN ('llm', 'action', 'effect', 'input') ORDER BY session_id, seq",
    )
    book: defaultdict[str, _Recorded] = defaultdict(_Recorded)
    listed = rows.to_pylist()
    llm = [row for row in listed if row["kind"] == "llm"]
    requests = {(row["session_id"], row["seq"]): request for row, _, request in with_requests(llm, f"run {run_id}")}
    for row in listed:
        entry = book[row["session_id"]]
        body = orjson.loads(row["payload"])
        if row["kind"] == "llm":
            request = requests[(row["session_id"], row["seq"])]
            entry.answers[_answer_key(request or {})].append(body.get("response"))
            name, at, version = (row["prompt"] or "").partition("@")
            if at:
                entry.prompts.setdefault(name, version)  # the first a session names (one, as agents ask)
        elif row["kind"] == "action":
            entry.digest_of[row["seq"]] = int(row["digest"])
            entry.actions.append(int(row["digest"]))
        elif row["kind"] == "effect" and row["parent"] in entry.digest_of:
            entry.effects[entry.digest_of[row["parent"]]].append(body.get("result"))
        elif row["kind"] == "input" and row["name"] == "human_decision":
            entry.humans[canonical_bytes(body.get("question"))].append(body.get("answer"))
    return book


def _prompt_versions(run_id: str, workload: Workload, book: Mapping[str, _Recorded]) -> dict[str, str]:
    """The template versions the source run used, as its llm events name them (never its manifest's
    copy), for every template of the agent's that names one version over the run; a version the
    agent's templates lack is refused before any model call."""
    seen: defaultdict[str, set[str]] = defaultdict(set)
    for entry in book.values():
        for name, version in entry.prompts.items():
            seen[name].add(version)
    known = set(workload.prompts.names())
    for name in sorted(set(seen) & known):
        for version in sorted(seen[name]):
            try:
                workload.prompts.check(f"{name}@{version}")
            except SdbError as exc:
                raise UsageError(f"run {run_id!r}: its llm events name {name}@{version}: {exc}") from None
    return {name: next(iter(versions)) for name, versions in seen.items() if name in known and len(versions) == 1}


def replayed_id(session_id: str, repeat: int) -> str:
    """The session id of a session-mode replay: the source's, with ``#rK`` for repeat K >= 1."""
    return session_id if repeat == 0 else f"{session_id}#r{repeat}"


def repeat_of(replayed: str, source_ids: Collection[str]) -> int | None:
    """The repeat that :func:`replayed_id` named ``replayed``, a session of a replay of a run whose
    sessions are ``source_ids`` (None: no session of that run's)."""
    if replayed in source_ids:
        return 0
    session_id, mark, repeat = replayed.rpartition("#r")
    if mark and repeat.isdigit() and repeat.isascii() and session_id in source_ids:
        return int(repeat)
    return None


@dataclass(frozen=True)
class _Finished:
    """A session the attempt being resumed wrote whole, as that attempt counted it."""

    steps: int  #: its model steps
    actions: list[int]  #: the digests of its actions, in order
    stopped: bool  #: stopped at a divergence
    failed: bool  #: ended by a provider error


def _finished(job: Job) -> dict[str, _Finished]:
    """The sessions the run already holds whole (resuming: each ends in ``replay:finished``, whose
    payload says whether it stopped or failed), with their model steps and actions."""
    if not job.resuming:
        return {}
    end = "kind = 'state' AND name = 'replay:finished'"
    rows = query_arrow(
        connect(job.store, job.rec.run_id),
        "SELECT session_id, count(*) FILTER (WHERE kind = 'llm') AS steps, "
        "list(digest ORDER BY seq) FILTER (WHERE kind = 'action') AS actions, "
        f"bool_or({end} AND json_extract(payload, '$.stopped') IS NOT NULL) AS stopped, "
        f"bool_or({end} AND json_extract(payload, '$.error') IS NOT NULL) AS failed "
        f"FROM events GROUP BY 1 HAVING bool_or({end})",
    ).to_pylist()
    return {
        str(r["session_id"]): _Finished(
            int(r["steps"]), [int(d) for d in r["actions"] or ()], bool(r["stopped"]), bool(r["failed"])
        )
        for r in rows
    }


async def replay_sessions(job: Job) -> None:
    """Run the agent again on every source session (of the shard's sessions), ``repeat`` times each."""
    workload = job.workload
    assert workload is not None
    options = job.options  # the command line's or the workload's defaults, never the manifest's
    source_ids = query_arrow(connect(job.store, job.source.run_id), "SELECT DISTINCT session_id FROM events")
    ids = source_ids.column("session_id").to_pylist()
    wanted = set(ids) if job.sessions is None else set(ids) & job.sessions
    # as many as the recording had: a workload may make more sessions than its data has rows
    items = [i for i in workload.sessions(len(ids), job.seed, options) if i.session_id in wanted]
    finished = _finished(job)
    book = _recorded(job.store, job.source.run_id)
    todo = []
    for item, repeat in ((i, r) for i in items for r in range(job.opts.repeat)):
        done = finished.get(replayed_id(item.session_id, repeat))
        if done is None:
            todo.append((item, repeat))
        else:  # counted as the attempt that wrote it counted it: a resumed run's counts are the whole run's
            outcome = job.outcome(item.session_id, repeat)
            outcome.status, outcome.resumed_steps = "resumed", done.steps
            outcome.divergences = int(done.actions != book[item.session_id].actions)
            outcome.errors = int(done.failed)
            job.progress.divergences += outcome.divergences
            job.progress.errors += outcome.errors
            job.progress.stopped_sessions += int(done.stopped)
    job.progress.total = len(items) * job.opts.repeat
    job.progress.skipped = job.progress.done = job.progress.total - len(todo)
    job.tick()
    loop = _SessionReplay(job, workload, options, book, _prompt_versions(job.source.run_id, workload, book))
    await asyncio.gather(*(loop.one(i, r) for i, r in todo))


class _SessionReplay:
    """The closed loop over one source run: each session's agent served from its recorded session."""

    def __init__(
        self,
        job: Job,
        workload: Workload,
        options: Any,
        book: defaultdict[str, _Recorded],
        prompts: Mapping[str, str],
    ) -> None:
        self.job = job
        self.workload = workload
        self.options = options
        self.book = book
        self.prompts = prompts  #: the versions the source run used (its events); a session's own go first
        self.gate = asyncio.Semaphore(job.in_flight)

    async def one(self, item: SessionItem, repeat: int) -> None:
        """Run session ``item``'s repeat ``repeat`` to its end or its stop, and write it as one unit."""
        job = self.job
        async with self.gate:
            entry = self.book[item.session_id]
            sink = _Buffer(replayed_id(item.session_id, repeat))
            outcome = job.outcome(item.session_id, repeat)
            try:
                terminal = await self.workload.run_session(self._context(entry, sink, repeat), item)
                sink.state("replay:finished", {"terminal": terminal})
            except StopSession as stop:
                job.progress.stopped_sessions += 1
                outcome.status, outcome.reason = "stopped", str(stop)
                sink.gate("replay", "stop", str(stop), status="gated")
                sink.state("replay:finished", {"terminal": None, "stopped": str(stop)})
            except ProviderError as exc:
                job.progress.error(exc, str(exc))
                outcome.status, outcome.reason, outcome.errors = "failed", str(exc), 1
                sink.error("provider", str(exc), detail={"status": exc.status, "kind": exc.kind})
                sink.state("replay:finished", {"terminal": None, "error": str(exc)})
            with job.rec.unit():
                sink.write_to(job.rec.session(sink.session_id))
            job.rec.forget_session(sink.session_id)  # written whole: its requests need not be kept
            outcome.steps = sink.steps
            if sink.digests != entry.actions:
                job.progress.divergences += 1
                outcome.divergences = 1
            job.progress.done += 1
            job.tick()

    def _context(self, entry: _Recorded, sink: _Buffer, repeat: int) -> AgentContext:
        """What the agent runs with: the recorded effects, human answers and (``recorded``) answers."""
        job = self.job
        effects = {k: deque(v) for k, v in entry.effects.items()}
        humans = {k: deque(v) for k, v in entry.humans.items()}

        def serve(valid: ValidAction) -> Any:
            queue = effects.get(valid.digest)
            if queue:
                return queue.popleft()
            if job.opts.on_divergence == "continue" and valid.pure:
                return EXECUTE
            raise StopSession(f"no recorded effect for {valid.name} (digest {valid.digest:016x})")

        def humans_for(decider: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], Any]:
            def recorded(question: Mapping[str, Any]) -> Any:
                queue = humans.get(canonical_bytes(dict(question)))
                if queue:
                    return queue.popleft()
                raise StopSession("this question was never put to a human in the recorded run")

            return recorded

        answers = {k: deque(v) for k, v in entry.answers.items()}
        provider: Provider = _SessionProvider(answers, job.caller, job.seed, repeat, sink.cached)
        return AgentContext(
            sink=sink,
            model=provider,
            prompts=self.workload.prompts,
            seed=job.seed,
            repeat=repeat,
            prompt_versions={**self.prompts, **entry.prompts, **self.job.opts.prompts},  # --prompt last: obeyed
            options=self.options,
            truth=job.truth,
            commit=serve,
            humans=humans_for,
        )


class _Buffer:
    """A session sink that keeps its events until :meth:`write_to`, and the digests of its actions.

    Arguments are copied when recorded, as the recorder serialises them when called."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.digests: list[int] = []
        self.steps = 0  #: llm events kept
        self.cached: list[Any] = []  #: the responses a cache answered (by identity), kept alive here

    def _keep(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        self.calls.append((method, copy.deepcopy(args), copy.deepcopy(kwargs)))
        return len(self.calls) - 1

    def input(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("input", args, kwargs)

    def llm(self, *args: Any, **kwargs: Any) -> int:
        self.steps += 1
        response = args[1] if len(args) > 1 else kwargs.get("response")
        if any(response is hit for hit in self.cached):  # the agent records the answer it was given
            kwargs["replay"] = {**(kwargs.get("replay") or {}), "cached": True}
        return self._keep("llm", args, kwargs)

    def action(self, name: str, args: Any, **kwargs: Any) -> int:
        self.digests.append(digest(name, canonical_bytes(args)))
        return self._keep("action", (name, args), kwargs)

    def gate(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("gate", args, kwargs)

    def effect(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("effect", args, kwargs)

    def state(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("state", args, kwargs)

    def error(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("error", args, kwargs)

    def write_to(self, session: Session) -> None:
        for method, args, kwargs in self.calls:
            getattr(session, method)(*args, **kwargs)


class _SessionProvider:
    """The model as one replayed session sees it: the recorded answers (``recorded``), or the real
    provider through the engine's cache, limits and retries."""

    def __init__(
        self, answers: dict[bytes, deque[Any]], caller: Caller | None, seed: int, repeat: int, cached: list[Any]
    ) -> None:
        self.answers = answers
        self.caller = caller
        self.seed = seed
        self.repeat = repeat
        self.cached = cached  #: the session's sink marks the llm event of each of these responses as cached
        self.spec = caller.spec if caller is not None else RECORDED

    async def complete(self, request: dict[str, Any], *, seed: int = 0, repeat: int = 0) -> Completion:
        if self.caller is not None:
            done = await self.caller.ask(request, seed=self.seed, repeat=self.repeat)
            if isinstance(done, CachedCompletion):
                self.cached.append(done.response)
            return done
        queue = self.answers.get(_answer_key(request))
        if not queue:
            raise StopSession("the agent asked a question the recorded run never asked")
        return Completion(queue.popleft())
