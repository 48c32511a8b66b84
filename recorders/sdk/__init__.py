"""The in-process recorder that agent authors call.

Example::

    from sdbctl.recorders.sdk import Recorder

    with Recorder(store=".sdb", meta={"agent": "renewal", "model": "gpt-x"}) as rec:
        with rec.session("contract-42") as s:
            s.input("contract", {"id": 42})
            llm = s.llm(request, response, model="gpt-x", prompt="offer@v3", step="day-030/offer")
            act = s.action("send_offer", {"discount": 0.1}, step="day-030/offer", parent=llm)
            s.effect("send_offer", {"sent": True}, parent=act)

The implementation lives in :mod:`sdb.recording`, because the replay engine writes its runs through
it too (``sdb`` cannot import ``recorders``); this package is its public face.
"""

from sdbctl.sdb.recording import Recorder, Session

__all__ = ["Recorder", "Session"]
