"""sdbctl: one installed name for the program's packages.

The folders ``cli/``, ``sdb/``, ``patterns/``, ``recorders/`` and ``fixtures/`` stay at the top of the
checkout, as the layout has them; ``pyproject.toml`` installs each as ``sdbctl.<folder>`` (``[tool.setuptools]
package-dir``), so no generic top-level name (``cli``, ``fixtures``) reaches site-packages, where it could
collide with another project's. This folder holds only this file: in a checkout, the editable install
(``pip install -e``) maps each name to its folder.

Python run in the root of a checkout finds this file before an installed (not editable) sdbctl, whose
``sdbctl/`` holds the folders; ``extend_path`` adds that one to this package's path, so that
``sdbctl.cli`` is found there rather than not at all.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
