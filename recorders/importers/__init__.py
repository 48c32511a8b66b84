"""Importers: runs built from logs and traces that other tools wrote (issue 6; JSONL so far)."""
