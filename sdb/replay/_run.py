"""One replay of one source run: its options checked against the source (and the run being resumed),
its run created with the manifest that ``--resume`` reads, its mode run, its result made. The local
executor and each Ray shard run it alike."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import threading
import types
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from sdbctl.sdb.agents import Workload, check_simulator
from sdbctl.sdb.boundary import load_actions_setting
from sdbctl.sdb.errors import Interrupted, SchemaError, SdbError, UsageError
from sdbctl.sdb.events import MAX_REPEAT
from sdbctl.sdb.providers import resolve
from sdbctl.sdb.recording import Recorder, manifest_fields, new_run_id
from sdbctl.sdb.redaction import load_redactor, url_without_secrets
from sdbctl.sdb.replay._agent import choose_agent, no_agent
from sdbctl.sdb.replay._cache import CacheError, ResponseCache, cache_endpoint, cache_path, check_cache
from sdbctl.sdb.replay._calling import Caller, in_flight
from sdbctl.sdb.replay._job import Job
from sdbctl.sdb.replay._limits import Limiter
from sdbctl.sdb.replay._options import DEFAULT_SEED, MODES, RECORDED, ReplayOptions
from sdbctl.sdb.replay._results import ReplayProgress, ReplayResult, clock
from sdbctl.sdb.replay._session import repeat_of, replay_sessions
from sdbctl.sdb.replay._step import replay_steps
from sdbctl.sdb.replay._system import SystemChange
from sdbctl.sdb.store import RunManifest, RunWriter, Store, connect

#: saved options that say how the run asks (its answers depend on them): a resume takes them from the
#: command line (their defaults when not given) and refuses a saved value that differs; mode, repeat, seed apart
_RUN_OPTIONS = {"prompts": "--prompt", "on_divergence": "--on-divergence"}
#: saved options of how it was asked: a resume reads them unless the command line gives them
_PACING = ("concurrency", "rpm", "timeout", "retries", "cache")


def _shown(value: object) -> str:
    if isinstance(value, Mapping):
        return " ".join(f"{k}@{v}" for k, v in sorted(value.items())) or "(none)"
    return "(none)" if value is None or value == "" else str(value)


def _differs(flag: str, given: object, resume: str, stored: object, then: str) -> UsageError:
    return UsageError(f"{flag} {_shown(given)} differs from run {resume!r}, replayed with {_shown(stored)}: {then}")


def _passed(given: ReplayOptions) -> set[str]:
    """The options an API caller set: those that differ from their defaults."""
    default = ReplayOptions(model="")
    return {f.name for f in fields(ReplayOptions) if getattr(given, f.name) != getattr(default, f.name)}


#: what a resume says of a store's endpoint, wherever it refuses one
_NEVER_SENT = "sdbctl never sends credentials to an endpoint a store names"
#: llm or error events that only a session-mode replay writes (step mode marks each with its source step)
_SESSION_SIGNS = """SELECT count(*) FROM events WHERE run_id = $run AND (
    (kind IN ('llm', 'error') AND json_valid(payload) AND json_extract(payload, '$.replay.source_seq') IS NULL)
    OR (kind = 'state' AND name = 'replay:finished'))"""
_STEP_REPEATS = """SELECT max(try_cast(json_extract(payload, '$.replay.repeat') AS BIGINT)) FROM events
    WHERE run_id = $run AND kind IN ('llm', 'error') AND json_valid(payload)"""


def _written(store: Store, run_id: str, source_run: str) -> tuple[str | None, int | None]:
    """What the replay run ``run_id`` is, as its events say (never its manifest): its mode (None: it
    wrote no event yet) and the highest repeat index its events hold. Teacher-forced is the differ's
    one rule (:func:`sdb.diff.shape`); a run holding both modes' events is a :class:`SchemaError`."""
    from sdbctl.sdb.diff import shape

    con = connect(store, run_id)
    forced = shape(con, run_id).forced
    loose = con.execute(_SESSION_SIGNS, {"run": run_id}).fetchone()
    closed = bool(loose and loose[0])
    if forced and closed:
        raise SchemaError(
            f"run {run_id!r} holds events of both a step-mode and a session-mode replay: it cannot be "
            f"resumed (sdbctl rm {run_id} removes it)"
        )
    if forced:
        top = con.execute(_STEP_REPEATS, {"run": run_id}).fetchone()
        return "step", None if top is None or top[0] is None else int(top[0])
    ids = [
        r[0]
        for r in con.execute("SELECT DISTINCT session_id FROM events WHERE run_id = $run", {"run": run_id}).fetchall()
    ]
    if not ids:
        return None, None
    source_ids = {r[0] for r in connect(store, source_run).execute("SELECT DISTINCT session_id FROM events").fetchall()}
    repeats = [r for r in (repeat_of(i, source_ids) for i in ids) if r is not None]
    return "session", max(repeats, default=None)


