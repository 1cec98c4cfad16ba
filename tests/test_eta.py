"""The run's ETA (`experiments._cli.eta_seconds`) against a simulated run and a real one.

References: a Python loop that plays out a run whose fit costs a fixed time per buffer row
(the rest of an iteration a fixed time) and sums what is left; and the `Time/*` columns of
a committed Hopper run, whose fit grew from 19 s to 295 s per iteration with the buffer.
"""

import csv
import os

import pytest

from experiments._cli import eta_seconds
from tests._cli import ROOT


def _simulated_run(per_iteration, warmup, capacity, iterations, fit_per_row, other, compile_s):
    """Per iteration: (seconds, fit seconds, rows fitted); the first also compiles."""
    out, rows = [], warmup
    for i in range(iterations):
        fit = fit_per_row * min(rows, capacity)
        extra = compile_s if i == 0 else 0.0
        out.append((other + fit + extra, fit + extra / 2, min(rows, capacity)))
        rows += per_iteration
    return out


@pytest.mark.parametrize("capacity", [10_000, 100_000])  # fills mid-run / never fills
def test_eta_equals_the_time_a_linear_run_has_left(capacity):
    per, warmup, n = 2_000, 4_000, 40
    run = _simulated_run(per, warmup, capacity, n, fit_per_row=3e-3, other=35.0, compile_s=60.0)
    for k in range(2, n + 1):  # after iteration k (the first, compiling one, is left out)
        rows_next = min(warmup + k * per, capacity)
        eta = eta_seconds(run[:k], rows_next, per, n - k, capacity)
        assert eta == pytest.approx(sum(t for t, _, _ in run[k:]), rel=1e-9, abs=1e-9)


def test_eta_edge_cases():
    assert eta_seconds([], 100, 10, 5, 1_000) == 0.0  # nothing measured yet
    assert eta_seconds([(10.0, 4.0, 100)], 110, 10, 0, 1_000) == 0.0  # done
    # One iteration only: it is used, compile and all. 6 s other + 4 s per 100 rows.
    assert eta_seconds([(10.0, 4.0, 100)], 110, 10, 2, 1_000) == pytest.approx(
        2 * 6.0 + 0.04 * (110 + 120)
    )


def test_eta_tracks_a_real_hopper_run():
    # Hopper, alpha = 0, seed 0, on one AVX2 core: 2 h 37 min of iterations, the fit growing
    # from 19 s to 295 s. A constant time per real step said 49 min left at 24k steps.
    path = os.path.join(ROOT, "docs", "results", "hopper-cpu-a0-s0", "metrics.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    t = [float(r["Time/Iteration"]) for r in rows]
    fit = [float(r["Time/Fit"]) for r in rows]
    steps = [int(float(r["n_timesteps"])) for r in rows]
    per = steps[1] - steps[0]
    for k in (6, 10, 20, 30):
        history = [(t[i], fit[i], steps[i] - per) for i in range(k)]
        eta = eta_seconds(history, steps[k - 1], per, len(rows) - k, 100_000)
        left = sum(t[k:])
        assert abs(eta - left) <= 0.1 * left, (k, eta / 60, left / 60)
