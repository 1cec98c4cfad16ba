"""What the CLI tests share: running `python -m MODULE` from the repository root, and the
check that bad input gave one `error: ...` line."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args, env=None, timeout=600, **kw):
    """`python -m module *args` in the repository root; stdout/stderr captured as text.

    `env`: the whole environment of the child (default: this process's).
    """
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def forced_devices_env(n: int) -> dict:
    """This process's environment with `n` forced host devices for a child JAX process.

    Appends to XLA_FLAGS, so the child keeps the suite's setting (tests/conftest.py).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    return dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={n}")


def one_line_error(proc, code=2):
    """Asserts exit `code` and a single `error: ...` line on stderr (no traceback); returns it."""
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]