def _what_it_is(
    store: Store, partial: RunManifest, saved: Mapping[str, Any], given: ReplayOptions, given_set: set[str]
) -> tuple[str, int]:
    """The mode and repeat of the partial replay ``partial``: the mode its events say (when it wrote
    none, the command line's, which its manifest must not contradict), the repeat its manifest saves,
    in range and above every repeat index of its events. A manifest that contradicts its events is
    damaged (:class:`SchemaError` naming it)."""
    resume = partial.run_id
    path = store.loc.path("runs", resume, "run.json")
    seen, highest = _written(store, resume, str(partial.source_run))
    claims = [partial.mode, saved.get("mode", partial.mode)]
    for claim in claims:
        if claim not in MODES:
            raise SchemaError(f"{path} says mode {_shown(claim)}, which is no replay mode: a damaged manifest")
        if seen is not None and claim != seen:
            raise SchemaError(
                f"{path} says mode {claim}, but its events are a {seen}-mode replay's: a damaged manifest, not resumed"
            )
    if seen is not None:
        mode = seen
        if "mode" in given_set and given.mode != seen:
            raise _differs("--mode", given.mode, resume, seen, f"its events are a {seen}-mode replay's")
    elif "mode" in given_set:
        mode = given.mode
        if mode != claims[1]:
            raise _differs("--mode", given.mode, resume, claims[1], "a resume completes the run as it began")
    else:
        mode = ReplayOptions(model="").mode
        if claims[1] != mode:
            raise UsageError(
                f"run {resume!r} wrote no events yet, and its run.json says mode {claims[1]}: a store never "
                f"chooses the mode; pass --mode {claims[1]} to resume it so, or replay anew"
            )
    repeat = saved.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
        raise SchemaError(
            f"{path}: its meta.replay.repeat {repeat!r} is no repeat a replay takes "
            f"(a whole number, at least 1 and at most {MAX_REPEAT})"
        )
    if partial.repeat is not None and partial.repeat != repeat:
        raise SchemaError(
            f"{path} says repeat {partial.repeat}, and its meta.replay.repeat {repeat}: a damaged manifest"
        )
    if highest is not None and highest >= repeat:
        raise SchemaError(
            f"{path} says repeat {repeat}, but its events hold repeat index {highest} (repeats count from 0): "
            "a damaged manifest, not resumed"
        )
    if "repeat" in given_set and given.repeat != repeat:
        raise _differs("--repeat", given.repeat, resume, repeat, "a resume completes the run as it began")
    return mode, repeat


