"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions and Anthropic Messages
protocols, for tests and benchmarks. It answers like ``sim:renewal@v1`` (or a given function), and
can be told to fail: a 429 with Retry-After, a 500, an answer slower than the client's timeout.
It counts every request by the digest of its body, so tests can prove a step was never asked twice.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import xxhash

from sdb.events.canonical import canonical_bytes

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def simulator_answer(spec: str = "sim:renewal@v1") -> Answer:
    """Answer as the simulator ``spec`` would (the request's model name is ignored)."""
    import fixtures.workloads
    from sdb.providers import resolve

    fixtures.workloads.register_all()
    sim = resolve(spec)

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        sync = getattr(sim, "answer", None)
        return sync(request).response if callable(sync) else asyncio.run(sim.complete(request)).response

    return answer


def as_plain_json(answer: Answer) -> Answer:
    """The same answers, as a JSON object in the message text instead of tool calls."""

    def plain(request: dict[str, Any]) -> dict[str, Any]:
        response = answer(request)
        call = response["choices"][0]["message"]["tool_calls"][0]["function"]
        text = (
            "Here is my decision:\n```json\n"
            + json.dumps({"name": call["name"], "arguments": json.loads(call["arguments"])})
            + "\n```"
        )
        response["choices"][0]["message"] = {"role": "assistant", "content": text}
        return response

    return plain


class LLMServer:
    """``with LLMServer() as server: server.url`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, answer: Answer | None = None, *, delay: float = 0.0) -> None:
        self.answer = answer or simulator_answer()
        self.delay = delay
        self.faults: list[tuple[str, float]] = []  # ("429", retry_after) | ("500", 0) | ("slow", seconds)
        self.requests: Counter[str] = Counter()
        self.times: list[float] = []
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms to every answer

            def log_message(self, *args: Any) -> None:
                return None

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests[server.key(body)] += 1
                    server.times.append(time.monotonic())
                    server.bodies.append(body)
                    fault = server.faults.pop(0) if server.faults else None
                if fault is not None and fault[0] == "429":
                    self._send(
                        429,
                        {"error": {"message": "rate limited", "type": "rate_limit"}},
                        {"Retry-After": f"{fault[1]:g}"},
                    )
                    return
                if fault is not None and fault[0] == "500":
                    self._send(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
                    return
                if fault is not None and fault[0] == "slow":
                    time.sleep(fault[1])
                if server.delay:
                    time.sleep(server.delay)
                if self.path.rstrip("/").endswith("/messages"):
                    self._send(200, server.anthropic(body))
                elif self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(200, server.answer(body))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

        ThreadingHTTPServer.request_queue_size = 256  # 50+ clients connect at once in the benchmark
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.root = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def key(body: dict[str, Any]) -> str:
        return xxhash.xxh3_64_hexdigest(canonical_bytes({k: v for k, v in body.items() if k != "model"}))

    def anthropic(self, body: dict[str, Any]) -> dict[str, Any]:
        """A Messages API answer: the OpenAI-shaped answer's tool call as a ``tool_use`` block."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": body.get("system", "")}]
        for m in body.get("messages", []):  # back to the OpenAI shape the simulator reads
            blocks = m.get("content")
            if isinstance(blocks, list) and blocks and blocks[0].get("type") == "tool_result":
                messages += [
                    {"role": "tool", "tool_call_id": b["tool_use_id"], "content": b["content"]} for b in blocks
                ]
            elif isinstance(blocks, list):
                calls = [
                    {
                        "id": b["id"],
                        "type": "function",
                        "function": {"name": b["name"], "arguments": json.dumps(b["input"])},
                    }
                    for b in blocks
                    if b.get("type") == "tool_use"
                ]
                messages.append({"role": m["role"], "content": None, "tool_calls": calls})
            else:
                messages.append(m)
        tools = [
            {"type": "function", "function": {"name": t["name"], "parameters": t.get("input_schema", {})}}
            for t in body.get("tools", [])
        ]
        openai_like = self.answer({"messages": messages, "tools": tools})
        call = openai_like["choices"][0]["message"]["tool_calls"][0]
        return {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": call["function"]["name"],
                    "input": json.loads(call["function"]["arguments"]),
                }
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def __enter__(self) -> LLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":  # a server for manual runs: python -m tests.llm_server
    import sys

    with LLMServer(delay=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as s:
        print(s.url, flush=True)
        while True:
            time.sleep(3600)
