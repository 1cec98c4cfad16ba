"""What a bfloat16 ensemble fit pays once per fit, against its epochs (issue 18).

  PYTHONPATH=. python docs/probes/fit_fixed_costs.py [--transitions=5000] [--capacity=100000]

Times (medians of 7 calls, each jitted and compiled first; the benchmark's sizes: 5 (512, 512)
models, Ant's obs/act sizes, batch 500): five argsorts of all ``capacity`` random keys (the
split before the fiftieth session), the split as it is (`fitting._split_permutation`, sorting
only the prefix that covers the rows held), the normaliser plus the normalised inputs and
targets over the whole buffer, and whole fits of 1, 2 and 3 epochs (their differences are the
per-epoch cost, the rest the per-fit cost).
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_meta import _median_time
from mbmpo_jax import buffer, dynamics
from mbmpo_jax.dynamics import fitting
from mbmpo_jax.dynamics.model import _normalise_inputs


def median_ms(fn, *args, n=7):
    return 1e3 * _median_time(fn, *args, repeats=n)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=5000)
    parser.add_argument("--capacity", type=int, default=100_000)
    args = parser.parse_args()
    t, cap, obs_dim, act_dim, k = args.transitions, args.capacity, 27, 8, 5
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(t, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(t, act_dim)).astype(np.float32)
    buf = buffer.add(buffer.init(cap, obs_dim, act_dim), obs, act, obs + 0.1)
    keys = jax.random.split(jax.random.key(0), k)

    def full_sort(key):
        u = jax.random.uniform(key, (cap,), jnp.float32)
        return jnp.argsort(jnp.where(jnp.arange(cap) < t, u, 2.0))

    print(f"five full {cap:,}-key argsorts: {median_ms(jax.jit(jax.vmap(full_sort)), keys):.1f} ms")
    split = jax.jit(jax.vmap(lambda key: fitting._split_permutation(key, t, cap)))
    print(f"five splits as they are (prefix sort): {median_ms(split, keys):.1f} ms")

    def prep(b):
        norm = dynamics.compute_normaliser(b)
        valid = buffer.valid_mask(b)[:, None]
        x = jnp.where(valid, _normalise_inputs(norm, b.obs, b.act), 0.0)
        y = jnp.where(valid, (b.next_obs - b.obs - norm.delta_mean) / norm.delta_std, 0.0)
        return x, y

    print(
        f"normaliser + normalised inputs over the capacity: {median_ms(jax.jit(prep), buf):.1f} ms"
    )
    for epochs in (1, 2, 3):
        cfg = dynamics.EnsembleConfig(
            num_models=k,
            hidden=(512, 512),
            batch_size=500,
            max_epochs=epochs,
            persistency=1.0,
            compute_dtype="bfloat16",
        )
        state = dynamics.init(jax.random.key(0), obs_dim, act_dim, cfg)
        fit = functools.partial(dynamics.fit_unchecked, state, buf, cfg=cfg)
        print(f"fit, {epochs} epoch(s): {median_ms(fit, jax.random.key(1), n=5):.1f} ms")


if __name__ == "__main__":
    main()
