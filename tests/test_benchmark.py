"""experiments.benchmark, bench_meta and bench_seeds: they run, and their JSON holds what
issue 8 asks for, consistently (ratios recomputed from the raw numbers); bench_meta and
bench_ensemble reject bad flags with one line."""

import json
import os

import pytest

from tests._cli import one_line_error, run_module


@pytest.mark.slow
def test_quick_benchmark_json(tmp_path):
    out = tmp_path / "bench" / "quick.json"
    # the whole-iteration timing is the smoke Trainer (compiled and tested elsewhere)
    args = ["--quick", "--repeats=1", "--no_iteration", f"--out={out}"]
    # float32 products' precision is recorded (on a GPU it decides whether TF32 is used)
    env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest")
    proc = run_module("experiments.benchmark", *args, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    for key in ("device", "jax", "precisions", "bfloat16_speedup"):
        assert key in res, key
    assert res["matmul_precision"] == "highest"
    assert "float32 matmuls: highest" in proc.stdout
    assert list(res["precisions"]) == ["float32", "bfloat16"]  # the default, in order
    for dtype, p in res["precisions"].items():
        assert p["matmul_flops_per_s"] > 1e8, dtype
        im, fit, meta = p["imagination"], p["fit"], p["meta_step"]
        # each precision's throughput is a fraction of its own yardstick
        assert im["ratio_to_matmul"] == pytest.approx(
            im["model_flops_per_s"] / p["matmul_flops_per_s"]
        )
        assert im["model_steps_per_s"] == pytest.approx(im["model_steps"] / im["seconds"])
        assert 0 < fit["ratio_to_matmul"] < 2 and fit["epoch_s"] > 0
        assert fit["config"]["compute_dtype"] == dtype
        assert meta["meta_step_s"] > 0 and meta["meta_step_compile_s"] >= 0
    f32, b16 = res["precisions"]["float32"], res["precisions"]["bfloat16"]
    assert res["bfloat16_speedup"]["fit"] == pytest.approx(
        f32["fit"]["epoch_s"] / b16["fit"]["epoch_s"]
    )
    assert "iteration" not in res["bfloat16_speedup"]  # --no_iteration
    meta = f32["meta_step"]  # the Python-loop comparison: first precision only
    assert meta["vectorised_speedup_vs_loop"] == pytest.approx(
        meta["loop_meta_step_s"] / meta["meta_step_s"]
    )
    assert "loop_meta_step_s" not in b16["meta_step"]
    assert res["memory"]["host_peak_rss_mb"] > 0
    assert f"wrote {out}" in proc.stdout and "TRPO meta step" in proc.stdout

    # an existing --out is never replaced without --force, and the check comes first
    before = out.read_text()
    proc = run_module("experiments.benchmark", "--quick", f"--out={out}")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ")
    assert "exists" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert out.read_text() == before


@pytest.mark.slow
def test_bench_seeds_json_and_refusal(tmp_path):
    out = tmp_path / "seeds.json"
    args = ["--preset=smoke", "--num_seeds=1", "--iterations=1", f"--out={out}"]
    proc = run_module("experiments.bench_seeds", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert (res["env"], res["preset"]) == ("halfcheetah", "smoke")
    (row,) = res["results"]
    assert row["num_seeds"] == 1 and row["wall_s"] > 0
    assert row["speedup"] == pytest.approx(
        row["separate"]["iteration_s"] / row["program"]["iteration_s"]
    )
    assert "N=1: one program" in proc.stdout
    # an existing --out is refused before anything is measured, and left as it was
    before = out.read_text()
    proc = run_module("experiments.bench_seeds", *args)
    assert proc.returncode == 2 and "exists" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "N=1" not in proc.stdout
    assert out.read_text() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env=nope"], "unknown task"),
        (["--repeats=0"], "--repeats"),
        (["--compute_dtypes=float16"], "--compute_dtypes"),
        (["--compute_dtypes=float32,float32"], "--compute_dtypes"),
        (["--bogus"], "Unknown command line flag"),
    ],
)
def test_benchmark_bad_input(args, message, tmp_path):
    proc = run_module("experiments.benchmark", *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert message in proc.stderr


def test_bench_meta_breakdown_adds_up():
    args = ["--quick", "--repeats=1", "--skip_meta_step", "--breakdown"]
    proc = run_module("experiments.bench_meta", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    b = res["breakdown"]
    assert b["outer_step_s"] > b["outer_step_cg1_s"] > 0
    assert b["per_curvature_product_s"] == pytest.approx(
        (b["outer_step_s"] - b["outer_step_cg1_s"]) / 9
    )
    assert res["fraction_of_matmul_rate"] > 0 and b["meta_gradient_s"] > 0


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("experiments.bench_meta", ["--repeats=0"], "--repeats=0"),
        ("experiments.bench_meta", ["--fvp_subsample=x"], "--fvp_subsample=x"),
        ("experiments.bench_meta", ["--loop_repeats", "-2"], "--loop_repeats=-2"),
        ("experiments.bench_meta", ["--quick", "extra"], "unexpected arguments: extra"),
        ("experiments.bench_ensemble", ["--hidden=512,-3"], "--hidden=512,-3"),
        ("experiments.bench_ensemble", ["--hidden=512,x"], "--hidden=512,x"),
        ("experiments.bench_ensemble", ["--compute_dtype=float16"], "float32|bfloat16"),
        ("experiments.bench_ensemble", ["--transitions=1e3"], "--transitions=1e3"),
        ("experiments.bench_ensemble", ["--capacity=10"], "--capacity=10 must be >="),
        ("experiments.bench_ensemble", ["--bogus"], "Unknown command line flag"),
        ("experiments.bench_seeds", ["--num_seeds=1,0"], "--num_seeds values must be >= 1"),
        ("experiments.bench_seeds", ["--num_seeds=two"], "--num_seeds must be integers"),
        ("experiments.bench_seeds", ["--env=cartpole"], "unknown env 'cartpole'"),
    ],
)
def test_bench_cli_bad_input(module, args, message):
    """Rejected while parsing flags (before any JAX work): one line, exit 2."""
    line = one_line_error(run_module(module, *args, timeout=120), 2)
    assert message in line
