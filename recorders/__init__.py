"""Ways events get into a store: the in-process SDK (``recorders.sdk``); later the recording proxy and
the OpenTelemetry and JSONL importers."""