def _resumed(
    store: Store, resume: str, given: ReplayOptions, source_run: str, passed: Collection[str] | None
) -> tuple[ReplayOptions, str]:
    """The options of the partial replay ``resume``, and its source run. A store is data, never
    configuration: the model and its base URL (where a credential goes, the file a local model loads)
    come from ``given`` only, and must be the run's; what the run is (mode, repeat) is what its events
    say (:func:`_what_it_is`); its prompt versions and its seed must be the run's; the agent is
    ``given``'s; how it is paced is ``given``'s where set, else the run's."""
    partial = store.manifest(resume)
    if partial.status == "complete":
        raise UsageError(f"run {resume!r} is complete; there is nothing to resume")
    saved = partial.meta.get("replay")
    if not isinstance(saved, Mapping) or not partial.source_run:
        raise UsageError(f"run {resume!r} is not a replay run, so it cannot be resumed")
    given_set = set(_passed(given) if passed is None else passed)
    model, url = saved.get("model"), saved.get("base_url")
    if not given.model:
        if url:
            raise UsageError(
                f"run {resume!r} was replayed with model {_shown(model)} and names an endpoint ({_shown(url)}): "
                f"a resume takes both from the command line only, and {_NEVER_SENT}: pass --model, and "
                "--base-url naming a server you trust"
            )
        raise UsageError(
            f"run {resume!r} was replayed with model {_shown(model)}: a store never chooses the model; "
            "pass --model naming the one you mean"
        )
    if given.model != model:
        then = "a store never chooses the model: resume it with the run's, or replay anew"
        raise _differs("--model", given.model, resume, model, then)
    if (url_without_secrets(given.base_url) or None) != (url or None):
        then = (
            f"the run names an endpoint, and {_NEVER_SENT}: pass --base-url naming a server you trust "
            "(a resume asks the server the run began with), or replay anew"
            if url
            else "a resume asks the server the run began with: resume it without --base-url, or replay anew"
        )
        raise _differs("--base-url", url_without_secrets(given.base_url), resume, url, then)
    named_run = store.manifest(source_run).run_id if source_run else partial.source_run
    if named_run != partial.source_run:
        raise UsageError(f"RUN {named_run} differs from run {resume!r}, a replay of {partial.source_run}")
    if given.run_id and given.run_id != partial.run_id:
        raise UsageError(f"--run-id {given.run_id} differs from the run being resumed, {partial.run_id}")
    values: dict[str, Any] = {}
    values["mode"], values["repeat"] = _what_it_is(store, partial, saved, given, given_set)
    for name, flag in _RUN_OPTIONS.items():
        stored = saved.get(name, getattr(ReplayOptions(model=""), name))
        if name == "prompts":
            ok = isinstance(stored, Mapping) and all(isinstance(x, str) for kv in stored.items() for x in kv)
            if not ok:
                raise UsageError(f"run {resume!r}: its run.json's meta.replay.prompts is not NAME -> VERSION")
            stored = dict(stored)
        # the command line's value (its default when not given), never the store's, which must agree
        if getattr(given, name) != stored:
            then = "a resume completes the run as it began, and a store never chooses it: pass it again"
            raise _differs(flag, getattr(given, name), resume, stored, then)
        values[name] = getattr(given, name)
    _same_system(resume, saved.get("system"), given.system)
    # the seed is the command line's (DEFAULT_SEED unless given), never the saved one, which must agree
    seed = given.seed if "seed" in given_set else None
    said = saved.get("seed")
    if said is not None and said != (DEFAULT_SEED if seed is None else seed):
        then = "a store never chooses the seed: pass --seed naming the one the run began with, or replay anew"
        raise _differs("--seed", seed, resume, said, then)
    values["seed"] = seed
    for name in _PACING:
        values[name] = getattr(given, name) if name in given_set else saved.get(name, getattr(given, name))
    if not isinstance(values["cache"], bool):
        raise UsageError(f"run {resume!r}: its run.json's meta.replay.cache is not true or false")
    try:
        opts = replace(given, **values, run_id=resume)
    except UsageError as exc:  # a saved value no replay takes
        raise UsageError(f"run {resume!r}: its run.json's meta.replay holds what no replay takes: {exc}") from None
    return opts, partial.source_run


def _system_key(saved: object) -> tuple[object, tuple[tuple[object, ...], ...]]:
    """What a ``meta.replay.system`` says, as compared: ``--system``'s digest and each ``--system-from``
    rule's AGENT and digests (the file names may differ: a file moved is the same prompt)."""
    if saved is None:
        return None, ()
    if not isinstance(saved, Mapping) or not isinstance(saved.get("system_from", []), list):
        raise ValueError("not a --system record")
    default = saved.get("system")
    rules = [r if isinstance(r, Mapping) else {} for r in saved.get("system_from") or []]
    return (
        default.get("xxh3") if isinstance(default, Mapping) else default,
        tuple((r.get("agent"), r.get("xxh3"), r.get("old_xxh3")) for r in rules),
    )


