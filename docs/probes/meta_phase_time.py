"""Wall time of one meta phase (issue 18): the compiled ``num_meta_steps`` TRPO meta steps
of a preset's configuration, on the models fitted to its warm-up data.

Builds the `Trainer` of ``--env`` / ``--preset`` with the given ``--config.*``-style
overrides (without the ``--config.`` prefix), collects the warm-up, fits the ensemble
once, then times the meta phase (median of ``--repeats`` calls after a compiling one).
Used to measure what the curvature products cost: ``meta.cg_iters=1`` leaves one of the
ten, ``meta.fvp_subsample=n`` computes them on every n-th imagined rollout. Also prints
what the phase's outer steps did (the same start for every override, so comparable):
their KL on all post-update samples (TRPO's bound ``meta.max_kl``), line-search
backtracks, surrogate gain, and the policy's pre-update entropy at the first and last
meta step. ``--from_run=DIR`` starts instead from a run's latest checkpoint (its
config.json with the overrides, its fitted models, buffer and policy): the meta phase of
a late iteration.

    taskset -c 0 PYTHONPATH=. python docs/probes/meta_phase_time.py --env=halfcheetah \
        meta.fvp_subsample=4
    taskset -c 0 PYTHONPATH=. python docs/probes/meta_phase_time.py \
        --from_run=runs/hc-cpu-rerun-s1 meta.fvp_subsample=4
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from mbmpo_jax import config as config_lib
from mbmpo_jax import dynamics, mbmpo
from mbmpo_jax.checkpoint import Checkpointer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="halfcheetah")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--from_run", default="", help="a run directory with checkpoints")
    parser.add_argument("overrides", nargs="*", help="e.g. meta.fvp_subsample=4")
    args = parser.parse_args()
    if args.from_run:
        with open(os.path.join(args.from_run, "config.json")) as f:
            cfg = config_lib.from_json(f.read())
        args.env, args.preset = cfg.env, f"{args.from_run} (latest checkpoint)"
    else:
        cfg = config_lib.get_config(args.env, args.preset)
    config_lib.apply_overrides(cfg, args.overrides)
    config_lib.validate(cfg)
    trainer = mbmpo.Trainer(cfg)
    if args.from_run:
        ck = Checkpointer(args.from_run, keep=cfg.checkpoint_keep)
        key = jax.random.PRNGKey(0)  # the checkpoints' key layout
        state = ck.restore(
            ck.latest_step(), trainer.empty_state(key), older=trainer.older_layouts(key)
        )
        ens = state.ensemble  # fitted in the checkpoint's iteration
    else:
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
    _, _, diags = trainer._meta_train(*meta_args)
    kl, backtracks = np.asarray(diags.kl_after), np.asarray(diags.num_backtracks)
    gain = np.asarray(diags.surr_after - diags.surr_before)
    print(
        f"outer steps: KL {np.median(kl):.4f} median ({kl.min():.4f}-{kl.max():.4f}; "
        f"max_kl {cfg.meta.max_kl}), backtracks {backtracks.mean():.2f} mean, surrogate gain "
        f"{gain.mean():.4f} mean, entropy {float(diags.entropy[0]):.2f} at the first meta step, "
        f"{float(diags.entropy[-1]):.2f} at the last"
    )


if __name__ == "__main__":
    main()
