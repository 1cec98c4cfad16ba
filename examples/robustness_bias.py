"""The paper's robustness experiment: MB-MPO against ME-TRPO (alpha = 0) on biased models.

HalfCheetah, horizon 100. At every iteration each model k gets an additive bias on its
predicted next observation, b_k = u_k + eps_k with u_k ~ U(interval) (one draw per model
and iteration) and eps_k ~ N(0, 0.1^2) per observation dimension around it. The bias is
redrawn after every fit, so a policy cannot learn it away; adaptation can.

Composes the public pieces: `Trainer(cfg, dynamics_fn=..., models_fn=...)` imagines with
the perturbed models, everything else is the standard loop.

    python -m examples.robustness_bias [--preset=cpu] [--iterations=20] [--bias=0.5,1.0]

Bad flag values: one-line error, exit code 2.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import _quiet  # noqa: F401  (keeps library chatter off the console)
from experiments._cli import fail, own_flags_parser
from mbmpo_jax import config, dynamics, mbmpo

# A FlagValues of its own: the examples can be imported together (tests) without clashing.
_FLAGS = flags.FlagValues()
_PRESET = flags.DEFINE_enum("preset", "cpu", config.PRESETS, "config preset", flag_values=_FLAGS)
_ITERATIONS = flags.DEFINE_integer(
    "iterations", 20, "MB-MPO iterations per run", lower_bound=1, flag_values=_FLAGS
)
_BIAS = flags.DEFINE_list(
    "bias", ["0.5", "1.0"], "upper ends b of the U(0, b) bias intervals", flag_values=_FLAGS
)


def biased_step(model_k, obs, act):
    """`dynamics.model_step` plus the model's bias: model_k = (dynamics.Model, bias [O])."""
    model, bias = model_k
    return dynamics.model_step(model, obs, act) + bias


def make_models_fn(low: float, high: float, noise_std: float = 0.1):
    def models_fn(ens: dynamics.EnsembleState, key: jax.Array):
        models = dynamics.model_params(ens)
        num_models, obs_dim = models.norm.obs_mean.shape
        k_u, k_eps = jax.random.split(key)
        u = jax.random.uniform(k_u, (num_models, 1), minval=low, maxval=high)
        bias = u + noise_std * jax.random.normal(k_eps, (num_models, obs_dim))
        return models, bias.astype(jnp.float32)

    return models_fn


def run(
    preset: str = "cpu",
    iterations: int = 20,
    biases=((0.0, 0.5), (0.0, 1.0)),
    alphas=(1e-3, 0.0),
    overrides=(),
    seed: int = 0,
    log=print,
) -> dict[tuple[float, float, float], list[dict[str, float]]]:
    """Returns {(bias_low, bias_high, alpha): metrics per iteration}."""
    results = {}
    for low, high in biases:
        for alpha in alphas:
            cfg = config.get_config("halfcheetah", preset)
            config.apply_overrides(
                cfg,
                [
                    "horizon=100",
                    "meta.horizon=100",
                    f"meta.inner_lr={alpha}",
                    f"num_iterations={iterations}",
                    *overrides,
                ],
            )
            config.validate(cfg)
            trainer = mbmpo.Trainer(
                cfg, dynamics_fn=biased_step, models_fn=make_models_fn(low, high)
            )
            _, history = trainer.train(jax.random.PRNGKey(seed))
            name = "MB-MPO" if alpha > 0 else "ME-TRPO"
            last = history[-1]
            log(
                f"bias U({low}, {high}) {name:>7}: return {last['PrePolicy/AverageReturn']:8.1f}"
                f" after {int(last['n_timesteps'])} steps"
            )
            results[(low, high, alpha)] = history
    return results


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        highs = [float(b) for b in _BIAS.value]
    except ValueError:
        highs = []
    if not highs or not all(math.isfinite(b) and b >= 0 for b in highs):
        fail(f"--bias={','.join(_BIAS.value)}: give finite numbers >= 0, e.g. --bias=0.5,1.0")
    try:
        run(_PRESET.value, _ITERATIONS.value, biases=[(0.0, h) for h in highs])
    except config.ConfigError as e:
        fail(str(e))


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
