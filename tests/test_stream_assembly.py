"""Streamed chat completions assembled from server-sent events cut at arbitrary byte boundaries."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sdbctl.recorders.proxy import CompletionAssembler, SSEDecoder
from tests.llm_server import stream_chunks

ANSWER: dict[str, Any] = {
    "id": "chatcmpl-1",
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking both cities — ünïcode too.",
                "tool_calls": [
                    {
                        "id": "a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz": "Europe/Oslo"}'},
                    },
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}


def _wire(newline: str) -> bytes:
    events = [f"data: {json.dumps(c)}{newline}{newline}" for c in stream_chunks(ANSWER, with_usage=True)]
    return (f": keep-alive{newline}{newline}" + "".join(events) + f"data: [DONE]{newline}{newline}").encode()


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40), crlf=st.booleans())
def test_any_chunking_assembles_the_same_completion(cuts: list[int], crlf: bool) -> None:
    wire = _wire("\r\n" if crlf else "\n")
    points = sorted({c % (len(wire) + 1) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    decoder, assembler = SSEDecoder(), CompletionAssembler()
    for piece in pieces:
        for event in decoder.feed(piece):
            assembler.add_event(event)
    for event in decoder.close():
        assembler.add_event(event)
    done = assembler.completion()
    assert assembler.done and not assembler.errors
    assert done["choices"][0]["message"] == ANSWER["choices"][0]["message"]
    assert done["choices"][0]["finish_reason"] == "tool_calls" and done["usage"] == ANSWER["usage"]
    assert done["id"] == "chatcmpl-1" and done["object"] == "chat.completion"


def test_an_error_event_mid_stream_is_kept() -> None:
    assembler = CompletionAssembler()
    assembler.add_event(json.dumps({"error": {"message": "overloaded"}}))
    assembler.add_event("{not json")
    assert assembler.errors[0] == {"message": "overloaded"} and len(assembler.errors) == 2