def _shown_system(saved: object) -> str:
    """``--system FILE (xxh3 D) --system-from AGENT=FILE (xxh3 D)``, or ``--system (none)``."""
    if not isinstance(saved, Mapping):
        return "--system (none)"
    default, rules = saved.get("system"), saved.get("system_from") or []
    shown = (
        [f"--system {_shown(default.get('file'))} (xxh3 {_shown(default.get('xxh3'))})"]
        if isinstance(default, Mapping)
        else []
    )
    shown += [
        f"--system-from {_shown(r.get('agent'))}={_shown(r.get('file'))} (xxh3 {_shown(r.get('xxh3'))})"
        for r in rules
        if isinstance(r, Mapping)
    ]
    return " ".join(shown) or "--system (none)"


def _same_system(resume: str, stored: object, given: SystemChange | None) -> None:
    """``--system`` and ``--system-from`` must be the run's, compared by digest: the files are read
    from the command line's paths, never from the names a manifest keeps (shown, never opened)."""
    mine = given.saved() if given is not None else None
    try:
        same = _system_key(mine) == _system_key(stored)
    except ValueError:
        raise UsageError(f"run {resume!r}: its run.json's meta.replay.system is not a --system record") from None
    if not same:
        raise UsageError(
            f"{_shown_system(mine)} differs from run {resume!r}, replayed with {_shown_system(stored)}: a resume "
            "completes the run as it began, and a store never chooses a file to read: pass the same files again"
        )


#: a model name the run's events may give ``--system`` alone: no spec parameters (``?base_url=``), no spaces
_PLAIN_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")


def own_model(store: Store, run_id: str, base_url: str | None) -> str:
    """The model ``--system`` without ``--model`` asks: the one the run's llm events name (their
    ``model`` column), as ``openai:NAME`` (a bare name too) or ``anthropic:NAME``, on the server
    ``--base-url`` names. A store never chooses an endpoint, a file or code: without ``--base-url``
    it is refused, and so is any other model (``llama:`` loads a file, ``py:`` runs code)."""
    if not base_url:
        raise UsageError(
            f"--system without --model asks run {run_id}'s own model on a server you name: pass --base-url URL "
            "(a store never chooses an endpoint), or --model SPEC"
        )
    rows = (
        connect(store, run_id)
        .execute("SELECT DISTINCT model FROM events WHERE kind = 'llm' AND model IS NOT NULL ORDER BY 1")
        .fetchall()
    )
    names = [str(r[0]) for r in rows]
    if len(names) != 1:
        raise UsageError(
            f"--system without --model: run {run_id}'s llm events name {len(names)} models "
            f"({', '.join(names) or 'none'}): pass --model naming the one to ask"
        )
    family, sep, name = names[0].partition(":")
    if not sep:
        family, name = "openai", names[0]
    if family not in ("openai", "anthropic") or not _PLAIN_MODEL.fullmatch(name):
        raise UsageError(
            f"--system without --model: run {run_id}'s model {names[0]!r} is no openai: or anthropic: model "
            "name; pass --model naming the one to ask"
        )
    return f"{family}:{name}"


