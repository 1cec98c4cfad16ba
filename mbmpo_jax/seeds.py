"""N seeds of one configuration as one program: the compiled phases vmapped over seeds.

`SeedsTrainer(cfg, num_seeds)` runs N independent MB-MPO runs that differ only in their
seed. The state is `mbmpo.TrainState` with a leading [N] axis on every leaf; each
iteration fits the N ensembles in one `jit(vmap(dynamics.fit_unchecked))` and runs the N
meta-learning phases (`num_meta_steps` meta steps each) in one `jit(vmap(meta_train))`,
so an accelerator sees N times the work per dispatch. The real-data half (collection with
the adapted policies, evaluation, metrics) runs per seed through the same
`Trainer.collect_and_evaluate` a single run uses, with each seed's own keys: seed s of a
`SeedsTrainer` takes the same random draws as a single run of seed s, and its results equal
that run's up to the float rounding of the batched products (`tests/test_seeds.py`).

On a CPU the batched phases do not run faster than one after the other (measured in
WORKSPACE.md); on an accelerator with spare width they should.

`Time/Fit` and `Time/Meta` of a seed's metrics row are the shared phase's time (all N
seeds); `Time/Collect` and `Time/Eval` are the seed's own.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mbmpo_jax import buffer as buffer_lib
from mbmpo_jax import dynamics, maml, sharding
from mbmpo_jax import mbmpo as mbmpo_lib

__all__ = ["SeedsTrainer", "stack", "unstack"]


def stack(trees: Sequence[Any]) -> Any:
    """The pytrees `trees` (same structure) stacked on a new leading axis (pure JAX)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, n: int) -> list[Any]:
    """The inverse of `stack`: `n` pytrees, the slices of the leading axis (pure)."""
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


class SeedsTrainer:
    """N seeds of one `mbmpo.Trainer` configuration in one program (module docstring)."""

    def __init__(
        self,
        cfg: ml_collections.ConfigDict,
        num_seeds: int,
        trainer: mbmpo_lib.Trainer | None = None,
    ):
        """Args:
        cfg: a validated run config; its `seed` is ignored (`init` takes the keys).
        num_seeds: N >= 1.
        trainer: the `mbmpo.Trainer` of `cfg` whose task, models function, executors and
          phases are used (default `Trainer(cfg)`); its `models_fn` must be vmappable.
        """
        if num_seeds < 1:
            raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
        self.num_seeds = int(num_seeds)
        self.trainer = trainer or mbmpo_lib.Trainer(cfg)
        self.num_iterations = self.trainer.num_iterations
        tr = self.trainer
        self._fit = _vmapped_fit(tr.ens_cfg)
        self._models = _vmapped(tr.models_fn)
        self._meta_train = _vmapped_meta_train(tr.meta_cfg, tr.task, tr.dynamics_fn, tr.mesh)

    def init(self, keys: Sequence[jax.Array]) -> mbmpo_lib.TrainState:
        """The N fresh states (warm-up included) of `Trainer.init(keys[s])`, stacked."""
        if len(keys) != self.num_seeds:
            raise ValueError(f"expected {self.num_seeds} keys, got {len(keys)}")
        return stack([self.trainer.init(k) for k in keys])

    def iteration(
        self,
        states: mbmpo_lib.TrainState,
        on_phase: Callable[[str], None] | None = None,
    ) -> tuple[mbmpo_lib.TrainState, list[dict[str, float]]]:
        """One iteration of every seed: `[N]` states -> `[N]` states and N metrics rows.

        `on_phase(name)` after each phase ("fit" and "meta" once for all seeds, "collect"
        and "eval" per seed).
        """
        on_phase = on_phase or (lambda name: None)
        n, tr = self.num_seeds, self.trainer
        keys = mbmpo_lib.IterationKeys(*jnp.moveaxis(jax.vmap(_split5)(states.key), 1, 0))

        start = time.perf_counter()
        counts = np.asarray(states.buffer.count)
        for s in range(n):
            if counts[s] < 2:
                raise ValueError(
                    f"seed {s}: the fit needs at least 2 transitions, the buffer has {counts[s]}"
                )
            buffer_lib.check_finite(
                states.buffer.obs[s], states.buffer.act[s], states.buffer.next_obs[s], counts[s]
            )
        ens, fit_info = self._fit(states.ensemble, states.buffer, keys.fit, counts.max())
        fit_info = jax.device_get(fit_info)
        if not mbmpo_lib._all_finite(ens.params):
            raise mbmpo_lib.NonFiniteError("dynamics fit produced non-finite model parameters")
        fit_time = time.perf_counter() - start
        on_phase("fit")

        start = time.perf_counter()
        models = self._models(ens, keys.models)
        states = dataclasses.replace(
            states, meta=mbmpo_lib.renormalize_policy(states.meta, ens.norm)
        )
        meta, post_params, diags = self._meta_train(*tr.meta_args(states, models))
        diags = jax.device_get(diags)
        meta_time = time.perf_counter() - start
        if not mbmpo_lib._all_finite(meta.params):
            raise mbmpo_lib.NonFiniteError("meta step produced non-finite policy parameters")
        on_phase("meta")

        learned = unstack(mbmpo_lib.Learned(ens, fit_info, meta, post_params, diags), n)
        new_states, rows = [], []
        per_seed = zip(unstack(states, n), learned, unstack(keys, n), strict=True)
        for state, learned_s, keys_s in per_seed:
            times = {"fit": fit_time, "meta": meta_time}
            new, row = tr.collect_and_evaluate(state, learned_s, keys_s, times, on_phase)
            # The shared phases' model steps are N seeds' worth.
            row["Meta/ModelStepsPerSec"] = n * tr.model_steps_per_iteration / max(meta_time, 1e-9)
            new_states.append(new)
            rows.append(row)
        return stack(new_states), rows


# Cached on the (hashable) configs and functions, as `mbmpo`'s own compiled phases: every
# SeedsTrainer of one configuration in a process shares one compilation.
@functools.cache
def _vmapped_fit(ens_cfg: dynamics.EnsembleConfig):
    def fit(ens, buf, key, sort_count):
        return dynamics.fit_unchecked(ens, buf, key, ens_cfg, sort_count)

    # The largest count, unbatched: the shuffles' sort-size switch stays a switch.
    return jax.jit(jax.vmap(fit, in_axes=(0, 0, 0, None)))


@functools.cache
def _vmapped(fn):
    return jax.jit(jax.vmap(fn))


@functools.cache
def _vmapped_meta_train(meta_cfg: maml.MetaConfig, task, dynamics_fn, mesh):
    fn = jax.vmap(maml.make_meta_train(meta_cfg, task, dynamics_fn, mesh=mesh))
    return sharding.jit_on_mesh(fn, mesh)


def _split5(key: jax.Array) -> jax.Array:
    return jax.random.split(key, 5)
