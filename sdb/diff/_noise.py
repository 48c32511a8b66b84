"""A noise floor is the base's model against itself: a ``--noise`` run of another model would make a real
drift read as noise. Which models a run asked is read from its events (the llm events' ``model``
column), never from its manifest, and compared by identity: a spec's options (``?noise=0.05``,
``?temperature=0.7&seed=3``) and the provider it went through (``openai:gpt-4o`` as a replay names it,
``gpt-4o`` as an SDK recording may) do not make another model.

What the column holds: ``sim:NAME@VERSION[?noise=X]`` (simulators), ``openai:MODEL`` (the recording
proxy, ``import chat``, a replay with ``--model openai:MODEL``), ``anthropic:MODEL``,
``llama:MODEL[?k=v...]`` (a local model; a ``.gguf`` file by its absolute path), ``PROVIDER:MODEL``
(an OpenTelemetry import: ``gen_ai.provider.name``), whatever an SDK recording was given, and
``unknown`` or ``chat`` where the source named none. A step replay with ``--model recorded`` writes the
model of the recorded step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.store import Store, connect
from sdbctl.sdb.text import visible

# the prefixes that name the way to a model, not the model: sdbctl's provider families, and the
# OpenTelemetry GenAI provider names an import writes (gen_ai.provider.name / gen_ai.system)
_PROVIDERS = frozenset(
    {
        "openai",
        "anthropic",
        "llama",
        "py",
        "aws.bedrock",
        "azure.ai.inference",
        "azure.ai.openai",
        "cohere",
        "deepseek",
        "gcp.gemini",
        "gcp.gen_ai",
        "gcp.vertex_ai",
        "groq",
        "ibm.watsonx.ai",
        "mistral_ai",
        "perplexity",
        "x_ai",
    }
)
# what the column holds where the source named no model
_NO_MODEL = frozenset({"", "unknown", "chat"})


def model_identity(spec: str) -> str:
    """The model ``spec`` names, without its options and its provider's prefix (``sim:`` stays: a
    simulator is reached no other way), lower case: ``openai:GPT-4o?temperature=1`` -> ``gpt-4o``."""
    body = spec.strip().partition("?")[0].strip().lower()
    family, sep, rest = body.partition(":")
    return rest if sep and family in _PROVIDERS and rest else body


def run_models(con: Any, run_id: str) -> list[str]:
    """The identities of the models ``run_id``'s llm events name (none named: an empty list)."""
    rows = con.execute("SELECT DISTINCT model FROM events WHERE run_id = ? AND kind = 'llm'", [run_id]).fetchall()
    return _identities(r[0] for r in rows)


def repeat_models(con: Any, run_id: str, repeat: str) -> dict[int, list[str]]:
    """Per repeat (``repeat``: the SQL expression of an event's repeat index), the identities of the
    models its llm events name, as :func:`run_models` reads them: every repeat a run holds is a key."""
    found: dict[int, list[str]] = {}
    for rep, models in con.execute(
        f"SELECT {repeat} AS rep, list(DISTINCT model) FILTER (WHERE kind = 'llm') FROM events "
        "WHERE run_id = ? GROUP BY 1",
        [run_id],
    ).fetchall():
        found[int(rep)] = _identities(models or ())
    return found


def _identities(specs: Iterable[str | None]) -> list[str]:
    return sorted({model_identity(s) for s in specs if s is not None} - _NO_MODEL)


def check_self_replay(store: Store, base: str, noise: str) -> str | None:
    """Refuse a ``--noise`` run whose events name other models than the base's (a one-line
    :class:`SdbError` naming both sets); returns what to say beside the noise floor when the base's
    events name no model to compare with (a tool-call log), else None."""
    noise = store.manifest(noise).run_id
    con = connect(store, runs=(base, noise))
    base_models, noise_models = run_models(con, base), run_models(con, noise)
    if not base_models:
        return "its model could not be checked: the base's events name none"
    if noise_models != base_models:
        raise SdbError(
            f"noise run {noise!r} is not a self-replay of the base {base!r}: its events name model "
            f"{listed(noise_models)}, the base's {listed(base_models)}; replay the base with its own model "
            "for a noise floor"
        )
    base_prompts, noise_prompts = run_prompts(con, base), run_prompts(con, noise)
    if noise_prompts != base_prompts:  # another prompt version is a change, not the model's own noise
        raise SdbError(
            f"noise run {noise!r} is not a self-replay of the base {base!r}: its events name prompt "
            f"{listed(noise_prompts)}, the base's {listed(base_prompts)}; replay the base with its own "
            "prompts for a noise floor"
        )
    return None


def run_prompts(con: Any, run_id: str) -> list[str]:
    """The prompt templates (``name@version``) ``run_id``'s llm events name (none: an empty list)."""
    rows = con.execute("SELECT DISTINCT prompt FROM events WHERE run_id = ? AND kind = 'llm'", [run_id]).fetchall()
    return sorted({r[0] for r in rows if r[0]})


def listed(models: list[str]) -> str:
    """``models`` for a one-line message, each escaped for the terminal."""
    return ", ".join(visible(m) for m in models) or "none"