def _agent_settings(source: RunManifest, opts: ReplayOptions, workload: Workload | None) -> tuple[int, dict[str, Any]]:
    """The seed (it draws the simulators' answers and the simulated world) and, in session mode, the
    agent's options (``{}`` in step mode): the command line's, else :data:`DEFAULT_SEED` and the
    workload's defaults. The source manifest's copies (``meta.agent_args``) are never obeyed: one that
    differs from what would be used, the user not having named it, is refused naming the flag."""
    args = source.meta.get("agent_args")
    claimed: Mapping[str, Any] = args if isinstance(args, Mapping) else {}
    where = f"run {source.run_id!r}'s run.json's meta.agent_args"
    seed = DEFAULT_SEED if opts.seed is None else opts.seed
    said = claimed.get("seed")
    if opts.seed is None and said is not None and said != seed:
        raise UsageError(
            f"{where}.seed says it was recorded with seed {_shown(said)}, and a store never chooses the seed: "
            f"pass --seed to replay with the seed you mean (default {DEFAULT_SEED})"
        )
    if opts.mode != "session" or workload is None:
        return seed, {}
    options = workload.options(dict(opts.agent_options or {}))
    said = claimed.get("options")
    if opts.agent_options is None and said is not None and said != options:
        shown = " ".join(f"{k}={v}" for k, v in sorted(said.items())) if isinstance(said, Mapping) else _shown(said)
        raise UsageError(
            f"{where}.options says its agent ran with {shown}, and a store never chooses the agent's options: "
            f"pass them (--spine) to run it so; its defaults are "
            + " ".join(f"{k}={v}" for k, v in sorted(options.items()))
        )
    return seed, options


def resume_args(run_id: str, opts: ReplayOptions) -> tuple[str, ...]:
    """The ``sdbctl`` arguments (the store's aside) that complete the partial replay ``run_id``: what a
    resume takes from the command line only (:func:`_resumed`): the model and its server, which a store
    never chooses, the agent's code, a read-only cache, and --allow-partial for a partial source; and
    what a run that wrote no event yet cannot tell (its mode, seed and the agent's options); and the
    prompt versions and --on-divergence, which a resume also takes from the command line only."""
    args = ["replay", "--resume", run_id, "--model", opts.model]
    if opts.base_url:
        args += ["--base-url", url_without_secrets(opts.base_url) or opts.base_url]
    if opts.mode != "step":
        args += ["--mode", opts.mode]
    for name, version in sorted(opts.prompts.items()):
        args += ["--prompt", f"{name}@{version}"]
    if opts.on_divergence != ReplayOptions(model="").on_divergence:
        args += ["--on-divergence", opts.on_divergence]
    if opts.seed is not None and opts.seed != DEFAULT_SEED:
        args += ["--seed", str(opts.seed)]
    if opts.agent_options and "spine" in opts.agent_options:
        args += ["--spine", str(opts.agent_options["spine"])]
    if opts.agent:
        args += ["--agent", opts.agent]
    if opts.system is not None:
        for rule in opts.system.rules:
            args += ["--system-from", f"{rule.agent}={rule.new.path}"]
        if opts.system.default is not None:
            args += ["--system", opts.system.default.path]
    if opts.cache_from:
        args += ["--cache-from", opts.cache_from]
    if opts.allow_partial:
        args.append("--allow-partial")
    return tuple(args)


def _run_until_ctrl_c(main: Coroutine[Any, Any, None], sigint: object) -> None:
    """``asyncio.run(main)``, where Ctrl-C cancels ``main`` at its next ``await`` rather than raising in
    whichever task runs then: the steps in flight end as cancelled (a step's events are one unit: none
    is half written), no task is left to print its traceback, and KeyboardInterrupt follows once the
    tasks have ended. A second Ctrl-C stops at once. ``sigint`` is the handler from before the
    recorder's: only Python's default one (Ctrl-C stops the program) is replaced so; an ignored SIGINT
    stays ignored, and a handler of the caller's keeps the recorder's chain."""
    if sigint is not signal.default_int_handler or threading.current_thread() is not threading.main_thread():
        asyncio.run(main)
        return
    pressed = False

    async def cancellable() -> None:
        nonlocal pressed
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert task is not None

        def on_sigint(signum: int, frame: types.FrameType | None) -> None:
            nonlocal pressed
            if pressed:
                raise KeyboardInterrupt
            pressed = True
            loop.call_soon_threadsafe(task.cancel)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            await main
        except asyncio.CancelledError:
            if not pressed:
                raise
        finally:
            signal.signal(signal.SIGINT, previous)

    asyncio.run(cancellable())
    if pressed:  # also when the replay ended before the cancel reached it: the run is closed partial
        raise KeyboardInterrupt


