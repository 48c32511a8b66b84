"""The OpenAI-compatible recording proxy: record an agent you don't own, unchanged."""

from sdbctl.recorders.conversation import SESSION_HEADER, ConversationRecorder, session_key
from sdbctl.recorders.proxy.server import DEFAULT_UPSTREAM, RecordingProxy

__all__ = ["DEFAULT_UPSTREAM", "SESSION_HEADER", "ConversationRecorder", "RecordingProxy", "session_key"]
