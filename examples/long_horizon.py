"""The paper's long-horizon variant: real horizon 1000, imagined horizon 500, imagined
rollouts started from real states drawn from the buffer (not the reset distribution).

Only configuration changes: `horizon`, `meta.horizon` and `meta.start_from="buffer"`.

    python -m examples.long_horizon [--preset=paper] [--iterations=100]

Bad flag values: one-line error, exit code 2.
"""

from __future__ import annotations

import jax
from absl import app, flags

from experiments import _quiet  # noqa: F401  (keeps library chatter off the console)
from experiments._cli import fail, own_flags_parser
from mbmpo_jax import config, mbmpo

# A FlagValues of its own: the examples can be imported together (tests) without clashing.
_FLAGS = flags.FlagValues()
_PRESET = flags.DEFINE_enum("preset", "paper", config.PRESETS, "config preset", flag_values=_FLAGS)
_ITERATIONS = flags.DEFINE_integer(
    "iterations", 100, "MB-MPO iterations", lower_bound=1, flag_values=_FLAGS
)

LONG_HORIZON = ("horizon=1000", "meta.horizon=500", "meta.start_from=buffer")


def run(preset: str = "paper", iterations: int = 100, overrides=(), seed: int = 0, log=print):
    cfg = config.get_config("halfcheetah", preset)
    config.apply_overrides(cfg, [*LONG_HORIZON, f"num_iterations={iterations}", *overrides])
    config.validate(cfg)
    trainer = mbmpo.Trainer(cfg)
    state, history = trainer.train(
        jax.random.PRNGKey(seed),
        callback=lambda state, m: log(
            f"it {int(m['iteration'])}: steps {int(m['n_timesteps'])}, "
            f"return (H={cfg.horizon}) {m['PrePolicy/AverageReturn']:.1f}, "
            f"imagined (H={cfg.meta.horizon}) {m['Meta/ImaginedPreReturn']:.1f}"
        ),
    )
    return trainer, state, history


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        run(_PRESET.value, _ITERATIONS.value)
    except config.ConfigError as e:
        fail(str(e))


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
