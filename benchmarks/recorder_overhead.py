"""Recorder cost per event as the caller sees it, against one OpenTelemetry SDK span per event.

Peer: the OpenTelemetry SDK with a SimpleSpanProcessor and an InMemorySpanExporter, one span per
action with its arguments as an attribute (the cheapest way to keep the same information in OTel).
Ours: ``Session.action(name, args, step=...)`` with the background writer flushing Parquet parts as
usual (by size and time) while the loop runs. Two figures for ours: the caller's loop alone (flushes
running concurrently steal from it through the GIL), and the loop plus the final flush at close, i.e.
until every event is durable on disk.

    python -m benchmarks.recorder_overhead [--events N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

from benchmarks.machine import describe
from benchmarks.workload import actions
from sdbctl.recorders.sdk import Recorder


def run_ours(items: list[tuple[str, dict[str, Any]]], store: str) -> tuple[float, float]:
    rec = Recorder(store=store, handle_signals=False)
    s = rec.session("bench")
    act = s.action
    t0 = time.perf_counter()
    for _, args in items:
        act("propose_offer", args, step="day-030/offer")
    t1 = time.perf_counter()
    rec.close()
    t2 = time.perf_counter()
    n = len(items)
    return (t1 - t0) / n * 1e6, (t2 - t0) / n * 1e6


def run_otel(items: list[tuple[str, dict[str, Any]]]) -> float:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    tracer = provider.get_tracer("bench")
    dumps = json.dumps
    t0 = time.perf_counter()
    for _, args in items:
        with tracer.start_as_current_span("propose_offer") as span:
            span.set_attribute("gen_ai.tool.call.arguments", dumps(args))
    return (time.perf_counter() - t0) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--otel-events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    items = list(actions(opts.events))
    otel_items = items[: opts.otel_events]
    caller, durable, otel = [], [], []
    for _ in range(opts.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            c, d = run_ours(items, tmp)
        caller.append(c)
        durable.append(d)
        otel.append(run_otel(otel_items))
    med = statistics.median
    print(describe())
    print(f"sdbctl recorder, caller loop (flushes running): {med(caller):6.2f} us/event  ({opts.events:,} events)")
    print(f"sdbctl recorder, until durable (incl. close):   {med(durable):6.2f} us/event")
    print(f"OpenTelemetry span (Simple + InMemory):         {med(otel):6.2f} us/event  ({opts.otel_events:,} events)")
    print(f"ratio OTel / sdbctl (caller):                   {med(otel) / med(caller):6.1f}x")
    print(f"ratio OTel / sdbctl (until durable):            {med(otel) / med(durable):6.1f}x")


if __name__ == "__main__":
    main()
