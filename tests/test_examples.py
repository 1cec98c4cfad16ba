"""Each example runs end to end at a tiny size and what it computes is checked; their
CLIs reject bad flags with one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples import custom_task, ensemble_compounding_error, long_horizon, robustness_bias
from mbmpo_jax import dynamics
from tests._cli import one_line_error, run_module

# Tiny sizes: the smoke preset, cut further.
TINY = ("initial_random_steps=200", "meta.num_meta_steps=1")


@pytest.mark.slow
def test_custom_task_backward_reward_and_loop():
    task = custom_task.make_task(horizon=20)
    rng = np.random.default_rng(0)
    obs, nxt = rng.normal(size=(2, 3, 17)).astype(np.float32)
    act = rng.uniform(-1, 1, (3, 6)).astype(np.float32)
    want = -nxt[:, 8] - 0.1 * (act**2).sum(-1)
    np.testing.assert_allclose(np.asarray(task.reward(obs, act, nxt)), want, rtol=1e-6)

    state, history = custom_task.run("smoke", iterations=1, overrides=TINY, log=lambda s: None)
    (m,) = history
    # The real environment scored the collected rollouts with the backward reward: the
    # return equals minus the distance travelled over dt, minus the control cost.
    assert np.isfinite(m["PrePolicy/AverageReturn"]) and np.isfinite(m["PostPolicy/AverageReturn"])
    assert int(state.iteration) == 1


@pytest.mark.slow
def test_robustness_bias_models_fn_and_runs():
    # The bias is drawn per model and iteration: u_k + N(0, 0.1) per dimension.
    ens = dynamics.init(
        jax.random.PRNGKey(0), 5, 2, dynamics.EnsembleConfig(num_models=4, hidden=(8,))
    )
    models, bias = robustness_bias.make_models_fn(2.0, 3.0)(ens, jax.random.PRNGKey(1))
    bias = np.asarray(bias)
    assert bias.shape == (4, 5)
    per_model = bias.mean(axis=1)
    assert np.all((per_model > 2.0 - 0.3) & (per_model < 3.0 + 0.3))
    assert 0.03 < bias.std(axis=1).mean() < 0.2
    # biased_step adds exactly the bias to the model's prediction.
    m0 = jax.tree.map(lambda x: x[0], models)
    obs, act = jnp.ones((3, 5)), jnp.zeros((3, 2))
    np.testing.assert_allclose(
        robustness_bias.biased_step((m0, bias[0]), obs, act),
        dynamics.model_step(m0, obs, act) + bias[0],
        rtol=1e-6,
    )
    results = robustness_bias.run(
        "smoke", iterations=1, biases=[(0.0, 1.0)], overrides=TINY, log=lambda s: None
    )
    assert set(results) == {(0.0, 1.0, 1e-3), (0.0, 1.0, 0.0)}
    # alpha = 0 really means no adaptation: pre and post policies coincide.
    assert results[(0.0, 1.0, 0.0)][0]["Meta/KLPrePost"] == 0.0
    assert results[(0.0, 1.0, 1e-3)][0]["Meta/KLPrePost"] > 0.0


@pytest.mark.slow
def test_long_horizon_config_and_run():
    trainer, state, history = long_horizon.run(
        "smoke",
        iterations=1,
        overrides=("horizon=60", "meta.horizon=30", *TINY),
        log=lambda s: None,
    )
    assert trainer.cfg.meta.start_from == "buffer"
    assert trainer.meta_cfg.start_from == "buffer"
    assert trainer.task.horizon == 60 and trainer.meta_cfg.horizon == 30
    assert np.isfinite(history[0]["Meta/ImaginedPreReturn"])
    # The defaults are the paper's long-horizon run.
    assert long_horizon.LONG_HORIZON == (
        "horizon=1000",
        "meta.horizon=500",
        "meta.start_from=buffer",
    )


def test_ensemble_compounding_error_curve():
    r = ensemble_compounding_error.run(
        train_rollouts=8, test_rollouts=4, horizon=25, hidden=(64, 64), num_models=2, max_epochs=150
    )
    mse = r["mse"]
    assert mse.shape == (25,) and r["mse_per_model"].shape == (2, 25)
    assert np.all(np.isfinite(mse))
    # Errors compound: the open-loop error late in the horizon exceeds the one-step error.
    assert mse[-5:].mean() > 3 * mse[0]
    # The model learned something: one step ahead it beats predicting no change by far
    # (ratio 0.13-0.21 over seeds 0-2 with 150 epochs; 60 epochs left it at 0.40-0.50).
    assert mse[0] < 0.5 * r["mse_persistence"][0]


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("custom_task", ["--iterations=-1"], "--iterations=-1"),
        ("custom_task", ["--preset=fast"], "--preset=fast"),
        ("long_horizon", ["--iterations", "ten"], "--iterations=ten"),
        ("long_horizon", ["paper"], "unexpected arguments: paper"),
        ("robustness_bias", ["--bias=0.5,x"], "--bias=0.5,x"),
        ("robustness_bias", ["--bias=-1"], "--bias=-1"),
        ("ensemble_compounding_error", ["--horizon=0"], "--horizon=0"),
        ("ensemble_compounding_error", ["--env=cheetah"], "--env=cheetah"),
        ("ensemble_compounding_error", ["--out=tests"], "is a directory"),
        ("ensemble_compounding_error", ["--out=curve.xyz"], "unknown image format"),
    ],
)
def test_example_cli_bad_input(module, args, message):
    """Rejected while parsing flags (before any JAX work): one line, exit 2."""
    line = one_line_error(run_module(f"examples.{module}", *args, timeout=120), 2)
    assert message in line


def test_workspace_api_snippet_runs():
    """The end-to-end snippet of WORKSPACE.md's "API in five minutes" runs as written."""
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "WORKSPACE.md")).read()
    section = text.split("## API in five minutes", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "WORKSPACE.md", "exec"), namespace)
    assert namespace["diags"].pre_return.shape == (3, 4)  # [meta steps, T]
    assert namespace["batch"].returns.shape == (4,)  # one real episode per adapted policy
    # The buffer holds the warm-up data and, after it, the tailored-exploration data.
    assert int(namespace["buf"].count) > namespace["batch"].num_steps > 0
    assert namespace["fit_info"].epochs.shape == (2,)  # K models
