"""Imported first by the CLIs: keeps library chatter off the user's console.

JAX logs at INFO that it found no TPU (absl's app.run would show it), MJX that it uses the
default device, matplotlib that it built its font cache; brax prints
"Failed to import warp" on import (harmless: warp is an optional GPU backend). Use
`import_brax()` instead of a bare `import brax` in CLIs that need brax.

Warnings are filtered one by one, by message and by the third-party module that issues
them: everything else, the project's own warnings included, still reaches the console
(and `python -W error` still turns it into an error).
"""

import contextlib
import io
import logging
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
# jax.distributed.initialize logs the coordinator's address at INFO (multi-process runs).
logging.getLogger("jax._src.distributed").setLevel(logging.WARNING)
# matplotlib logs "generated new fontManager" at INFO the first time it is imported in a
# fresh environment (its font cache is built then); absl would show it on stderr.
logging.getLogger("matplotlib").setLevel(logging.WARNING)

# brax imports jaxopt (brax.generalized's constraint solver, which our MJX envs never use);
# jaxopt warns on import that it is unmaintained. Shown under `-W default` or `-W error`.
warnings.filterwarnings(
    "ignore", message="JAXopt is no longer maintained", category=DeprecationWarning, module="jaxopt"
)


class _Quiet(logging.Filter):
    """Drops the warp message and libraries' INFO chatter (e.g. MJX's "Using JAX default
    device" on every put_model); our CLIs print their own progress, they do not log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "warp" not in record.getMessage().lower()


for _name in ("", "absl", "brax"):
    logging.getLogger(_name).addFilter(_Quiet())


def import_brax() -> None:
    """Imports brax (and brax.envs) with its warp message filtered out."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        import brax  # noqa: F401
        import brax.envs  # noqa: F401
    for line in (out.getvalue() + err.getvalue()).splitlines():
        if "warp" not in line.lower():
            print(line, file=sys.stderr)


def _drop_closed_loop_unraisable(unraisable):
    """After orbax fails to read a checkpoint (which the run then skips, saying so in one
    line), tensorstore's threads still complete the aborted reads and call back into the
    asyncio loop orbax has closed; each callback's RuntimeError reaches
    sys.unraisablehook, which printed it as a traceback, dozens of them. They carry no
    information: drop them (everything else goes to the default hook)."""
    if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(
        unraisable.exc_value
    ):
        return
    sys.__unraisablehook__(unraisable)


sys.unraisablehook = _drop_closed_loop_unraisable
