"""Wall time of one meta phase (issue 18): the compiled ``num_meta_steps`` TRPO meta steps
of a preset's configuration, on the models fitted to its warm-up data.

Builds the `Trainer` of ``--env`` / ``--preset`` with the given ``--config.*``-style
overrides (without the ``--config.`` prefix), collects the warm-up, fits the ensemble
once, then times the meta phase (median of ``--repeats`` calls after a compiling one).
Used to measure what the curvature products cost: ``meta.cg_iters=1`` leaves one of the
ten, ``meta.fvp_subsample=n`` computes them on every n-th imagined rollout.

    taskset -c 0 PYTHONPATH=. python docs/probes/meta_phase_time.py --env=halfcheetah \
        meta.fvp_subsample=4
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from mbmpo_jax import config as config_lib
from mbmpo_jax import dynamics, mbmpo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="halfcheetah")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="e.g. meta.fvp_subsample=4")
    args = parser.parse_args()
    cfg = config_lib.get_config(args.env, args.preset)
    config_lib.apply_overrides(cfg, args.overrides)
    config_lib.validate(cfg)
    trainer = mbmpo.Trainer(cfg)
    state = trainer.init(jax.random.key(0))
    ens, _ = dynamics.fit(state.ensemble, state.buffer, jax.random.key(1), trainer.ens_cfg)
    meta_args = trainer.meta_args(state, trainer.models_fn(ens, jax.random.key(2)))

    def timed() -> float:
        start = time.perf_counter()
        jax.block_until_ready(trainer._meta_train(*meta_args))
        return time.perf_counter() - start

    first = timed()
    median = statistics.median(timed() for _ in range(args.repeats))
    per_step = median / cfg.meta.num_meta_steps
    print(
        f"{args.env} {args.preset} {' '.join(args.overrides) or '(preset)'}: first call "
        f"{first:.1f} s, meta phase {median:.2f} s (median of {args.repeats}), "
        f"{per_step * 1e3:.0f} ms per meta step"
    )


if __name__ == "__main__":
    main()
