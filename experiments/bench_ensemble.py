"""Throughput of the dynamics-ensemble fit against the device's float32 matmul rate.

Measures the jitted ``dynamics.fit_unchecked`` at the paper's sizes (5 x MLP (512, 512),
batch 500, Ant-sized obs 27 / act 8) and reports model-samples per second per epoch
(training samples x models, forward + backward + Adam) and the FLOP rate as a fraction
of a large jitted f32 matmul timed in the same process.

FLOPs are counted as 2 per multiply-add: ``6 * MACs`` per training sample (forward,
backward w.r.t. activations and weights) and ``2 * MACs`` per validation sample.
Bias, activation and Adam work is not counted, so the ratio is a lower bound on how
busy the matmul units are.

Run::

    python -m experiments.bench_ensemble            # paper sizes
    python -m experiments.bench_ensemble --transitions=20000 --epochs=3 --hidden=256,256

Bad values: one-line error, exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import _quiet  # noqa: F401  (keeps library chatter off the console)
from experiments._cli import fail, own_flags_parser
from mbmpo_jax import buffer, dynamics
from mbmpo_jax.dynamics import fitting

# A FlagValues of its own: experiments.benchmark and experiments.bench_meta import this
# module (and the tests import the CLIs together) without clashing flags.
_FLAGS = flags.FlagValues()


def _positive(name: str, default: int, text: str, lower_bound: int = 1):
    return flags.DEFINE_integer(name, default, text, lower_bound=lower_bound, flag_values=_FLAGS)


_MODELS = _positive("models", 5, "ensemble size K")
_HIDDEN = flags.DEFINE_list(
    "hidden", ["512", "512"], "hidden layer widths of each model", flag_values=_FLAGS
)
_BATCH = _positive("batch", 500, "minibatch size")
_OBS_DIM = _positive("obs_dim", 27, "observation size")
_ACT_DIM = _positive("act_dim", 8, "action size")
_TRANSITIONS = _positive(
    "transitions", 5000, "transitions in the buffer (train + validation)", lower_bound=2
)
_CAPACITY = _positive("capacity", 100_000, "buffer capacity (>= --transitions)")
_EPOCHS = _positive("epochs", 2, "epochs per timed fit")
_REPEATS = _positive("repeats", 3, "timed fits (median)")
_WEIGHT_NORM = flags.DEFINE_bool(
    "weight_norm", False, "weight-normalised layers", flag_values=_FLAGS
)
_COMPUTE_DTYPE = flags.DEFINE_enum(
    "compute_dtype",
    "float32",
    dynamics.COMPUTE_DTYPES,
    "precision of the models' wide layers (accumulation is float32)",
    flag_values=_FLAGS,
)


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
        out = dynamics.fit_unchecked(state, buf, jax.random.key(1000 + i), cfg)
        jax.block_until_ready(out)
        return out

    start = time.perf_counter()
    _, info = run(0)
    compile_s = time.perf_counter() - start
    assert np.all(np.asarray(info.epochs) == epochs), info

    n_val, n_train = (int(x) for x in fitting._split_sizes(transitions, cfg.valid_split))
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


def _widths(values: list[str]) -> tuple[int, ...]:
    try:
        widths = tuple(int(v) for v in values)
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        fail(f"--hidden={','.join(values)}: give positive layer widths, e.g. --hidden=512,512")
    return widths


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    hidden = _widths(_HIDDEN.value)
    if _CAPACITY.value < _TRANSITIONS.value:
        fail(f"--capacity={_CAPACITY.value} must be >= --transitions={_TRANSITIONS.value}")
    result = bench_fit(
        num_models=_MODELS.value,
        hidden=hidden,
        batch=_BATCH.value,
        obs_dim=_OBS_DIM.value,
        act_dim=_ACT_DIM.value,
        transitions=_TRANSITIONS.value,
        capacity=_CAPACITY.value,
        epochs=_EPOCHS.value,
        repeats=_REPEATS.value,
        weight_norm=_WEIGHT_NORM.value,
        compute_dtype=_COMPUTE_DTYPE.value,
    )
    print(json.dumps(result, indent=2))
    print(
        f"fit: {result['model_samples_per_s']:,.0f} model-samples/s per epoch "
        f"({result['epoch_s']:.3f} s/epoch, {result['n_train']} train samples x "
        f"{_MODELS.value} models); {result['fit_flops_per_s'] / 1e9:.1f} GFLOP/s = "
        f"{result['ratio_to_matmul']:.2f} x {_COMPUTE_DTYPE.value} matmul "
        f"({result['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s) on {result['device']}"
    )


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