class Replayer:
    """One replay of one source run (see the package docstring); refuses a bad one before any call."""

    def __init__(
        self,
        store: Store,
        source_run: str,
        opts: ReplayOptions,
        *,
        resume: str | None = None,
        shard: str | None = None,
        sessions: frozenset[str] | None = None,
        limiter: Limiter | None = None,
        passed: Collection[str] | None = None,
        cache_file: Path | None = None,
    ) -> None:
        self.store = store
        self.resume = resume
        self.on_progress: Callable[[ReplayProgress], None] | None = None
        # one shard of a distributed replay: these sessions only, into the open run ``opts.run_id``
        self.shard = shard
        self.sessions = sessions
        self.limiter = limiter
        if resume is not None:  # ``passed``: the options the command line set (None: those not default)
            opts, source_run = _resumed(store, resume, opts, source_run, passed)
        if opts.run_id is None:  # known before the run is made: a Ctrl-C can name it
            opts = replace(opts, run_id=new_run_id())
        self.opts = opts
        self.source = store.manifest(source_run)
        self.source_run = self.source.run_id
        if self.source.status == "partial" and not opts.allow_partial:
            raise UsageError(
                f"run {self.source_run!r} is partial ({self.source.interrupted or 'its writer did not finish'}): "
                "a replay of half a run diffs as drift; complete it first, or pass --allow-partial"
            )
        self.notes: tuple[str, ...] = ()  #: what prepare() says before the run (one line each)
        if not opts.model:  # --system alone: the run's own model, on the server the command line names
            opts = self.opts = replace(opts, model=own_model(store, self.source_run, opts.base_url))
            where = url_without_secrets(opts.base_url)
            self.notes = (f"replay: asking run {self.source_run}'s own model, {opts.model}, at {where}",)
        self.workload = choose_agent(self.source.agent, opts.agent)
        self.seed, self.agent_options = _agent_settings(self.source, opts, self.workload)
        # settled here, so that a Ray shard and a resume are handed them, never the manifest's
        opts = self.opts = replace(opts, seed=self.seed, agent_options=self.agent_options or None)
        if opts.prompts:
            if self.workload is None:
                raise no_agent(self.source_run, self.source.agent, "--prompt needs the agent's prompt templates")
            for name, version in opts.prompts.items():
                self.workload.prompts.check(f"{name}@{version}")  # refused before any model call
        if opts.mode == "session" and self.workload is None:
            raise no_agent(self.source_run, self.source.agent, "--mode session runs the agent again")
        self.recorded = opts.model == RECORDED
        self.provider = (
            None if self.recorded else resolve(opts.model, {"base_url": opts.base_url} if opts.base_url else None)
        )
        check_simulator(opts.model, self.workload, f"run {self.source_run!r}")  # after resolve: typos first
        # this machine's, never the store's (see sdb.replay._cache); a Ray shard is handed the driver's
        self.cache_path = cache_file or cache_path(store)
        if opts.cache and not self.recorded:  # a damaged cache is refused before the run is created
            check_cache(self.cache_path, read_only=False)
        if opts.cache_from is not None:
            check_cache(Path(opts.cache_from), read_only=True)
        self.progress = ReplayProgress()
        self.redactor = load_redactor()
        load_actions_setting()  # a malformed [boundary] table is refused before the run is created

    def manifest_meta(self) -> dict[str, Any]:
        """What the run's manifest says of this replay (``meta.replay`` is what ``--resume`` reads)."""
        opts = self.opts
        saved: dict[str, Any] = {
            "model": opts.model,
            "prompts": dict(opts.prompts),
            "mode": opts.mode,
            "repeat": opts.repeat,
            "concurrency": opts.concurrency,
            "rpm": opts.rpm,
            "timeout": opts.timeout,
            "retries": opts.retries,
            "cache": opts.cache,
            "on_divergence": opts.on_divergence,
            "base_url": url_without_secrets(opts.base_url),  # a password in it never reaches the manifest
            "endpoint": cache_endpoint(self.provider),  # the server asked, as the cache keys name it (for rm)
            "seed": self.seed,
            "system": opts.system.saved() if opts.system is not None else None,  # names and digests
        }
        return {
            "source_run": self.source_run,
            "model": opts.model,
            "mode": opts.mode,
            "repeat": opts.repeat,
            "agent": self.source.agent,
            "prompts": [f"{k}@{v}" for k, v in sorted(opts.prompts.items())],
            "replay": saved,
            "redaction": self.redactor.names,  # what ran on the answers (and the cache)
        }

    def create_run(self) -> RunWriter:
        """Create the replay's run (manifest ``partial``) for shards to write into; the caller closes it."""
        meta, fields = manifest_fields(self.manifest_meta())
        return RunWriter.create(self.store, self.opts.run_id or new_run_id(), recorder="replay", meta=meta, **fields)

    def run(self, on_progress: Callable[[ReplayProgress], None] | None = None) -> ReplayResult:
        """Run the replay to its end, telling ``on_progress`` the counters as they change; interrupted,
        the run stays ``partial`` and the error propagates."""
        started = clock()
        self.on_progress = on_progress
        opts = self.opts
        sigint = signal.getsignal(signal.SIGINT)  # before the recorder puts its own in front
        rec = Recorder(
            store=self.store,
            meta=self.manifest_meta() if self.shard is None else {},
            run_id=self.resume or opts.run_id,
            resume=self.resume is not None,
            recorder="replay",
            shard=self.shard,
            handle_signals=self.shard is None,
        )
        caches: list[ResponseCache] = []
        try:
            with rec:
                if self.provider is not None and opts.cache:
                    caches.append(ResponseCache(self.cache_path))
                    if opts.cache_from is not None:
                        caches.append(ResponseCache(Path(opts.cache_from), read_only=True))
                caller = None
                if self.provider is not None:
                    cache, source = caches[0] if caches else None, caches[1] if caches[1:] else None
                    caller = Caller(self.provider, opts, cache, self.progress, self.limiter, source)
                job = Job(
                    store=self.store,
                    source=self.source,
                    opts=opts,
                    seed=self.seed,
                    workload=self.workload,
                    caller=caller,
                    rec=rec,
                    truth=rec.side_file("truth.jsonl"),
                    progress=self.progress,
                    tick=self._tick,
                    in_flight=in_flight(opts, self.provider),
                    sessions=self.sessions,
                    options=self.agent_options,
                    resuming=self.resume is not None or self.shard is not None,
                )
                _run_until_ctrl_c(self._main(job), sigint)
        except CacheError as exc:  # one line: the cache it names, and the run it leaves partial
            resume = shlex.join(["sdbctl", *resume_args(rec.run_id, opts)])
            raise CacheError(f"{exc}; run {rec.run_id!r} is left partial: resume it with {resume}") from None
        finally:
            for each in caches:
                each.close()
        return ReplayResult.of(
            run_id=rec.run_id,
            opts=opts,
            source_run=self.source_run,
            status=rec.status,  # partial when it wrote no event (a run of steps without content)
            progress=self.progress,
            sessions=job.outcomes.values(),
            started=started,
        )

    async def _main(self, job: Job) -> None:
        try:
            await (replay_steps(job) if self.opts.mode == "step" else replay_sessions(job))
        finally:
            close = getattr(self.provider, "aclose", None)
            if close is not None:
                await close()  # the provider's HTTP client belongs to this event loop

    def _tick(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def interrupted(self) -> Interrupted:
        """What a Ctrl-C left: the partial run and the command that resumes it."""
        run_id = self.resume or self.opts.run_id or ""
        try:
            status = self.store.manifest(run_id).status
        except SdbError:  # stopped before its run was made
            return Interrupted(f"the replay stopped before its run {run_id} was created: nothing was written")
        if status == "complete":
            return Interrupted(f"run {run_id} was complete already")
        p = self.progress
        done = f" ({p.done}/{p.total} model calls)" if p.total else ""
        return Interrupted(f"run {run_id} is left partial{done}", "resume it with", resume_args(run_id, self.opts))
