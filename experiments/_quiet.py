"""Imported first by the CLIs: keeps library chatter off the user's console.

brax prints "Failed to import warp" on import (harmless: warp is an optional GPU backend);
we import brax once with that line filtered, and quiet TensorFlow-style C++ logs.
"""

import contextlib
import io
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _DropWarp(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "warp" not in record.getMessage().lower()


# JAX logs at INFO that it found no TPU; absl's app.run would show it.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)

for _name in ("", "absl", "brax"):
    logging.getLogger(_name).addFilter(_DropWarp())

_out, _err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(_out), contextlib.redirect_stderr(_err):
    try:
        import brax  # noqa: F401
        import brax.envs  # noqa: F401
    except ImportError:
        pass
for _line in (_out.getvalue() + _err.getvalue()).splitlines():
    if "warp" not in _line.lower():
        print(_line, file=sys.stderr)
