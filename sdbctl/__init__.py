"""sdbctl: one installed name for the program's packages.

The folders ``cli/``, ``sdb/``, ``patterns/``, ``recorders/`` and ``fixtures/`` stay at the top of the
checkout, as the layout has them; ``sdbctl/`` links to each, so the wheel installs them as
``sdbctl.cli``, ``sdbctl.sdb``, ... and no generic top-level name (``cli``, ``fixtures``) reaches
site-packages, where it could collide with another project's.
"""
