"""Does bfloat16 pay on this host's CPU? float32 against bfloat16, interleaved (issue 18).

  taskset -c 0 python docs/probes/bf16_host.py [--repeats=3]

Prints the CPU (model, whether it has bfloat16 units: `mbmpo_jax.hostinfo`), then for each
precision: a 1024^2 matmul (the yardstick), one fit epoch at 20,000 transitions of the cpu
preset's two model sizes ((256, 256) plain; (512, 512) with weight norm; K = 5, batch 500,
HalfCheetah's 17 / 6 dimensions), and one imagination phase of the cpu preset (10 tasks x
20 rollouts x 100 steps) with each model size. The two precisions alternate within each
repeat, so load from other jobs on the machine falls on both; the ratio is the result.
"""

import argparse

import numpy as np

from experiments.bench_ensemble import bench_fit, matmul_flops_per_s
from experiments.benchmark import bench_imagination
from mbmpo_jax import hostinfo
from mbmpo_jax.envs.tasks import get_task

DTYPES = ("float32", "bfloat16")
MODELS = (((256, 256), False), ((512, 512), True))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(f"cpu: {hostinfo.cpu_model()} | bfloat16 units: {hostinfo.bf16_units()}", flush=True)
    task = get_task("halfcheetah")
    rows = {}
    for _ in range(a.repeats):
        for dt in DTYPES:
            rows.setdefault(("matmul 1024^2, GFLOP/s", dt), []).append(
                matmul_flops_per_s(1024, repeats=5, dtype=dt) / 1e9
            )
        for hidden, wn in MODELS:
            for dt in DTYPES:
                fit = bench_fit(
                    hidden=hidden,
                    obs_dim=task.obs_dim,
                    act_dim=task.act_dim,
                    transitions=20_000,
                    epochs=1,
                    repeats=1,
                    weight_norm=wn,
                    compute_dtype=dt,
                    matmul_n=256,
                )
                rows.setdefault((f"fit epoch {hidden} wn={wn}, s", dt), []).append(fit["epoch_s"])
                im = bench_imagination(task, 5, hidden, 10, 20, 100, repeats=1, compute_dtype=dt)
                rows.setdefault((f"imagination 20k steps {hidden}, s", dt), []).append(
                    im["seconds"]
                )
    print("quantity | float32 | bfloat16 | bfloat16 / float32 (median of per-repeat ratios)")
    for name in dict.fromkeys(k[0] for k in rows):
        f32, b16 = np.asarray(rows[(name, "float32")]), np.asarray(rows[(name, "bfloat16")])
        print(
            f"{name} | {np.median(f32):.3f} | {np.median(b16):.3f} | {np.median(b16 / f32):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
