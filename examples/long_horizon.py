"""The paper's long-horizon variant: real horizon 1000, imagined horizon 500, imagined
rollouts started from real states drawn from the buffer (not the reset distribution).

Only configuration changes: `horizon`, `meta.horizon` and `meta.start_from="buffer"`.

    python -m examples.long_horizon [--preset=paper] [--iterations=100]
"""

from __future__ import annotations

import argparse

import jax

from mbmpo_jax import config, mbmpo

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    run(args.preset, args.iterations)


if __name__ == "__main__":
    main()
