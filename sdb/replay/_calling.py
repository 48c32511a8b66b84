"""Asking the model: one provider behind the response cache, the rate limit, retries and the timeout,
counted in the replay's progress. Both modes ask through it, so they pace and cache alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sdbctl.sdb.events import canonical_bytes
from sdbctl.sdb.providers import Completion, Provider, ProviderError
from sdbctl.sdb.redaction import load_redactor
from sdbctl.sdb.replay._cache import ResponseCache, cache_endpoint, cache_key
from sdbctl.sdb.replay._limits import Limiter, RateLimiter, RetryPolicy, call_with_retries
from sdbctl.sdb.replay._options import ReplayOptions
from sdbctl.sdb.replay._results import ReplayProgress


@dataclass(frozen=True)
class CachedCompletion(Completion):
    """An answer taken from a response cache, not from the model: its llm event says so
    (``$.replay.cached``), and the diff and gate count it."""


class Caller:
    """A provider wrapped with the cache, the rate limit, retries, the timeout and the counters."""

    def __init__(
        self,
        provider: Provider,
        opts: ReplayOptions,
        cache: ResponseCache | None,
        progress: ReplayProgress,
        limiter: Limiter | None = None,
        source: ResponseCache | None = None,
    ) -> None:
        self.provider = provider
        self.opts = opts
        self.cache = cache if opts.repeat == 1 else None  # repeats neither read nor write it
        self.source = source if opts.repeat == 1 else None  # --cache-from: read, never written
        self.progress = progress
        self.redactor = load_redactor()  # an answer is redacted before the cache or a run holds it
        self.limiter: Limiter = limiter or RateLimiter(opts.rpm)
        self.policy = RetryPolicy(attempts=max(1, opts.retries))
        self.spec = provider.spec
        self.endpoint = cache_endpoint(provider)  #: in every cache key: server A's answers never serve B
        self._known: dict[str, dict[str, Any]] = {}  # what look_up found, by key
        self._looked: set[str] = set()  # the keys look_up looked for (found or not), not answered since

    def key(self, request: Mapping[str, Any], *, seed: int, plain: bool = False) -> str:
        """The cache key ``request`` is looked up under ("" when no cache is read). ``plain``: the
        request is made of values read back from canonical JSON (a recorded step's), so its key need
        not check it (:func:`cache_key`)."""
        if self.cache is None and self.source is None:
            return ""
        return cache_key(self.spec, request, seed, self.endpoint, plain=plain)

    def look_up(self, keys: Iterable[str]) -> None:
        """Look up a batch of keys (:meth:`key`) about to be asked, in one query per cache instead of one
        per ask (~10 us of a step's CPU): ``ask(..., key=)`` then takes what was found, or asks the model
        for what was not. Replaces the previous batch's lookups; a key answered since is looked up again
        when asked, so two asks of one request in a batch still ask the model once where they did."""
        self._known.clear()
        self._looked.clear()
        wanted = set(keys)
        wanted.discard("")
        for where in (self.cache, self.source):
            if where is not None and wanted:
                found = where.get_many(wanted)
                self._known.update(found)
                self._looked.update(wanted)
                wanted.difference_update(found)

    def _cached(self, key: str) -> dict[str, Any] | None:
        """The completion cached under ``key``: as :meth:`look_up` found it, else from each cache in turn."""
        if key in self._looked:
            return self._known.get(key)
        for where in (self.cache, self.source):
            hit = where.get(key) if where is not None else None
            if hit is not None:
                return hit
        return None

    async def ask(
        self, request: dict[str, Any], *, seed: int, repeat: int, plain: bool = False, key: str | None = None
    ) -> Completion:
        """The model's answer to ``request``: from this machine's cache or the one named by
        ``--cache-from`` (a :class:`CachedCompletion`), else asked (paced, retried, cached). ``plain``:
        see :meth:`key`; ``key``: the request's key, where the caller made it (:meth:`look_up`)."""
        cache = self.cache
        if key is None:
            key = self.key(request, seed=seed, plain=plain)
        hit = self._cached(key) if key else None
        if hit is not None:
            self.progress.cached += 1
            return CachedCompletion(self.redactor.redact(hit["response"]), truth=hit.get("truth"))

        def retried(attempt: int, error: ProviderError, pause: float) -> None:
            self.progress.retried += 1

        async def once() -> Completion:
            self.progress.asked += 1
            done = await self.provider.complete(request, seed=seed, repeat=repeat)
            done = replace(done, response=self.redactor.redact(done.response))
            # cached the moment it arrives, before this coroutine yields: a process killed later (a
            # Ray worker, a SIGKILL) loses no answer it was given, and a resumed run asks nothing twice
            if cache is not None:  # a simulator's ground truth is kept with its answer
                cache.put(key, {"response": done.response, "truth": done.truth})
                self._looked.discard(key)  # answered now: a second ask of it in the batch finds it
            return done

        return await call_with_retries(
            once, policy=self.policy, limiter=self.limiter, timeout=self.opts.timeout, on_retry=retried
        )


def in_flight(opts: ReplayOptions, provider: Provider | None) -> int:
    """Model calls in flight: ``--concurrency``, capped by a provider that answers fewer at once
    (``max_concurrency``: a local model answers as many as the cores), so that a call queued behind
    the model does not spend its ``--timeout`` waiting."""
    most = getattr(provider, "max_concurrency", None)
    return min(opts.concurrency, int(most)) if most else opts.concurrency


def without_model(request: Mapping[str, Any]) -> bytes:
    """A request's identity apart from the model it names: the recorded answer to it fits any model."""
    return canonical_bytes({k: v for k, v in request.items() if k != "model"})
