"""A new task in a few lines: HalfCheetah running backwards, trained by the same loop.

A task is a `TaskSpec`; swapping its reward makes a new task on the same MuJoCo model.
The reward reads observations only, so imagination and the real environment agree.

    python -m examples.custom_task [--preset=cpu] [--iterations=10]

Bad flag values: one-line error, exit code 2.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import _quiet  # noqa: F401  (keeps library chatter off the console)
from experiments._cli import fail, own_flags_parser
from mbmpo_jax import config, mbmpo
from mbmpo_jax.envs.tasks import get_task

# A FlagValues of its own: the examples can be imported together (tests) without clashing.
_FLAGS = flags.FlagValues()
_PRESET = flags.DEFINE_enum("preset", "cpu", config.PRESETS, "config preset", flag_values=_FLAGS)
_ITERATIONS = flags.DEFINE_integer(
    "iterations", 10, "MB-MPO iterations", lower_bound=1, flag_values=_FLAGS
)


def backward_reward(obs, act, next_obs):
    """Reward for running towards -x: the negated forward velocity minus a control cost."""
    return -next_obs[..., 8] - 0.1 * jnp.sum(jnp.square(act), axis=-1)


def make_task(horizon: int = 200):
    cheetah = get_task("halfcheetah", horizon=horizon)
    return dataclasses.replace(cheetah, name="halfcheetah_backward", reward_fn=backward_reward)


def run(preset: str = "cpu", iterations: int = 10, overrides=(), seed: int = 0, log=print):
    cfg = config.get_config("halfcheetah", preset)
    config.apply_overrides(cfg, [f"num_iterations={iterations}", *overrides])
    config.validate(cfg)
    trainer = mbmpo.Trainer(cfg, task=make_task(cfg.horizon))
    return trainer.train(
        jax.random.PRNGKey(seed),
        callback=lambda state, m: log(
            f"it {int(m['iteration'])}: steps {int(m['n_timesteps'])}, "
            f"backward return {m['PrePolicy/AverageReturn']:.1f}"
        ),
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        run(_PRESET.value, _ITERATIONS.value)
    except config.ConfigError as e:
        fail(str(e))


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
