"""Whether the optional C extension ``sdb._native`` (the recorder's hot path) is in use.

It is built at install time when a C compiler is there; without one, or with ``SDB_NATIVE=0`` in the
environment, everything runs in pure Python and writes the same bytes (a test compares the two).
"""

from __future__ import annotations

import os
import types
from typing import Final

native: types.ModuleType | None
try:
    from sdbctl.sdb import _native as native
except ImportError:  # built without a C compiler
    native = None
if os.environ.get("SDB_NATIVE") == "0":  # to compare the two paths, or to rule the C one out
    native = None

NATIVE: Final = native is not None
