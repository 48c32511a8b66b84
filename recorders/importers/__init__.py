"""Importers: runs built from logs and traces that other tools wrote (OTLP/JSON GenAI traces, chat
conversations, JSONL), and the chat export that ``sdbctl import chat`` reads back.

The importers write through the recorder, which imports pyarrow, and the export reads through
duckdb: they are imported on first use (:func:`sdb.lazy.lazy_exports`), so that importing this
package for :class:`ImportSummary` stays cheap.

This module is the package's whole interface; its modules are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdbctl.recorders.importers._summary import ImportSummary
from sdbctl.sdb.lazy import lazy_exports

if TYPE_CHECKING:
    from sdbctl.recorders.importers._chat import import_chat
    from sdbctl.recorders.importers._chat_export import ChatExport, export_chat, write_chat
    from sdbctl.recorders.importers._jsonl import import_jsonl
    from sdbctl.recorders.importers._otel import import_otel

__all__ = ["ChatExport", "ImportSummary", "export_chat", "import_chat", "import_jsonl", "import_otel", "write_chat"]

__getattr__ = lazy_exports(
    __name__,
    {
        "ChatExport": "_chat_export",
        "export_chat": "_chat_export",
        "write_chat": "_chat_export",
        "import_chat": "_chat",
        "import_jsonl": "_jsonl",
        "import_otel": "_otel",
    },
)
