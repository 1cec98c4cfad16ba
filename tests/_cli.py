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


def one_line_error(proc, code=2):
    """Asserts exit `code` and a single `error: ...` line on stderr (no traceback); returns it."""
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]
