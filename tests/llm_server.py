"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions (and Responses) and Anthropic
Messages protocols, for tests and benchmarks. It answers like ``sim:renewal@v1`` (or a given function), and
can be told to fail: a 429 with Retry-After, a 500, an answer slower than the client's timeout.
It counts every request by the digest of its body, so tests can prove a step was never asked twice.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import xxhash

from sdbctl.sdb.events import canonical_bytes

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def chat_completion(message: dict[str, Any], model: Any) -> dict[str, Any]:
    """A chat completion answering with ``message`` (finish reason ``tool_calls`` when it calls a tool)."""
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }


def simulator_answer(spec: str = "sim:renewal@v1") -> Answer:
    """Answer as the simulator ``spec`` would (the request's model name is ignored)."""
    import sdbctl.fixtures.workloads
    from sdbctl.sdb.providers import resolve

    sdbctl.fixtures.workloads.register_all()
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


def stream_chunks(answer: dict[str, Any], *, with_usage: bool = False) -> list[dict[str, Any]]:
    """``answer`` as the ``chat.completion.chunk`` objects a streaming server sends: the role, text in
    pieces, each tool call's id and name, then its arguments in 7-character fragments."""
    head = {
        "id": answer.get("id", "chatcmpl-test"),
        "object": "chat.completion.chunk",
        "created": 1,
        "model": answer.get("model", "test"),
    }
    message = answer["choices"][0]["message"]
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    text = message.get("content") or ""
    for i in range(0, len(text), 5):
        chunks.append({**head, "choices": [{"index": 0, "delta": {"content": text[i : i + 5]}, "finish_reason": None}]})
    for n, call in enumerate(message.get("tool_calls") or []):
        first = {
            "index": n,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        chunks.append({**head, "choices": [{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}]})
        args = call["function"]["arguments"]
        for i in range(0, len(args), 7):
            part = {"index": n, "function": {"arguments": args[i : i + 7]}}
            chunks.append({**head, "choices": [{"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None}]})
    finish = answer["choices"][0].get("finish_reason") or ("tool_calls" if message.get("tool_calls") else "stop")
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if with_usage:
        chunks.append(
            {
                **head,
                "choices": [],
                "usage": answer.get("usage", {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
            }
        )
    return chunks


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-answer (a timeout, a cancelled stream) is normal here: no traceback
    on stderr, where a command running in the test process would read it as its own output."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LLMServer:
    """``with LLMServer() as server: server.url`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, answer: Answer | None = None, *, delay: float = 0.0) -> None:
        self.answer = answer or simulator_answer()
        self.delay = delay
        self.chunk_delay = 0.0  # seconds between streamed chunks
        self.faults: list[tuple[str, float]] = []  # ("429", retry_after) | ("500", 0) | ("slow", seconds)
        self.requests: Counter[str] = Counter()
        self.times: list[float] = []
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
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
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client died waiting (a killed replay)
                    self.close_connection = True

            def _stream(self, answer: dict[str, Any], request: dict[str, Any]) -> None:
                """The answer as server-sent chunks, tool-call arguments cut into fragments."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in stream_chunks(
                    answer, with_usage=bool((request.get("stream_options") or {}).get("include_usage"))
                ):
                    data = f"data: {json.dumps(chunk)}\n\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                    if server.chunk_delay:
                        time.sleep(server.chunk_delay)
                done = b"data: [DONE]\n\n"
                self.wfile.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests[server.key(body)] += 1
                    server.times.append(time.monotonic())
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers.items()))
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
                elif self.path.rstrip("/").endswith("/chat/completions") and body.get("stream"):
                    self._stream(server.answer(body), body)
                elif self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(200, server.answer(body))
                elif self.path.rstrip("/").endswith("/responses"):
                    self._send(200, server.responses(body))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

        ThreadingHTTPServer.request_queue_size = 256  # 50+ clients connect at once in the benchmark
        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
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

    def responses(self, body: dict[str, Any]) -> dict[str, Any]:
        """A Responses API answer: the request read as chat messages (instructions as the system
        message, input items as messages, function tools as chat tools), answered, and the answer's
        message as output items; the request's instructions, tools and settings echoed, as OpenAI does."""
        messages: list[dict[str, Any]] = []
        if body.get("instructions"):
            messages.append({"role": "system", "content": body["instructions"]})
        items = body.get("input")
        for item in [{"role": "user", "content": items}] if isinstance(items, str) else items or []:
            kind = item.get("type", "message")
            if kind == "message":
                content = item.get("content")
                if isinstance(content, list):
                    content = "".join(str(p.get("text", "")) for p in content)
                messages.append({"role": item["role"], "content": content})
            elif kind == "function_call":
                call = {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }
                if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                    messages[-1]["tool_calls"].append(call)
                else:
                    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            elif kind == "function_call_output":
                messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        tools = [
            {"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters") if k in t}}
            for t in body.get("tools") or []
            if t.get("type") == "function"
        ]
        answer = self.answer({"model": body.get("model"), "messages": messages, "tools": tools})
        message = answer["choices"][0]["message"]
        output: list[dict[str, Any]] = []
        if message.get("content"):
            text = {"type": "output_text", "text": message["content"], "annotations": []}
            output.append(
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [text]}
            )
        for n, call in enumerate(message.get("tool_calls") or []):
            fn = call["function"]
            output.append(
                {
                    "type": "function_call",
                    "id": f"fc_{n}",
                    "call_id": call["id"],
                    "name": fn["name"],
                    "arguments": fn["arguments"],
                    "status": "completed",
                }
            )
        usage = answer.get("usage") or {"prompt_tokens": 10, "completion_tokens": 5}
        return {
            "id": f"resp_{self.total}",
            "object": "response",
            "created_at": 1,
            "status": "completed",
            "model": body.get("model"),
            "instructions": body.get("instructions"),
            "output": output,
            "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice", "auto"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "text": body.get("text") or {"format": {"type": "text"}},
            "usage": {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
                "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
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


if __name__ == "__main__":  # a server for manual runs: python -m tests.llm_server [DELAY] [--weather]
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    model: Answer | None = None
    if "--weather" in sys.argv:
        from sdbctl.fixtures.agents.weather_model import answer as model
    with LLMServer(model, delay=float(args[0]) if args else 0.0) as s:
        print(s.url, flush=True)
        while True:
            time.sleep(3600)
