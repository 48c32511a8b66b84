"""The optional C extension ``sdb._native``: the recorder's hot path (see sdb/_native.c).

``optional=True``: on a machine without a C compiler the build goes on without it, and the recorder
runs its pure-Python path, which writes the same events (``sdb.native.NATIVE`` says which is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sdbctl.sdb._native",
            ["sdb/_native.c"],
            depends=["sdb/_vendor/xxhash.h"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
