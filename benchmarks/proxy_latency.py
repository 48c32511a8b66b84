"""What the recording proxy adds to a model call: latency per request against calling the upstream
directly, p50 and p99, non-streaming, and time to the first chunk of a streamed answer.

The upstream (``python -m tests.llm_server --weather``: a real HTTP server on 127.0.0.1 answering at
once) and the proxy (``sdbctl proxy``, recording into a temporary store) each run as their own
process, as in use. One keep-alive client in this process alternates direct and proxied calls, so
that both sides see the same machine at the same moment.

    python -m benchmarks.proxy_latency [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.machine import describe

BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You answer weather questions with the get_weather tool."},
        {"role": "user", "content": "What is the weather in Paris?"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _start(argv: list[str], cwd: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _measure(client: httpx.Client, url: str, stream: bool, session: int) -> float:
    """Milliseconds to the whole answer (non-streaming) or to the first chunk (streaming)."""
    body = {**BODY, "stream": stream}
    headers = {"Authorization": "Bearer sk-bench-not-a-key", "X-SDB-Session": f"bench-{session}"}
    t0 = time.perf_counter()
    if not stream:
        r = client.post(f"{url}/chat/completions", json=body, headers=headers)
        r.read()
        assert r.status_code == 200, r.text
        return (time.perf_counter() - t0) * 1000
    with client.stream("POST", f"{url}/chat/completions", json=body, headers=headers) as r:
        first = None
        for _ in r.iter_raw():
            if first is None:
                first = (time.perf_counter() - t0) * 1000
        assert r.status_code == 200 and first is not None
        return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="calls per side and mode")
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        upstream, upstream_url = _start([sys.executable, "-m", "tests.llm_server", "--weather"], str(Path.cwd()))
        sdbctl = str(Path(sys.executable).with_name("sdbctl"))
        proxy, proxy_url = _start(
            [sdbctl, "proxy", "--upstream", upstream_url, "--run-id", "bench", "--store", f"{tmp}/.sdb", "--json"], tmp
        )
        try:
            with httpx.Client(timeout=30) as direct_client, httpx.Client(timeout=30) as proxy_client:
                for stream in (False, True):
                    sides: dict[str, list[float]] = {"direct": [], "proxy": []}
                    calls: list[tuple[str, httpx.Client, str]] = [
                        ("direct", direct_client, upstream_url),
                        ("proxy", proxy_client, proxy_url),
                    ]
                    for warm in range(50):  # connections open, code paths warm
                        for _, client, url in calls:
                            _measure(client, url, stream, warm)
                    for i in range(args.requests):
                        order: Callable[[int], int] = (lambda k: k) if i % 2 == 0 else (lambda k: 1 - k)
                        for k in (0, 1):
                            name, client, url = calls[order(k)]
                            sides[name].append(_measure(client, url, stream, i))
                    label = "time to first chunk, streaming" if stream else "whole answer, non-streaming"
                    d50, p50 = statistics.median(sides["direct"]), statistics.median(sides["proxy"])
                    d99, p99 = _percentile(sides["direct"], 0.99), _percentile(sides["proxy"], 0.99)
                    print(f"\n{label} ({args.requests} calls per side, alternating):")
                    print(f"  direct  p50 {d50:7.3f} ms   p99 {d99:7.3f} ms")
                    print(f"  proxy   p50 {p50:7.3f} ms   p99 {p99:7.3f} ms")
                    print(f"  added   p50 {p50 - d50:7.3f} ms   p99 {p99 - d99:7.3f} ms   (target: <= 2 ms p50 added)")
        finally:
            proxy.send_signal(2)
            out, _ = proxy.communicate(timeout=60)
            upstream.terminate()
            upstream.wait()
        summary = json.loads(out[out.index("{") :])
        print(f"\nrecorded: {summary['llm_calls']} llm calls, {summary['actions']} actions in run {summary['run_id']}")


if __name__ == "__main__":
    main()
