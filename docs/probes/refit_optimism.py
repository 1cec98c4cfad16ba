"""Do a run's models stay optimistic about its policy once they are fitted on its own data?
(issue 15, HalfCheetah's late optimism)

  PYTHONPATH=. python docs/probes/refit_optimism.py RUN_DIR [RUN_DIR ...] \
      [--checkpoints=latest] [--episodes=20] [--rollouts=20] [--copies=5] [--long_epochs=50] \
      [--recent=20000] [--random=0] [--weighted=5] [--weighted_capacity=0] [--fit_key=11]

Late in some HalfCheetah runs the meta phase rates its pre-update policy about 1.4-2x
what the policy makes in the world (`imagined_vs_real.py`; `imagined_profile.py`). Two
readings: the optimism is *off the models' data* (the policy has just moved to states the
buffer barely holds; the next fit, on the episodes it collects there, would correct it,
and the search chases a moving error), or it is *in* their data (the fit does not take
the policy's own states in well enough: the buffer's older data dominate the loss, or the
patience rule stops the warm-started fit after a few epochs).

For each run's checkpoint this restores the state, runs --episodes real episodes of the
pre-update policy (native MuJoCo, sampled actions, no auto-reset), and rates the same
policy in imagination, closed loop from the task's start states over the meta phase's
horizon (`meta.horizon`), --rollouts rollouts in each model, sampled actions, as the meta
phase does with `start_from=reset`:

  as saved         the checkpoint's models (fitted before the meta phase that made this
                   policy: the view the meta phase had)
  refit            those models fitted again, the run's own way (`dynamics.fit`, warm
                   start, the run's `ensemble` config), on the buffer with the probe's
                   episodes added once: about what the next iteration's fit would see
  refit, N ep.     the same with the patience rule off and --long_epochs epochs
                   (`patience=0`, `max_epochs=N`): is the early stop what leaves the error in?
  refit, xN        the run's fit with the episodes added --copies times (they then weigh
                   N x in the loss and push the buffer's oldest rows out): does weighting
                   the policy's own states remove it?
  refit, last M    the run's fit on a buffer of capacity --recent (a comma list: one row
                   each) holding only the saved buffer's newest rows and the episodes
                   (the view a run with `ensemble.buffer_size=M` would have, RLlib's port
                   keeps 10,000): do fewer, more recent rows do what the copies do?
  refit, random M  the control of the row above: the saved buffer's rows less a random
                   choice of them (M - the episodes' transitions kept, in their order) and
                   the episodes (--random, a comma list; 0 skips): is it which rows go, or
                   how many?
  refit, wN        the run's fit on the buffer with the episodes added once and weighted
                   --weighted times in the losses (`ensemble.recent_rows` = the episodes'
                   transitions, `ensemble.recent_weight` = N): the copies' weight without
                   the copies (none of them in the validation split), as a run would fit
  refit, wN, last M  the same on the saved buffer's newest M - (episodes' transitions) rows
                   and the episodes (--weighted_capacity=M; 0 skips the row): with M =
                   100,000 - 4 x the episodes' transitions, the buffer the xN row fits
                   (the copies push out as many of the oldest rows), without the copies

and prints, per row, the imagined reward per step against the real episodes' over the same
first `meta.horizon` steps, their ratio, and the models' one-step error on the episodes'
transitions (mean squared error of the ensemble mean over observation dimensions, each
scaled by 1 / the episodes' variance of that dimension: 1.0 is as bad as predicting their
mean). If the refit brings the ratio near 1, the optimism was off the data; if not, the fit
leaves it in. The real episodes come from the pre-update policy, not the adapted policies
that collect a run's data (their KL from it is about 1e-3 to 1e-2 late in a run), and the
refit's keys are the probe's own, so "refit" is like, not equal to, the run's next fit.
--long_epochs=0, --copies=0, --recent=0 or --weighted=0 skips that row. Every refit draws
its splits and shuffles from --fit_key (another key: the fits' own spread).
Needs the run's checkpoints (runs/). On one core of an AVX2-only EPYC, with a full 100k buffer
and the (512, 512) models, a fit at the run's patience took 2-5 min and the 50-epoch one 17 min.
"""

import argparse
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imagined_profile import _restore, imagine_in_models  # noqa: E402  (this folder's probes)
from return_profile import trajectories  # noqa: E402

from mbmpo_jax import buffer as buffer_lib  # noqa: E402
from mbmpo_jax import dynamics  # noqa: E402


def imagined_per_step(cfg, trainer, params, ens, rollouts: int) -> float:
    """Mean imagined reward per alive step over the meta phase's horizon, every model."""
    models = dynamics.model_params(ens)
    ro = imagine_in_models(cfg, trainer, params, models, cfg.meta.horizon, rollouts)
    rew, mask = np.asarray(ro.rew, np.float64), np.asarray(ro.mask, np.float64)
    return float(rew.sum() / max(mask.sum(), 1.0))


def one_step_error(ens, obs, act, next_obs) -> float:
    """MSE of the ensemble mean's next observation, each dimension over its variance."""
    pred = np.asarray(dynamics.predict(ens, jnp.asarray(obs), jnp.asarray(act)), np.float64)
    var = np.maximum(next_obs.var(0), 1e-8)
    return float(np.mean(np.square(pred.mean(0) - next_obs) / var))


