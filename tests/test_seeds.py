"""N seeds as one program (`seeds.SeedsTrainer`, `rundir.train_seeds`) against N separate
single-seed runs (`mbmpo.Trainer`, the reference): same draws, same results up to the
float rounding of the batched (vmapped) products."""

import csv
import os

import jax
import numpy as np
import pytest

from mbmpo_jax import config as config_lib
from mbmpo_jax import mbmpo, rundir, seeds

# Columns compared: everything but timings and the std-KL correlations (Pearson r over a
# few smoke-sized samples of near-zero KLs: rounding moves them by up to 0.1).
SKIP = ("Time/", "Diag/StdKLCorr", "Meta/ModelStepsPerSec")
RTOL, ATOL = 2e-3, 2e-4


def _cfg(num_iterations, seed=0):
    cfg = config_lib.get_config("hopper", "smoke")
    cfg.num_iterations = num_iterations
    cfg.seed = seed
    config_lib.validate(cfg)
    return cfg


@pytest.fixture(scope="module")
def trainer():
    return mbmpo.Trainer(_cfg(2))


def _assert_rows_close(got, want):
    for col, w in want.items():
        if col.startswith(SKIP):
            continue
        g = got[col]
        if np.isnan(w):
            assert np.isnan(g), col
        else:
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=col)


# Three whole trainer runs (about 70 s of a core): in the slow set; the README's suite keeps
# the row-level comparison with a separate run below.
@pytest.mark.slow
def test_seeds_trainer_equals_separate_runs(trainer):
    keys = [jax.random.PRNGKey(4), jax.random.PRNGKey(5)]
    program = seeds.SeedsTrainer(_cfg(2), 2, trainer)
    states = program.init(keys)
    assert states.iteration.shape == (2,)
    rows = []
    for _ in range(2):
        states, r = program.iteration(states)
        rows.append(r)
        if len(rows) == 1:
            compiled = (program._fit._cache_size(), program._meta_train._cache_size())
    # The second iteration (states from the program itself) compiled nothing new.
    assert (program._fit._cache_size(), program._meta_train._cache_size()) == compiled
    for s, key in enumerate(keys):
        state = trainer.init(key)
        for it in range(2):
            state, m = trainer.iteration(state)
            assert rows[it][s]["n_timesteps"] == m["n_timesteps"]
            _assert_rows_close(rows[it][s], m)
        mine = seeds.unstack(states, 2)[s]
        assert int(mine.buffer.count) == int(state.buffer.count)
        np.testing.assert_array_equal(mine.key, state.key)  # the same draws
        pairs = zip(
            jax.tree.leaves(mine.meta.params), jax.tree.leaves(state.meta.params), strict=True
        )
        for a, b in pairs:
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    # A second SeedsTrainer of the same configuration compiles nothing new.
    sizes = (
        seeds._vmapped_fit.cache_info().currsize,
        seeds._vmapped_meta_train.cache_info().currsize,
    )
    seeds.SeedsTrainer(_cfg(2), 2, trainer)
    assert (
        seeds._vmapped_fit.cache_info().currsize,
        seeds._vmapped_meta_train.cache_info().currsize,
    ) == sizes


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def test_train_seeds_writes_each_seed_and_levels_on_resume(tmp_path, trainer):
    dirs = [str(tmp_path / f"seed{s}") for s in (4, 5)]
    cfgs = [_cfg(2, seed=s) for s in (4, 5)]
    quiet = lambda line: None
    # Stop after iteration 1 of both (should_stop is polled after every iteration).
    seen = []
    states, finished = rundir.train_seeds(
        cfgs,
        dirs,
        trainer=trainer,
        should_stop=lambda: len(seen) >= 2,
        on_iteration=lambda s, st, m: seen.append((s, int(st.iteration))),
        log=quiet,
    )
    assert not finished and seen == [(0, 1), (1, 1)]
    # Seed 4 runs on alone to iteration 2: the seeds are no longer level.
    rundir.train(cfgs[0], dirs[0], resume=True, trainer=trainer, log=quiet)
    assert len(_rows(dirs[0])) == 2 and len(_rows(dirs[1])) == 1

    seen.clear()
    states, finished = rundir.train_seeds(
        [rundir.resume_config(d) for d in dirs],
        dirs,
        resume=True,
        trainer=trainer,
        on_iteration=lambda s, st, m: seen.append((s, int(st.iteration))),
        log=quiet,
    )
    assert finished and seen == [(1, 2)]  # seed 5 levelled with a single-seed iteration
    for s, d in enumerate(dirs):
        assert [r["iteration"] for r in _rows(d)] == [1.0, 2.0]
        assert int(states[s].iteration) == 2
    # Each seed's rows equal its separate run's (the reference: rundir.train alone).
    ref = str(tmp_path / "ref5")
    rundir.train(cfgs[1], ref, trainer=trainer, log=quiet)
    for got, want in zip(_rows(dirs[1]), _rows(ref), strict=True):
        _assert_rows_close(got, want)


def test_train_seeds_refuses_configs_that_differ_beyond_the_seed(tmp_path, trainer):
    a, b = _cfg(2, seed=1), _cfg(2, seed=2)
    b.meta.inner_lr = 0.0
    with pytest.raises(rundir.RunDirError, match="differ in more than their seed"):
        rundir.train_seeds([a, b], [str(tmp_path / "a"), str(tmp_path / "b")], trainer=trainer)
    assert not os.path.exists(tmp_path / "a")


def test_seeds_move_each_policy_normaliser_to_its_own_buffer():
    """`policy.normalize_obs` with seeds as one program: each seed's policy normaliser
    moves to the statistics of its own buffer (numpy over the valid rows), not a mix."""
    cfg = config_lib.get_config("inverted_pendulum", "smoke")
    cfg.num_iterations, cfg.initial_random_steps = 1, 200
    cfg.policy.normalize_obs = True
    config_lib.validate(cfg)
    program = seeds.SeedsTrainer(cfg, 2)
    states = program.init([jax.random.PRNGKey(1), jax.random.PRNGKey(2)])
    before = seeds.unstack(states, 2)
    states, _ = program.iteration(states)
    for s, (old, new) in enumerate(zip(before, seeds.unstack(states, 2), strict=True)):
        obs = np.asarray(old.buffer.obs, np.float64)[: int(old.buffer.count)]
        norm = new.meta.params["obs_norm"]
        np.testing.assert_allclose(norm["mean"], obs.mean(0), rtol=1e-4, atol=1e-5, err_msg=s)
        np.testing.assert_allclose(norm["std"], np.maximum(obs.std(0), 1e-2), rtol=1e-4)
    assert not np.allclose(before[0].buffer.obs[:200], before[1].buffer.obs[:200])
