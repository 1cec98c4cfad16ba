"""The library under float64 (`JAX_ENABLE_X64=1`, used to check gradients).

x64 is process-global, so `tests/_float64_checks.py` runs once in a subprocess (module
fixture) and prints a JSON report; the tests below assert on it. Policy checked: float32
stays the default of every init function; computations follow the dtype of the params
and data passed in.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

# One x64 subprocess (about a minute of compiling) serves the file: the slow set.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F64 = ["float64"]


@pytest.fixture(scope="module")
def report():
    r = subprocess.run(
        [sys.executable, os.path.join("tests", "_float64_checks.py")],
        cwd=ROOT,
        env=dict(os.environ, JAX_ENABLE_X64="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_api_pipeline_runs_in_float64(report):
    """WORKSPACE's API snippet with float64 buffer, ensemble and policy: every output
    float64 and finite, the collected data added to the buffer."""
    res = report["pipeline"]
    assert res["buffer_dtypes"] == F64 and res["count"] > 0
    fit = res["fit"]
    assert fit["state_dtypes"] == fit["info_dtypes"] == fit["predict_dtypes"] == F64
    assert fit["finite"] and min(fit["epochs"]) >= 1
    meta = res["meta"]
    assert meta["params_dtypes"] == meta["post_dtypes"] == meta["returns_dtypes"] == F64
    assert meta["finite"]


@pytest.mark.parametrize("outer", ["trpo", "ppo"])
def test_meta_steps_in_float64(report, outer):
    """Two meta steps in one scan (the carry keeps its float64 dtypes), TRPO and PPO."""
    res = report["pipeline"]["meta"] if outer == "trpo" else report["ppo"]
    assert res["params_dtypes"] == res["post_dtypes"] == res["returns_dtypes"] == F64
    assert res["finite"] and not any(res["nonfinite"]) and any(res["accepted"])
    if outer == "ppo":
        assert res["kl_coeff_dtypes"] == F64


def test_fit_in_float64(report):
    """A bfloat16-compute fit of float64 params stays float64; a float32 fit under x64
    stays float32; from the same initial params a float64 fit matches the float32 one
    (same rows: the split and shuffle keys are float32 in every mode)."""
    fits = report["fits"]
    bf16 = fits["bf16_f64"]
    assert bf16["state_dtypes"] == bf16["info_dtypes"] == bf16["predict_dtypes"] == F64
    assert bf16["finite"]
    f32, f64 = fits["f32"], fits["f64_from_f32_init"]
    assert f32["state_dtypes"] == f32["info_dtypes"] == f32["predict_dtypes"] == ["float32"]
    assert f64["state_dtypes"] == f64["info_dtypes"] == F64
    assert f32["finite"] and f64["finite"] and f32["epochs"] == f64["epochs"]
    np.testing.assert_allclose(f64["valid_loss"], f32["valid_loss"], rtol=1e-5)


def test_meta_gradient_matches_finite_differences_in_float64(report):
    """The meta-gradient on float64 imagined samples equals fourth-order central finite
    differences to rtol 1e-6 (seen: 2e-9 at worst; float32 rounding of the differences
    alone would be ~1e-4), and the tolerance is tight enough to reject first-order MAML."""
    res = report["meta_gradient"]
    assert res["sample_dtypes"] == res["grad_dtypes"] == F64
    grad, fd, first_order = (np.asarray(res[k]) for k in ("grad", "fd", "first_order"))
    atol = 1e-9
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=atol)
    assert np.max(np.abs(first_order - fd)) > 1e3 * (1e-6 * np.max(np.abs(fd)) + atol)


def test_float32_stays_float32_and_mixed_inputs_promote_under_x64(report):
    """x64 alone changes nothing: float32 inputs compute in float32; a float64 operand
    (models, loss) makes that computation float64, the params keep their dtype."""
    res = report["mixed"]
    assert res["imagine_f32_models"] == ["float32"]
    assert res["imagine_f64_models"] == F64
    for loss, dtypes in (("f32_loss", ["float32"]), ("f64_loss", F64)):
        step = res[f"trpo_{loss}"]
        assert step["params_dtypes"] == ["float32"] and step["loss_dtypes"] == dtypes
        assert step["accepted"]


def test_init_meta_state_takes_a_dtype(report):
    assert report["init_meta_state"] == {"dtypes": F64}


def test_init_functions_default_to_float32_under_x64(report):
    """Without a dtype argument every init makes float32, x64 or not."""
    assert report["defaults"] == ["float32"]
