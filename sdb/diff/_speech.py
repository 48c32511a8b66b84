"""Comparing speech (free text to a person) by similarity, not by equality.

Two replies that say the same thing in other words are not drift. The measure is RapidFuzz's
``token_set_ratio`` after its default processing (lower case, punctuation and surrounding space
removed), scaled to [0, 1]: word order and repeated words do not count, and a reply that only adds
words to the other scores high. Below the configured threshold (``[diff] speech_threshold``,
default 0.8) a pair is ``speech_changed``, and the divergence carries the figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rapidfuzz import fuzz, utils


def speech_text(args: Any) -> str:
    """The text of a speech action: its ``content`` (or ``text``/``message``) argument, else the
    canonical JSON of its arguments."""
    if isinstance(args, Mapping):
        for key in ("content", "text", "message"):
            value = args.get(key)
            if isinstance(value, str):
                return value
    if isinstance(args, str):
        return args
    return orjson.dumps(args, option=orjson.OPT_SORT_KEYS).decode()


def similarity(old: Any, new: Any) -> float:
    """The token-set similarity of two speech actions' texts, in [0, 1] (1.0: the same words)."""
    a, b = speech_text(old), speech_text(new)
    if a == b:
        return 1.0
    if not utils.default_process(a) and not utils.default_process(b):
        return 1.0  # both only punctuation or space
    return round(fuzz.token_set_ratio(a, b, processor=utils.default_process) / 100.0, 4)
