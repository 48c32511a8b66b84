"""The sdbctl command line: parses arguments, calls ``sdb``/``recorders``/``patterns``, renders with rich.

No logic lives here. Heavy libraries are imported inside the commands that use them, so that
``sdbctl --help`` stays fast.
"""
