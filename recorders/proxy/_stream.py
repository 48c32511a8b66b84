"""Server-sent events of a streamed chat completion, assembled into the completion they add up to.

The proxy hands every chunk to the client as it arrives and feeds the same bytes here; at the end
the record holds one ordinary ``chat.completion`` (content, tool calls with their argument fragments
joined, finish reason, usage), the shape a non-streamed answer has and a step-mode replay reads.
"""

from __future__ import annotations

import json
from typing import Any


class SSEDecoder:
    """Incremental ``text/event-stream`` parser: bytes in, the ``data`` of each complete event out."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                return events
            line = self._buffer[:cut].rstrip(b"\r").decode("utf-8", errors="replace")
            self._buffer = self._buffer[cut + 1 :]
            if not line:  # a blank line ends an event
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
            # comments (":"), event:, id: and retry: lines carry nothing a chat completion needs

    def close(self) -> list[str]:
        """Events left when the stream ended without a final blank line."""
        rest = self.feed(b"\n\n") if self._buffer or self._data else []
        return rest


class CompletionAssembler:
    """Joins ``chat.completion.chunk`` objects into one ``chat.completion``."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None
        self.done = False
        self.chunks = 0
        self.errors: list[Any] = []

    def add_event(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            self.errors.append(data[:200])
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            self.errors.append(chunk["error"])
            return
        self.chunks += 1
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(key) is not None:
                self.meta.setdefault(key, chunk[key])
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for delta_choice in chunk.get("choices") or []:
            if isinstance(delta_choice, dict):
                self._add_choice(delta_choice)

    def _add_choice(self, part: dict[str, Any]) -> None:
        index = part.get("index", 0)
        choice = self.choices.setdefault(index, {"index": index, "message": {"role": "assistant"}, "calls": {}})
        if part.get("finish_reason") is not None:
            choice["finish_reason"] = part["finish_reason"]
        if part.get("logprobs") is not None:
            choice.setdefault("logprobs", {"content": []})["content"].extend(
                (part["logprobs"] or {}).get("content") or []
            )
        message = choice["message"]
        for key, value in (part.get("delta") or {}).items():
            if key == "tool_calls":
                for call in value or []:
                    self._add_call(choice["calls"], call)
            elif key == "function_call" and isinstance(value, dict):  # the legacy single call
                legacy = message.setdefault("function_call", {"name": "", "arguments": ""})
                for k in ("name", "arguments"):
                    legacy[k] += value.get(k) or ""
            elif key == "role":
                message["role"] = value or message["role"]
            elif isinstance(value, str):
                message[key] = (message.get(key) or "") + value
            elif value is not None:
                message[key] = value

    @staticmethod
    def _add_call(calls: dict[int, dict[str, Any]], part: dict[str, Any]) -> None:
        index = part.get("index", len(calls))
        call = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if part.get("id"):
            call["id"] = part["id"]
        if part.get("type"):
            call["type"] = part["type"]
        fn = part.get("function") or {}
        if fn.get("name"):
            call["function"]["name"] += fn["name"]
        if fn.get("arguments"):
            call["function"]["arguments"] += fn["arguments"]

    def completion(self) -> dict[str, Any]:
        """The assembled answer, shaped as a non-streamed ``chat.completion``."""
        choices = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            message = dict(choice["message"])
            message.setdefault("content", None)
            if choice["calls"]:
                message["tool_calls"] = [choice["calls"][i] for i in sorted(choice["calls"])]
            out = {"index": index, "message": message, "finish_reason": choice.get("finish_reason")}
            if "logprobs" in choice:
                out["logprobs"] = choice["logprobs"]
            choices.append(out)
        result: dict[str, Any] = {**self.meta, "object": "chat.completion", "choices": choices}
        if self.usage is not None:
            result["usage"] = self.usage
        return result
