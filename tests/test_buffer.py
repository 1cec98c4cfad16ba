"""Tests for mbmpo_jax.buffer: FIFO semantics against a numpy reference, fixed shapes,
no retracing, and the non-finite data check."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbmpo_jax import buffer

OBS_DIM, ACT_DIM = 3, 2


def _batch(rng, n, start):
    """Transitions whose values encode their global index, so order errors show."""
    idx = np.arange(start, start + n, dtype=np.float32)[:, None]
    obs = idx + rng.normal(size=(n, OBS_DIM)).astype(np.float32) * 1e-3
    act = -idx + np.zeros((n, ACT_DIM), np.float32)
    return obs, act, obs + 0.5


def test_init_shapes_and_empty():
    buf = buffer.init(7, OBS_DIM, ACT_DIM)
    chex.assert_shape([buf.obs, buf.next_obs], (7, OBS_DIM))
    chex.assert_shape(buf.act, (7, ACT_DIM))
    assert buf.obs.dtype == jnp.float32 and buf.capacity == 7
    assert int(buffer.size(buf)) == 0 and int(buf.ptr) == 0
    assert buffer.DEFAULT_CAPACITY == 100_000
    with pytest.raises(ValueError):
        buffer.init(0, OBS_DIM, ACT_DIM)


def test_fifo_wraparound_matches_numpy():
    """Batches smaller than, straddling and larger than the capacity, vs a plain list."""
    rng = np.random.default_rng(0)
    capacity = 8
    buf = buffer.init(capacity, OBS_DIM, ACT_DIM)
    ref_obs, ref_act, ref_next = (np.zeros((0, d), np.float32) for d in (OBS_DIM, ACT_DIM, OBS_DIM))
    ring = np.zeros((capacity, OBS_DIM), np.float32)  # independent ring-buffer model of raw rows
    ptr, seen = 0, 0
    for n in [3, 4, 5, 1, 8, 19, 2, 7]:
        obs, act, nxt = _batch(rng, n, seen)
        seen += n
        buf = buffer.add(buf, obs, act, nxt)
        ref_obs = np.concatenate([ref_obs, obs])[-capacity:]
        ref_act = np.concatenate([ref_act, act])[-capacity:]
        ref_next = np.concatenate([ref_next, nxt])[-capacity:]
        for row in obs:
            ring[ptr] = row
            ptr = (ptr + 1) % capacity

        got_obs, got_act, got_next = buffer.valid_data(buf)
        np.testing.assert_array_equal(got_obs, ref_obs)
        np.testing.assert_array_equal(got_act, ref_act)
        np.testing.assert_array_equal(got_next, ref_next)
        np.testing.assert_array_equal(np.asarray(buf.obs), ring)
        assert int(buffer.size(buf)) == min(seen, capacity)
        assert int(buf.ptr) == ptr
        np.testing.assert_array_equal(
            np.asarray(buffer.valid_mask(buf)), np.arange(capacity) < min(seen, capacity)
        )
        # Ages from the global index each row encodes: 0 for the newest transition.
        count = min(seen, capacity)
        want_ages = np.full(capacity, capacity)
        want_ages[:count] = seen - 1 - np.rint(ring[:count, 0]).astype(int)
        np.testing.assert_array_equal(np.asarray(buffer.ages(buf)), want_ages)


def test_add_does_not_retrace_as_data_grows():
    add = jax.jit(chex.assert_max_traces(buffer.add.__wrapped__, n=1))
    rng = np.random.default_rng(1)
    buf = buffer.init(10, OBS_DIM, ACT_DIM)
    for i in range(4):  # fills, then wraps: shapes never change
        buf = add(buf, *_batch(rng, 4, 4 * i))
    assert int(buf.count) == 10


def test_add_rejects_mismatched_batches():
    buf = buffer.init(5, OBS_DIM, ACT_DIM)
    with pytest.raises(ValueError, match="batch sizes differ"):
        buffer.add(buf, np.zeros((3, OBS_DIM)), np.zeros((2, ACT_DIM)), np.zeros((3, OBS_DIM)))


@pytest.mark.parametrize("which", ["obs", "act", "next_obs"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_the_bad_array(which, bad):
    rng = np.random.default_rng(2)
    data = dict(zip(("obs", "act", "next_obs"), _batch(rng, 6, 0), strict=True))
    buffer.check_finite(**data)  # clean data passes
    data[which] = data[which].copy()
    data[which][4, 0] = bad
    with pytest.raises(ValueError, match=rf"{which} has 1 NaN/inf value\(s\) \(first at row 4\)"):
        buffer.check_finite(**data)


def test_check_finite_ignores_rows_past_count():
    """Rows past ``count`` are not data; garbage there must not block a fit."""
    rng = np.random.default_rng(3)
    buf = buffer.add(buffer.init(6, OBS_DIM, ACT_DIM), *_batch(rng, 4, 0))
    buf = buf.replace(obs=buf.obs.at[5, 0].set(jnp.nan))
    buffer.check_finite(buf.obs, buf.act, buf.next_obs, count=buf.count)
    with pytest.raises(ValueError, match="obs has 1"):
        buffer.check_finite(buf.obs, buf.act, buf.next_obs)


def test_add_prefix_matches_numpy_and_does_not_retrace():
    """Fixed-size padded batches with a traced valid count ``n`` (0, partial, > capacity)."""
    add_prefix = jax.jit(chex.assert_max_traces(buffer.add_prefix.__wrapped__, n=1))
    rng = np.random.default_rng(4)
    capacity, m = 8, 12
    buf = buffer.init(capacity, OBS_DIM, ACT_DIM)
    ref = [np.zeros((0, d), np.float32) for d in (OBS_DIM, ACT_DIM, OBS_DIM)]
    seen = 0
    for n in [5, 0, 2, 12, 3, 9]:
        batch = _batch(rng, m, seen)
        padded = [np.where(np.arange(m)[:, None] < n, x, np.nan) for x in batch]  # junk past n
        buf = add_prefix(buf, *padded, np.int32(n))
        ref = [np.concatenate([r, x[:n]])[-capacity:] for r, x in zip(ref, batch, strict=True)]
        seen += m
        for got, want in zip(buffer.valid_data(buf), ref, strict=True):
            np.testing.assert_array_equal(got, want)
