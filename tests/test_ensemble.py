"""The generic ensemble against Python loops over members, with an exact fake network
(``x * a + b`` per member), under jit, vmap and grad."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbmpo_jax import ensemble


def fake_init(key):
    ka, kb = jax.random.split(key)
    return {"a": jax.random.normal(ka, (3,)), "b": jax.random.normal(kb, (3,))}


def fake_apply(member, x, y):
    """One member on a batch ``[N, 3]``: exact arithmetic, so loops compare bit for bit."""
    return x * member["a"] + y * member["b"]


def _member(members, k):
    return jax.tree.map(lambda v: v[k], members)


def test_init_is_one_member_per_split_key():
    key = jax.random.PRNGKey(0)
    members = ensemble.init(fake_init, key, 4)
    assert ensemble.num_members(members) == 4
    for k, sub in enumerate(jax.random.split(key, 4)):
        # the same key draws the same numbers; vmapped samplers may round the last bit
        chex.assert_trees_all_close(_member(members, k), fake_init(sub), rtol=1e-6)
    # independent members: no two alike
    a = np.asarray(members["a"])
    assert len({tuple(row) for row in a.round(6)}) == 4


def test_apply_all_and_disagreement_match_loops():
    members = ensemble.init(fake_init, jax.random.PRNGKey(1), 5)
    x, y = jnp.arange(12.0).reshape(4, 3), jnp.ones((4, 3))
    out = ensemble.apply_all(fake_apply, members, x, y)
    assert out.shape == (5, 4, 3)
    for k in range(5):
        np.testing.assert_array_equal(out[k], fake_apply(_member(members, k), x, y))
    ref = np.mean(np.std(np.asarray(out, np.float64), axis=0), axis=-1)
    np.testing.assert_allclose(ensemble.disagreement(out), ref, rtol=1e-6)


@pytest.mark.parametrize(("num_tasks", "num_members"), [(3, 3), (6, 3), (8, 2), (4, 1)])
def test_apply_per_task_uses_member_t_div_tasks_per_member(num_tasks, num_members):
    members = ensemble.init(fake_init, jax.random.PRNGKey(2), num_members)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(num_tasks, 7, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(num_tasks, 7, 3)), jnp.float32)
    out = jax.jit(ensemble.apply_per_task, static_argnums=0)(fake_apply, members, x, y)
    mapping = ensemble.task_to_member(num_tasks, num_members)
    np.testing.assert_array_equal(mapping, [t * num_members // num_tasks for t in range(num_tasks)])
    for t in range(num_tasks):
        want = fake_apply(_member(members, int(mapping[t])), x[t], y[t])
        np.testing.assert_allclose(out[t], want, rtol=1e-6, atol=1e-6)  # jit may fuse an FMA


def test_gradients_and_vmap_through_the_ensemble():
    members = ensemble.init(fake_init, jax.random.PRNGKey(3), 2)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 5, 3)), jnp.float32)
    y = jnp.ones_like(x)

    def loss(m):
        return jnp.sum(ensemble.apply_per_task(fake_apply, m, x, y) ** 2)

    def loop_loss(m):
        return sum(jnp.sum(fake_apply(_member(m, t // 2), x[t], y[t]) ** 2) for t in range(4))

    chex.assert_trees_all_close(jax.grad(loss)(members), jax.grad(loop_loss)(members), rtol=1e-5)
    # vmap over a batch of ensembles (e.g. seeds) equals applying each one
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), members, members)
    batched = jax.vmap(lambda m: ensemble.apply_all(fake_apply, m, x[0], y[0]))(stacked)
    np.testing.assert_array_equal(batched[1], ensemble.apply_all(fake_apply, members, x[0], y[0]))


def test_no_retrace_for_the_same_shapes():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(m, x, y):
        return ensemble.apply_per_task(fake_apply, m, x, y)

    members = ensemble.init(fake_init, jax.random.PRNGKey(4), 2)
    for seed in range(3):
        x = jnp.asarray(np.random.default_rng(seed).normal(size=(4, 2, 3)), jnp.float32)
        step(members, x, x)


def test_bad_shapes_are_clear_errors():
    members = ensemble.init(fake_init, jax.random.PRNGKey(5), 3)
    x = jnp.ones((4, 2, 3))
    with pytest.raises(ValueError, match="multiple of the number of models 3"):
        ensemble.apply_per_task(fake_apply, members, x, x)
    with pytest.raises(ValueError, match="disagree on the leading"):
        ensemble.num_members({"a": jnp.ones((3, 2)), "b": jnp.ones((2, 2))})
