"""Throughput of the dynamics-ensemble fit against the device's float32 matmul rate.

Measures the jitted ``dynamics.fit_with_keys`` at the paper's sizes (5 x MLP (512, 512),
batch 500, Ant-sized obs 27 / act 8) and reports model-samples per second per epoch
(training samples x models, forward + backward + Adam) and the FLOP rate as a fraction
of a large jitted f32 matmul timed in the same process.

FLOPs are counted as 2 per multiply-add: ``6 * MACs`` per training sample (forward,
backward w.r.t. activations and weights) and ``2 * MACs`` per validation sample.
Bias, activation and Adam work is not counted, so the ratio is a lower bound on how
busy the matmul units are.

Run::

    python -m experiments.bench_ensemble            # paper sizes
    python -m experiments.bench_ensemble --transitions 20000 --epochs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import buffer, dynamics


def matmul_flops_per_s(n: int = 2048, repeats: int = 7, dtype: str = "float32") -> float:
    """Median FLOP/s of a jitted ``[n, n] @ [n, n]`` matmul (2 n^3 FLOPs): the yardstick.

    ``dtype="bfloat16"``: bfloat16 operands (already in bfloat16) accumulated in float32,
    the product `dynamics.dense` uses for its wide layers.
    """
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype)
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    matmul(a, b).block_until_ready()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / float(np.median(times))


def macs_per_sample(obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of one model."""
    sizes = (obs_dim + act_dim, *hidden, obs_dim)
    return sum(i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True))


def bench_fit(
    num_models: int = 5,
    hidden: tuple[int, ...] = (512, 512),
    batch: int = 500,
    obs_dim: int = 27,
    act_dim: int = 8,
    transitions: int = 5000,
    capacity: int = 100_000,
    epochs: int = 2,
    repeats: int = 3,
    weight_norm: bool = False,
    matmul_n: int = 2048,
    seed: int = 0,
    compute_dtype: str = "float32",
) -> dict:
    """Time ``epochs`` epochs of the ensemble fit; return throughput and its matmul ratio.

    Early stopping is switched off (persistency 1.0 keeps the moving average constant),
    so every timed fit runs exactly ``epochs`` epochs on all models. The first call
    compiles and is not timed; the median of ``repeats`` fits is. The ratio is taken
    against the matmul rate of ``compute_dtype`` (the precision of the wide layers).
    """
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(transitions, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(transitions, act_dim)).astype(np.float32)
    mix = rng.normal(size=(obs_dim + act_dim, obs_dim)).astype(np.float32) * 0.1
    next_obs = obs + np.tanh(np.concatenate([obs, act], axis=1) @ mix)
    buf = buffer.add(buffer.init(capacity, obs_dim, act_dim), obs, act, next_obs)

    cfg = dynamics.EnsembleConfig(
        num_models=num_models,
        hidden=tuple(hidden),
        batch_size=batch,
        max_epochs=epochs,
        persistency=1.0,
        weight_norm=weight_norm,
        compute_dtype=compute_dtype,
    )
    state = dynamics.init(jax.random.key(seed), obs_dim, act_dim, cfg)

    def run(i):
        keys = jax.random.split(jax.random.key(1000 + i), num_models)
        out = dynamics.fit_with_keys(state, buf, keys, cfg)
        jax.block_until_ready(out)
        return out

    start = time.perf_counter()
    _, info = run(0)
    compile_s = time.perf_counter() - start
    assert np.all(np.asarray(info.epochs) == epochs), info

    n_val, n_train = (int(x) for x in dynamics.split_sizes(transitions, cfg.valid_split))
    macs = macs_per_sample(obs_dim, act_dim, tuple(hidden))
    flops = num_models * epochs * (6 * macs * n_train + 2 * macs * n_val)
    # Each fit is paired with a matmul timing taken right after it, so a machine shared
    # with other jobs loads both sides of a ratio alike; the median ratio is reported.
    times, matmul_rates = [], []
    for i in range(repeats):
        start = time.perf_counter()
        run(i + 1)
        times.append(time.perf_counter() - start)
        matmul_rates.append(matmul_flops_per_s(matmul_n, repeats=3, dtype=compute_dtype))
    ratios = [flops / t / m for t, m in zip(times, matmul_rates, strict=True)]
    fit_s = float(np.median(times))
    matmul_rate = float(np.median(matmul_rates))
    return {
        "device": str(jax.devices()[0]),
        "config": dataclasses.asdict(cfg),
        "transitions": transitions,
        "capacity": capacity,
        "n_train": n_train,
        "epochs": epochs,
        "compile_plus_first_fit_s": compile_s,
        "fit_s": fit_s,
        "epoch_s": fit_s / epochs,
        "model_samples_per_s": num_models * n_train * epochs / fit_s,
        "fit_flops_per_s": flops / fit_s,
        "matmul_flops_per_s": matmul_rate,
        "ratio_to_matmul": float(np.median(ratios)),
        "ratio_to_matmul_each_repeat": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--obs-dim", type=int, default=27)
    parser.add_argument("--act-dim", type=int, default=8)
    parser.add_argument("--transitions", type=int, default=5000)
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weight-norm", action="store_true")
    parser.add_argument("--compute-dtype", choices=dynamics.COMPUTE_DTYPES, default="float32")
    args = parser.parse_args()
    result = bench_fit(
        num_models=args.models,
        hidden=tuple(args.hidden),
        batch=args.batch,
        obs_dim=args.obs_dim,
        act_dim=args.act_dim,
        transitions=args.transitions,
        capacity=args.capacity,
        epochs=args.epochs,
        repeats=args.repeats,
        weight_norm=args.weight_norm,
        compute_dtype=args.compute_dtype,
    )
    print(json.dumps(result, indent=2))
    print(
        f"fit: {result['model_samples_per_s']:,.0f} model-samples/s per epoch "
        f"({result['epoch_s']:.3f} s/epoch, {result['n_train']} train samples x "
        f"{args.models} models); {result['fit_flops_per_s'] / 1e9:.1f} GFLOP/s = "
        f"{result['ratio_to_matmul']:.2f} x {args.compute_dtype} matmul "
        f"({result['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s) on {result['device']}"
    )


if __name__ == "__main__":
    main()
