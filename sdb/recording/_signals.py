"""The recorder's place in a chain of SIGINT/SIGTERM handlers: installed over whatever was there,
taken out again when the run closes, and the signal always passed on to the handler before ours."""

from __future__ import annotations

import os
import signal
import threading
import types
from collections.abc import Callable
from typing import Any

SignalHandler = Callable[[int, types.FrameType | None], Any] | int | None


class SignalChain:
    """The handlers ours replaced, per signal. Signals are the main thread's: from any other thread
    installing and restoring do nothing."""

    def __init__(self) -> None:
        self.previous: dict[int, SignalHandler] = {}

    def install(self, handler: Callable[[int, types.FrameType | None], Any]) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, handler)

    def restore(self, handler: Callable[[int, types.FrameType | None], Any]) -> None:
        """Put the previous handlers back where ours is still the one installed. ``previous`` is kept:
        a recorder opened after this one may still chain to ours, which then only passes the signal on."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self.previous.items():
            if signal.getsignal(signum) == handler:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def pass_on(self, signum: int, frame: types.FrameType | None) -> None:
        """Hand the signal to the handler that was there before ours (the default one kills)."""
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL or previous is None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
