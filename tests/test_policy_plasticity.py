"""experiments.policy_plasticity: the fake ensemble's disagreement map against a numpy
formula, the KL map's consistency, and the CLI's bad-input handling."""

import json

import numpy as np
import pytest

from experiments import policy_plasticity as pp
from tests._cli import run_module


def test_maps_match_the_fake_models_formula():
    res = pp.run(iterations=1, seed=0, alpha=1e-3, rollouts=2, grid=7, bias_range=0.05)
    axis = np.asarray(res["axis"])
    np.testing.assert_allclose(axis, np.linspace(1.5, 6.5, 7), rtol=1e-6)
    gx, gy = np.meshgrid(axis, axis)
    d = np.hypot(gx - 4.0, gy - 4.0)
    mask = np.minimum(d / (2 * np.sqrt(2)), 1.0) ** 2
    b = np.asarray(res["biases"])  # [5 models, 2 dims]
    assert b.shape == (5, 2) and np.all(np.abs(b) <= 0.05)
    # every model predicts s + 0.1 a + mask(s) b_k: the std over models is mask * std(b_k)
    expected = mask * np.std(b, axis=0).mean()
    np.testing.assert_allclose(res["std_grid"], expected, rtol=1e-4, atol=1e-7)
    assert np.asarray(res["std_grid"])[3, 3] == pytest.approx(0.0, abs=1e-7)  # the goal
    kl = np.asarray(res["kl_grid"])
    assert kl.shape == (7, 7) and np.all(np.isfinite(kl)) and np.all(kl >= 0)
    r = np.corrcoef(np.ravel(res["std_grid"]), kl.ravel())[0, 1]
    assert res["r_grid"] == pytest.approx(r, abs=1e-9)
    (row,) = res["history"]
    assert row["iteration"] == 1 and 0.0 <= row["accept_rate"] <= 1.0
    json.dumps(res)  # what the CLI writes


@pytest.mark.parametrize("at_goal", [False, True])
def test_fake_model_step_is_the_true_step_plus_masked_bias(at_goal):
    rng = np.random.default_rng(1)
    obs = rng.uniform(0.0, 8.0, (50, 2)).astype(np.float32)
    act = rng.uniform(-1.0, 1.0, (50, 2)).astype(np.float32)
    bias = np.array([0.03, -0.02], np.float32)
    out = pp.fake_model_step({"bias": bias, "at_goal": np.float32(at_goal)}, obs, act)
    x = np.minimum(np.hypot(obs[:, 0] - 4.0, obs[:, 1] - 4.0) / (2 * np.sqrt(2)), 1.0)
    mask = (1.0 - x) ** 2 if at_goal else x**2
    np.testing.assert_allclose(out, obs + 0.1 * act + mask[:, None] * bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--grid=1"], "--grid must be >= 2"),
        (["--alpha=-1"], "--alpha must be"),
        (["--bias_range=0"], "--bias_range must be positive"),
        (["extra"], "unexpected arguments"),
    ],
)
def test_bad_input_one_line(args, words, tmp_path):
    proc = run_module("experiments.policy_plasticity", f"--out={tmp_path}/o", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and words in proc.stderr


def test_existing_results_are_never_overwritten(tmp_path):
    out = tmp_path / "done"
    out.mkdir()
    (out / "plasticity.json").write_text("{}")
    proc = run_module("experiments.policy_plasticity", f"--out={out}")
    assert proc.returncode == 2 and "exists" in proc.stderr
    assert (out / "plasticity.json").read_text() == "{}"
