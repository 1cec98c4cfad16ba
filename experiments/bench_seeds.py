"""Throughput of N seeds in one program (`seeds.SeedsTrainer`) against N separate runs.

For each N in --num_seeds: N seeds of the configuration run `--iterations` timed
iterations as one program, after one untimed iteration (it compiles); the same N seeds are
then run one after another with the single-seed `mbmpo.Trainer` (also after an untimed
iteration). Reports per N the median seconds per iteration of all N seeds, both ways,
split into the shared phases (fit, meta) and the per-seed real-data phases, and the ratio.

Run::

    python -m experiments.bench_seeds --env=halfcheetah --preset=cpu --num_seeds=1,2,4

With --out, the JSON is rewritten after every N (a run cut short keeps what it measured); an
existing --out is refused without --force, before anything is measured. Bad values:
one-line error, exit code 2.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import jax
from absl import app, flags

from experiments import _quiet  # noqa: F401  (keeps library chatter off the console)
from experiments._cli import check_out, fail, own_flags_parser
from mbmpo_jax import config as config_lib
from mbmpo_jax import mbmpo, seeds

_FLAGS = flags.FlagValues()
_ENV = flags.DEFINE_string("env", "halfcheetah", "task name", flag_values=_FLAGS)
_PRESET = flags.DEFINE_string("preset", "cpu", "paper | cpu | smoke", flag_values=_FLAGS)
_NUM_SEEDS = flags.DEFINE_list("num_seeds", ["1", "2", "4"], "values of N", flag_values=_FLAGS)
_ITERATIONS = flags.DEFINE_integer(
    "iterations", 2, "timed iterations per N", lower_bound=1, flag_values=_FLAGS
)
_OUT = flags.DEFINE_string(
    "out", None, "also write the results as JSON here (after every N)", flag_values=_FLAGS
)
_FORCE = flags.DEFINE_bool(
    "force", False, "allow --out to replace an existing file", flag_values=_FLAGS
)


def _time_program(cfg, trainer, n: int, iterations: int) -> dict[str, float]:
    program = seeds.SeedsTrainer(cfg, n, trainer)
    states = program.init([jax.random.PRNGKey(s) for s in range(n)])
    states, _ = program.iteration(states)  # compiles
    totals, fits, metas = [], [], []
    for _ in range(iterations):
        start = time.perf_counter()
        states, rows = program.iteration(states)
        totals.append(time.perf_counter() - start)
        fits.append(rows[0]["Time/Fit"])
        metas.append(rows[0]["Time/Meta"])
    return {
        "iteration_s": statistics.median(totals),
        "fit_s": statistics.median(fits),
        "meta_s": statistics.median(metas),
    }


def _time_separate(cfg, trainer, n: int, iterations: int) -> dict[str, float]:
    states = [trainer.init(jax.random.PRNGKey(s)) for s in range(n)]
    states = [trainer.iteration(st)[0] for st in states]  # compiles (once)
    totals, fits, metas = [], [], []
    for _ in range(iterations):
        start = time.perf_counter()
        fit = meta = 0.0
        for s in range(n):
            states[s], row = trainer.iteration(states[s])
            fit += row["Time/Fit"]
            meta += row["Time/Meta"]
        totals.append(time.perf_counter() - start)
        fits.append(fit)
        metas.append(meta)
    return {
        "iteration_s": statistics.median(totals),
        "fit_s": statistics.median(fits),
        "meta_s": statistics.median(metas),
    }


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        ns = [int(v) for v in _NUM_SEEDS.value]
    except ValueError:
        fail(f"--num_seeds must be integers, got {','.join(_NUM_SEEDS.value)}")
    if not ns or min(ns) < 1:
        fail(f"--num_seeds values must be >= 1, got {','.join(_NUM_SEEDS.value)}")
    try:
        cfg = config_lib.get_config(_ENV.value, _PRESET.value)
        config_lib.validate(cfg)
    except config_lib.ConfigError as e:
        fail(str(e))
    if _OUT.value:
        check_out(_OUT.value, _FORCE.value)
    trainer = mbmpo.Trainer(cfg)
    dev = jax.devices()[0]
    print(f"bench_seeds | {dev.platform} {dev.device_kind} | jax {jax.__version__}", flush=True)
    results = []
    for n in ns:
        start = time.perf_counter()
        one = _time_program(cfg, trainer, n, _ITERATIONS.value)
        sep = _time_separate(cfg, trainer, n, _ITERATIONS.value)
        row = {"num_seeds": n, "program": one, "separate": sep}
        row["speedup"] = sep["iteration_s"] / one["iteration_s"]
        row["wall_s"] = time.perf_counter() - start  # compiles and untimed iterations too
        results.append(row)
        print(
            f"N={n}: one program {one['iteration_s']:.1f} s/iteration (fit {one['fit_s']:.1f}, "
            f"meta {one['meta_s']:.1f}) | separately {sep['iteration_s']:.1f} s (fit "
            f"{sep['fit_s']:.1f}, meta {sep['meta_s']:.1f}) | speed-up {row['speedup']:.2f}x "
            f"| {row['wall_s']:.0f} s for this N",
            flush=True,
        )
        if _OUT.value:  # after every N, so a run cut short keeps what it measured
            tmp = _OUT.value + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"env": cfg.env, "preset": cfg.preset, "results": results}, f, indent=1)
            os.replace(tmp, _OUT.value)


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
