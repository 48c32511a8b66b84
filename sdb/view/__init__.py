"""``sdbctl view``: the two runs of a diff side by side in the browser, served from this machine
(:class:`ViewServer`) or written as one file (:func:`render_file`); what the page shows is
:class:`ViewData`'s."""

from sdbctl.sdb.view._data import ViewData
from sdbctl.sdb.view._open import diff_to_view, runs_to_view
from sdbctl.sdb.view._page import render_file, write_file
from sdbctl.sdb.view._server import ViewServer, redirect_file

__all__ = ["ViewData", "ViewServer", "diff_to_view", "redirect_file", "render_file", "runs_to_view", "write_file"]