def rows_for(
    run_dir: str,
    wanted: str,
    episodes: int,
    rollouts: int,
    copies: int,
    long_epochs: int,
    recent: list[int],
    weighted: float = 0.0,
    fit_key: int = 11,
    weighted_capacity: int = 0,
    random_keep: tuple[int, ...] = (),
):
    cfg, trainer, state = _restore(run_dir, wanted)
    if cfg.meta.get("model_action", "clipped") != "clipped":
        raise SystemExit(f"{run_dir}: made for model_action=clipped runs")
    params = state.meta.params
    obs, act, rew, mask = trajectories(trainer.task, params, episodes, cfg.horizon, True, 123)
    h = cfg.meta.horizon
    real = float(rew[:h].sum() / max(mask[:h].sum(), 1.0))
    alive = mask.reshape(-1).astype(bool)  # transitions taken while the episode was alive
    o = obs[:-1].reshape(-1, obs.shape[-1])[alive].astype(np.float32)
    a = act.reshape(-1, act.shape[-1])[alive].astype(np.float32)
    n = obs[1:].reshape(-1, obs.shape[-1])[alive].astype(np.float32)

    def added(times: int):
        buf = state.buffer
        for _ in range(times):
            buf = buffer_lib.add(buf, o, a, n)
        return buf

    old_o, old_a, old_n = buffer_lib.valid_data(state.buffer)  # oldest first, read once

    def saved_rows_and_episodes(capacity: int, rows):
        """A buffer of ``capacity`` holding the saved buffer's ``rows``, then the episodes."""
        buf = buffer_lib.init(capacity, old_o.shape[-1], old_a.shape[-1])
        buf = buffer_lib.add(buf, old_o[rows], old_a[rows], old_n[rows])
        return buffer_lib.add(buf, o, a, n)

    def random_subset(capacity: int):
        keep = capacity - len(o)
        rows = np.sort(np.random.default_rng(fit_key).permutation(len(old_o))[:keep])
        return saved_rows_and_episodes(capacity, rows)

    def recent_only(capacity: int):
        return saved_rows_and_episodes(capacity, slice(-capacity, None))

    base = trainer.ens_cfg
    long_fit = dataclasses.replace(base, patience=0, max_epochs=long_epochs)
    once = added(1)
    fits = [("as saved", None, None), ("refit", once, base)]
    if long_epochs:
        fits.append((f"refit, {long_epochs} ep.", once, long_fit))
    if copies:
        fits.append((f"refit, x{copies}", added(copies), base))
    for capacity in recent:
        fits.append((f"refit, last {capacity:,}", recent_only(capacity), base))
    for capacity in random_keep:
        fits.append((f"refit, random {capacity:,}", random_subset(capacity), base))
    if weighted:
        w_cfg = dataclasses.replace(base, recent_rows=len(o), recent_weight=weighted)
        fits.append((f"refit, w{weighted:g}", once, w_cfg))
        if weighted_capacity:
            label = f"refit, w{weighted:g}, last {weighted_capacity:,}"
            fits.append((label, recent_only(weighted_capacity), w_cfg))
    name = os.path.basename(run_dir.rstrip("/"))
    for label, buf, ens_cfg in fits:
        ens, epochs = state.ensemble, float("nan")
        if buf is not None:
            ens, info = dynamics.fit(state.ensemble, buf, jax.random.PRNGKey(fit_key), ens_cfg)
            epochs = float(np.mean(jax.device_get(info.epochs)))
        imag = imagined_per_step(cfg, trainer, params, ens, rollouts)
        err = one_step_error(ens, o, a, n)
        yield name, int(state.n_timesteps), label, epochs, imag, real, err


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--checkpoints", default="latest")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--rollouts", type=int, default=20)
    p.add_argument("--copies", type=int, default=5)
    p.add_argument("--long_epochs", type=int, default=50)
    p.add_argument("--recent", default="20000")
    p.add_argument("--random", default="0")
    p.add_argument("--weighted", type=float, default=5.0)
    p.add_argument("--weighted_capacity", type=int, default=0)
    p.add_argument("--fit_key", type=int, default=11)
    a = p.parse_args()
    if min(a.episodes, a.rollouts) < 1:
        p.error("--episodes and --rollouts must be >= 1")
    if min(a.copies, a.long_epochs) < 0:
        p.error("--copies and --long_epochs must be >= 0 (0 skips the row)")
    try:
        recent = [int(r) for r in a.recent.split(",") if int(r) != 0]
        random_keep = tuple(int(r) for r in a.random.split(",") if int(r) != 0)
    except ValueError:
        p.error(
            f"--recent and --random take comma lists of integers, got {a.recent!r}, {a.random!r}"
        )
    if any(r < 10 for r in recent) or any(r < 10 for r in random_keep):
        p.error("--recent and --random must be 0 (skip) or capacities >= 10")
    if not a.weighted >= 0:
        p.error("--weighted must be >= 0 (0 skips the row)")
    if a.weighted_capacity < 0 or 0 < a.weighted_capacity < 10:
        p.error("--weighted_capacity must be 0 (skip) or >= 10")
    print(
        "run | real steps | models | fit epochs (mean) | imagined per step | real per step "
        "(first meta.horizon steps) | ratio | one-step error on the episodes (1 = their mean)"
    )
    for r in a.runs:
        for c in a.checkpoints.split(","):
            for run, steps, label, epochs, imag, real, err in rows_for(
                r,
                c,
                a.episodes,
                a.rollouts,
                a.copies,
                a.long_epochs,
                recent,
                a.weighted,
                a.fit_key,
                a.weighted_capacity,
                random_keep,
            ):
                print(
                    f"{run} | {steps:,} | {label} | {epochs:.1f} | {imag:.2f} | {real:.2f} | "
                    f"{imag / real if real else float('nan'):.2f} | {err:.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
