"""Writes real OpenTelemetry GenAI traces, for the importer's tests: the weather agent's openai SDK
calls instrumented by ``opentelemetry-instrumentation-openai-v2`` against a local simulated model,
exported by the OTLP/JSON file exporter (the Collector's file format: one export request per line).
Each conversation is wrapped in an ``invoke_agent`` span and each tool run in an ``execute_tool`` span,
as an agent framework would, so that one trace is one conversation.

    python -m tests.otel_traces OUT.jsonl on|off      # message content captured, or not
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main(out: str, content: str) -> None:
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY" if content == "on" else "NO_CONTENT"
    from openai import OpenAI
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from sdbctl.fixtures.agents import weather_agent
    from sdbctl.fixtures.agents.weather_model import answer
    from tests.llm_server import LLMServer

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(out)))
    OpenAIInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    tracer = provider.get_tracer("weather-agent-framework")
    real_tool = weather_agent.get_weather

    def traced_tool(**args: Any) -> dict[str, Any]:
        with tracer.start_as_current_span("execute_tool get_weather") as span:
            span.set_attribute("gen_ai.operation.name", "execute_tool")
            span.set_attribute("gen_ai.tool.name", "get_weather")
            result = real_tool(**args)
            if content == "on":
                span.set_attribute("gen_ai.tool.call.arguments", json.dumps(args))
                span.set_attribute("gen_ai.tool.call.result", json.dumps(result))
            return result

    weather_agent.get_weather = traced_tool  # type: ignore[assignment]
    with LLMServer(answer) as upstream, open(os.devnull, "w") as log:
        client = OpenAI(base_url=upstream.url, api_key="sk-test-not-a-real-key-0123456789")
        for city, stream in (("Paris", False), ("Oslo", True)):
            with tracer.start_as_current_span("invoke_agent weather-agent") as span:
                span.set_attribute("gen_ai.operation.name", "invoke_agent")
                span.set_attribute("gen_ai.agent.name", "weather-agent")
                weather_agent.ask(client, "gpt-4o-mini", city, stream, log)
    provider.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
