"""The OpenAI-compatible recording proxy: record an agent you don't own, unchanged.

:class:`RecordingProxy` forwards the OpenAI API to an upstream (:func:`check_upstream` reads its URL)
and records ``/chat/completions`` calls through a :class:`ConversationRecorder`; a streamed answer is
read by :class:`SSEDecoder` and assembled by :class:`CompletionAssembler` into the completion it adds
up to. This module is the package's whole interface; its modules are private.
"""

from sdbctl.recorders.conversation import SESSION_HEADER, ConversationRecorder, session_key
from sdbctl.recorders.proxy._server import DEFAULT_UPSTREAM, RecordingProxy, check_upstream
from sdbctl.recorders.proxy._stream import CompletionAssembler, SSEDecoder

__all__ = [
    "DEFAULT_UPSTREAM",
    "SESSION_HEADER",
    "CompletionAssembler",
    "ConversationRecorder",
    "RecordingProxy",
    "SSEDecoder",
    "check_upstream",
    "session_key",
]
