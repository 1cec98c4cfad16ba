"""experiments.plot and experiments.render: synthetic run directories, CLIs in subprocesses."""

import csv
import json
import os

import numpy as np
import pytest

from experiments import plot, render
from tests._cli import one_line_error, run_module

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RET, STD, KL = "PrePolicy/AverageReturn", "Model/EnsembleStd", "Meta/KLPrePost"
WITHIN = "Diag/StdKLCorrStates"


def write_run(path, config, columns):
    """A run directory: config.json and metrics.csv with `columns` (name -> values)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    names = list(columns)
    with open(os.path.join(path, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(columns[n] for n in names), strict=True):
            w.writerow([repr(float(v)) for v in row])
    return str(path)


def mbmpo_config(seed, inner_lr=1e-3):
    return {
        "env": "hopper",
        "preset": "cpu",
        "seed": seed,
        "num_iterations": 6,
        "meta": {"inner_lr": inner_lr, "outer": "trpo", "horizon": 100},
        "ensemble": {"hidden": [256, 256]},
    }


def mbmpo_columns(steps, offset, rng):
    n = len(steps)
    return {
        "iteration": np.arange(1, n + 1),
        "n_timesteps": steps,
        RET: offset + 10.0 * np.arange(n),
        "PostPolicy/AverageReturn": offset + 12.0 * np.arange(n),
        STD: rng.uniform(0.1, 1.0, n),
        # the alpha = 0 run (offset 5) does not adapt: KL = 0, within-iteration r's nan
        KL: rng.uniform(0.0, 0.05, n) if offset != 5.0 else np.zeros(n),
        WITHIN: rng.uniform(-0.2, 0.8, n) if offset != 5.0 else np.full(n, np.nan),
    }


@pytest.fixture
def runs(tmp_path):
    """Two seeds of one config (seed0/seed1 of one directory), an ablation, a baseline."""
    rng = np.random.default_rng(0)
    parent = tmp_path / "hopper-cpu"
    steps0 = np.array([1000, 2000, 3000, 4000, 5000, 6000])
    steps1 = steps0 + 37  # seeds collect slightly different numbers of steps
    write_run(parent / "seed0", mbmpo_config(0), mbmpo_columns(steps0, 0.0, rng))
    write_run(parent / "seed1", mbmpo_config(1), mbmpo_columns(steps1, 20.0, rng))
    ablation = write_run(
        tmp_path / "metrpo", mbmpo_config(0, inner_lr=0.0), mbmpo_columns(steps0, 5.0, rng)
    )
    base_steps = np.array([1e4, 1e5, 1e6])
    baseline = write_run(
        tmp_path / "ppo",
        {"env": "hopper", "algo": "ppo", "seed": 0, "num_timesteps": 1_000_000},
        {"n_timesteps": base_steps, RET: np.array([1.0, 50.0, 300.0])},
    )
    return {"parent": str(parent), "ablation": ablation, "baseline": baseline}


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC, path
    # IHDR: width and height, big-endian, at bytes 16..24.
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# ---------------------------------------------------------------------------- plot
def test_aggregate_interpolates_onto_the_common_grid():
    a = ([0.0, 10.0, 20.0], [0.0, 10.0, 20.0])
    b = ([5.0, 15.0, 25.0], [1.0, 1.0, 1.0])
    grid, mean, low, high = plot.aggregate([a, b])
    # Union of the steps within [5, 20], the range both seeds cover; a(x) = x, b(x) = 1.
    np.testing.assert_allclose(grid, [5.0, 10.0, 15.0, 20.0])
    np.testing.assert_allclose(mean, [3.0, 5.5, 8.0, 10.5])
    np.testing.assert_allclose(low, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(high, [5.0, 10.0, 15.0, 20.0])
    # One seed: its own curve; no overlap: each point averages the seeds that cover it.
    grid, mean, low, high = plot.aggregate([a])
    np.testing.assert_allclose(mean, a[1])
    grid, mean, _, _ = plot.aggregate([([0.0, 1.0], [2.0, 4.0]), ([5.0, 6.0], [0.0, 0.0])])
    np.testing.assert_allclose(grid, [0.0, 1.0, 5.0, 6.0])
    np.testing.assert_allclose(mean, [2.0, 4.0, 0.0, 0.0])


def test_plotted_lines_break_across_sparse_evaluations():
    # A model-free run evaluated at 0 and then every 245,760 steps: the first gap is more
    # than half of 245,760, so the line breaks there; the later gaps are half or less.
    x = [0.0, 245760.0, 491520.0, 737280.0]
    grid, y = plot.break_sparse(x, [0.0, 27.0, 28.0, 29.0])
    np.testing.assert_array_equal(grid, [0.0, np.nan, 245760.0, 491520.0, 737280.0])
    np.testing.assert_array_equal(y, [0.0, np.nan, 27.0, 28.0, 29.0])
    # MB-MPO's rows (warm-up then every 2,000 steps) are dense: nothing inserted.
    dense = np.arange(4000.0, 20001.0, 2000.0)
    grid, y, z = plot.break_sparse(dense, dense * 2, dense * 3)
    np.testing.assert_array_equal(grid, dense)
    np.testing.assert_array_equal(z, dense * 3)
    # two breaks, each before the later point of its gap
    grid, y = plot.break_sparse([1.0, 10.0, 11.0, 100.0], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(y, [1.0, np.nan, 2.0, 3.0, np.nan, 4.0])
    assert len(plot.break_sparse([5.0], [1.0])[0]) == 1


def test_grouping_and_labels(runs):
    found = plot.find_runs([runs["parent"], runs["ablation"], runs["baseline"]])
    assert len(found) == 4
    groups = plot.group_runs(found)
    assert [len(g.runs) for g in groups] == [2, 1, 1]
    assert [os.path.basename(r.path) for r in groups[0].runs] == ["seed0", "seed1"]
    labels = [g.label for g in groups]
    assert labels[0] == "hopper cpu inner_lr=0.001 (2 seeds)"
    assert labels[1] == "hopper cpu inner_lr=0"
    assert labels[2] == "hopper algo=ppo"
    # The group's curve is the mean of its seeds interpolated onto the common grid.
    curves = [plot.curve(r, RET) for r in groups[0].runs]
    grid, mean, _, _ = plot.aggregate(curves)
    (x0, y0), (x1, y1) = curves
    np.testing.assert_allclose(mean, (np.interp(grid, x0, y0) + np.interp(grid, x1, y1)) / 2)
    assert grid[0] == 1037 and grid[-1] == 6000


def test_labels_name_the_configurations_in_order(runs, tmp_path):
    found = plot.find_runs([runs["parent"], runs["ablation"], runs["baseline"]])
    names = ["MB-MPO", "ME-TRPO-style", "brax PPO"]
    groups = plot.group_runs(found, names)
    assert [g.label for g in groups] == ["MB-MPO (2 seeds)", "ME-TRPO-style", "brax PPO"]
    # summary.md names them so in both tables: the returns and the data ratio.
    plot.make_plots(
        [runs["parent"], runs["baseline"]], str(tmp_path), RET, False, labels=["A", "B"]
    )
    text = (tmp_path / "summary.md").read_text()
    assert "| A (2 seeds) | 2 |" in text and "| B | 1 |" in text
    ratio_rows = [ln for ln in text.splitlines() if ln.endswith("x |")]
    assert len(ratio_rows) == 1 and ratio_rows[0].startswith("| A (2 seeds) |")
    assert "| B |" in ratio_rows[0]
    with pytest.raises(plot.PlotError, match="2 --label given for 3 configurations"):
        plot.group_runs(found, names[:2])
    # On the command line: one line, exit code 2, nothing written.
    out = tmp_path / "cli"
    result = run_module(
        "experiments.plot", runs["ablation"], "--label=a", "--label=b", f"--out={out}"
    )
    line = one_line_error(result, 2)
    assert "2 --label given for 1 configurations" in line and "hopper cpu" in line, line
    assert not out.exists()


def test_pearson_matches_numpy(runs):
    groups = plot.group_runs(plot.find_runs([runs["parent"], runs["ablation"]]))
    x = np.concatenate([r.column(STD) for g in groups for r in g.runs])
    y = np.concatenate([r.column(KL) for g in groups for r in g.runs])
    assert plot.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert np.isnan(plot.pearson([1.0, 2.0], [3.0, 3.0]))
    assert plot.pearson([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 5.0, 4.0]) == pytest.approx(1.0)


def test_plot_cli_writes_pngs(runs, tmp_path):
    out = tmp_path / "plots"
    args = [runs["parent"], runs["ablation"], runs["baseline"], f"--out={out}", "--logx"]
    proc = run_module("experiments.plot", *args)
    assert proc.returncode == 0, proc.stderr
    curves = out / "PrePolicy_AverageReturn_vs_steps_logx.png"
    scatter = out / "ensemble_std_vs_kl.png"
    assert f"wrote {curves}" in proc.stdout and f"wrote {scatter}" in proc.stdout
    assert png_size(curves) == (960, 600) and png_size(scatter) == (720, 600)
    assert os.path.getsize(curves) > 20_000 and os.path.getsize(scatter) > 20_000
    # the scatter's r is over the adapting runs only (the alpha = 0 run's KL is 0)
    seeds = plot.group_runs(plot.find_runs([runs["parent"]]))[0].runs
    x = np.concatenate([r.column(STD) for r in seeds])
    y = np.concatenate([r.column(KL) for r in seeds])
    assert f"Pearson r = {np.corrcoef(x, y)[0, 1]:.3f}" in proc.stdout
    within = out / "std_kl_within_iteration.png"
    assert f"wrote {within}" in proc.stdout and png_size(within) == (960, 600)
    w = np.concatenate([r.column(WITHIN) for r in seeds])
    assert f"{WITHIN} mean {w.mean():.3f} +- {w.std():.3f} over 12 iterations" in proc.stdout
    assert proc.stdout.count("within-iteration r:") == 1  # the alpha = 0 run has none


def test_diagnostic_skipped_without_its_columns(runs, tmp_path, capsys):
    written = plot.make_plots([runs["baseline"]], str(tmp_path / "p"), RET, logx=False)
    names = [os.path.basename(p) for p in written]
    assert names == ["PrePolicy_AverageReturn_vs_steps.png", "summary.md"]
    assert "diagnostic skipped" in capsys.readouterr().out


def test_runs_from_before_a_new_config_field_group_as_seeds(tmp_path):
    from mbmpo_jax import config as config_lib

    new = json.loads(config_lib.to_json(config_lib.get_config("halfcheetah", "cpu")))
    old = json.loads(json.dumps(new))
    del old["meta"]["fvp_subsample"]  # written before the field existed (then 1, as the preset's)
    old["seed"] = 1
    cols = mbmpo_columns(np.array([1000, 2000]), 0.0, np.random.default_rng(0))
    paths = [write_run(tmp_path / "a", new, cols), write_run(tmp_path / "b", old, cols)]
    groups = plot.group_runs(plot.find_runs(paths))
    assert len(groups) == 1 and groups[0].label == "halfcheetah cpu inner_lr=0.0001 (2 seeds)"
    old["meta"]["fvp_subsample"] = 4  # a real difference still splits them
    write_run(tmp_path / "c", old, cols)
    groups = plot.group_runs(plot.find_runs([paths[0], str(tmp_path / "c")]))
    assert [g.label for g in groups] == [
        "halfcheetah cpu fvp_subsample=1 inner_lr=0.0001",
        "halfcheetah cpu fvp_subsample=4 inner_lr=0.0001",
    ]


def test_unused_ppo_settings_do_not_split_trpo_runs(tmp_path):
    """`meta.ppo_clip`'s default changed (0.2 -> 0.5) between two seeds' runs; with the
    TRPO outer step it is never read, so they are seeds of one configuration; with the PPO
    outer step it splits them."""
    from mbmpo_jax import config as config_lib

    new = json.loads(config_lib.to_json(config_lib.get_config("swimmer", "cpu")))
    assert new["meta"]["outer"] == "trpo"
    old = json.loads(json.dumps(new))
    old["meta"]["ppo_clip"], old["seed"] = 0.2, 1
    cols = mbmpo_columns(np.array([1000, 2000]), 0.0, np.random.default_rng(0))
    paths = [write_run(tmp_path / "a", new, cols), write_run(tmp_path / "b", old, cols)]
    groups = plot.group_runs(plot.find_runs(paths))
    assert len(groups) == 1 and groups[0].label == "swimmer cpu (2 seeds)"
    for c in (new, old):
        c["meta"]["outer"] = "ppo"
    paths = [write_run(tmp_path / "c", new, cols), write_run(tmp_path / "d", old, cols)]
    groups = plot.group_runs(plot.find_runs(paths))
    assert [len(g.runs) for g in groups] == [1, 1]
    labels = ["swimmer cpu ppo_clip=0.5 outer=ppo", "swimmer cpu ppo_clip=0.2 outer=ppo"]
    assert [g.label for g in groups] == labels


def test_runs_of_different_lengths_are_seeds_of_one_configuration(tmp_path):
    """A run extended on resume (total_steps 100k -> 150k) and one asked for 150k from the
    start are seeds of one configuration; the mean curve covers the steps both reach and
    the summary says n/a where a seed stops short."""
    from mbmpo_jax import config as config_lib

    long = json.loads(config_lib.to_json(config_lib.get_config("hopper", "cpu")))
    short = json.loads(json.dumps(long))
    short["total_steps"], short["seed"] = 100_000, 1
    rng = np.random.default_rng(0)
    paths = [
        write_run(
            tmp_path / "long", long, mbmpo_columns(np.array([60_000, 100_000, 150_000]), 0.0, rng)
        ),
        write_run(
            tmp_path / "short", short, mbmpo_columns(np.array([60_000, 80_000, 100_000]), 0.0, rng)
        ),
    ]
    groups = plot.group_runs(plot.find_runs(paths))
    assert len(groups) == 1 and len(groups[0].runs) == 2
    table = "\n".join(plot.summary_table(groups, "PrePolicy/AverageReturn", [95_000, 150_000]))
    # at 95k: the long seed 8.75 (0 -> 10 over 60k-100k), the short one 17.5 (10 -> 20 over
    # 80k-100k); 150k: the short seed stops at 100k
    assert "| 2 | 13.1 +- 4.4 | n/a |" in table


def test_runs_from_before_a_changed_preset_default_keep_their_own_values(tmp_path):
    """The cpu preset's ensemble precision and (on HalfCheetah) patience changed after runs
    were written without those fields: such a run is float32 without patience, as on
    resume, so it groups with today's float32 runs and apart from today's default ones."""
    from mbmpo_jax import config as config_lib

    new = json.loads(config_lib.to_json(config_lib.get_config("halfcheetah", "cpu")))
    assert (new["ensemble"]["compute_dtype"], new["ensemble"]["patience"]) == ("bfloat16", 5)
    old = json.loads(json.dumps(new))
    del old["ensemble"]["compute_dtype"], old["ensemble"]["patience"]
    f32 = json.loads(json.dumps(new))
    f32["ensemble"].update(compute_dtype="float32", patience=0)
    f32["seed"] = 2
    cols = mbmpo_columns(np.array([1000, 2000]), 0.0, np.random.default_rng(0))
    paths = [
        write_run(tmp_path / name, c, cols)
        for name, c in (("new", new), ("old", old), ("f32", f32))
    ]
    groups = plot.group_runs(plot.find_runs(paths))
    assert [[os.path.basename(r.path) for r in g.runs] for g in groups] == [["new"], ["old", "f32"]]
    assert [g.label for g in groups] == [
        # the preset's inner step departs from the paper's 1e-3 there: always named
        "halfcheetah cpu compute_dtype=bfloat16 patience=5 inner_lr=0.0001",
        "halfcheetah cpu compute_dtype=float32 patience=0 inner_lr=0.0001 (2 seeds)",
    ]


def test_summary_table_values_derived_by_hand(runs):
    groups = plot.group_runs(plot.find_runs([runs["parent"], runs["ablation"]]))
    lines = plot.summary_table(groups, RET, [3000, 6010])
    assert len(lines) == 4  # header, rule, two configurations
    seeds = lines[2].split(" | ")
    # seed0: 10 * (steps / 1000 - 1) -> 20 at 3000; seed1: 20 + 10 * (steps - 1037) / 1000
    # -> 39.63; mean 29.815, std 9.815. At 6010 seed0 has stopped (6000): n/a.
    assert seeds[1] == "2" and seeds[2] == "29.8 +- 9.8" and seeds[3] == "n/a"
    # last rows: steps 6000 and 6037 -> 6018.5; values 50 and 70 -> 60 +- 10; best the same
    assert seeds[4] == "6,018, 60.0 +- 10.0" and seeds[5].rstrip(" |") == "60.0 +- 10.0"
    ablation = lines[3].split(" | ")
    assert ablation[1] == "1" and ablation[2] == "25.0"  # 5 + 10 * 2, one seed: no +-


def test_summary_table_does_not_interpolate_across_sparse_evaluations(tmp_path):
    """A baseline evaluated every 245,760 steps has no value "at 50k": the cell says -, a
    note names the rows around it; at its own rows and where they are close enough (gap at
    most half the step count) the cell is the (interpolated) value."""
    ppo = write_run(
        tmp_path / "ppo",
        {"env": "swimmer", "algo": "ppo", "seed": 0, "num_timesteps": 10**6},
        {
            "n_timesteps": np.array([0.0, 245_760.0, 491_520.0, 737_280.0]),
            RET: np.array([0.0, 27.0, 30.0, 33.0]),
        },
    )
    groups = plot.group_runs(plot.find_runs([ppo]))
    at = [50_000, 245_760, 400_000, 614_400]
    lines = plot.summary_table(groups, RET, at)
    cells = lines[2].strip("| ").split(" | ")
    # 50k: rows 0 and 245,760 (gap > 25k); 245,760: a row; 400k: gap 245,760 > 200k;
    # 614,400: gap 245,760 <= 307,200, 30 + 3 * 0.5 = 31.5
    assert cells[2:6] == ["-", "27.0", "-", "31.5"]
    notes = "\n".join(lines[3:])
    assert "at 50,000: no row near it" in notes and "rows at 0 and 245,760" in notes
    assert "at 400,000" in notes and "rows at 245,760 and 491,520" in notes
    assert "614,400" not in notes
    run = groups[0].runs[0]
    assert plot.value_at(run, RET, 50_000) == pytest.approx(27.0 * 50_000 / 245_760)
    assert np.isnan(plot.value_at(run, RET, 50_000, max_gap_fraction=0.5))
    assert plot.bracket(run, RET, 491_520) == (491_520, 491_520)
    assert all(np.isnan(plot.bracket(run, RET, 1e6)))


def test_first_reach_interpolates_the_first_crossing():
    x, y = [0.0, 10.0, 20.0, 30.0], [0.0, 4.0, 2.0, 8.0]
    assert plot.first_reach(x, y, 3.0) == pytest.approx(7.5)  # 0 -> 4 over 0..10
    assert plot.first_reach(x, y, 5.0) == pytest.approx(25.0)  # after the dip: 2 -> 8
    assert plot.first_reach(x, y, -1.0) == 0.0  # reached at the first point
    assert np.isnan(plot.first_reach(x, y, 9.0))


def test_data_ratio_table_derived_by_hand(runs, tmp_path):
    other_env = write_run(
        tmp_path / "ppo-ant",
        {"env": "ant", "algo": "ppo", "seed": 0, "num_timesteps": 10},
        {"n_timesteps": np.array([1e4, 1e5]), RET: np.array([0.0, 1e3])},
    )
    paths = [runs["parent"], runs["ablation"], runs["baseline"], other_env]
    groups = plot.group_runs(plot.find_runs(paths))
    lines = plot.data_ratio_table(groups, RET)
    assert len(lines) == 4  # header, rule, two MB-MPO configurations x the hopper baseline
    # Seeds' mean curve ends at 6000 steps: seed0 50, seed1 20 + 10 * 4.963 = 69.63, mean
    # 59.815 (the curve rises: first reached at its last point). PPO: 50 at 1e5, 300 at 1e6
    # -> 1e5 + 9.815 / 250 * 9e5 = 135,334 steps, 22.6x.
    cells = lines[2].strip("| ").split(" | ")
    assert cells[1:3] == ["59.8", "6,000"]
    assert cells[3] == "hopper algo=ppo" and cells[4] == "135,334" and cells[5] == "22.6x"
    # The alpha = 0 run: 55 at 6000; PPO 1e5 + 5 / 250 * 9e5 = 118,000 steps, 19.7x.
    cells = lines[3].strip("| ").split(" | ")
    assert cells[1:] == ["55.0", "6,000", "hopper algo=ppo", "118,000", "19.7x"]
    # A baseline that never gets there: its length and best value, and a lower bound.
    weak = write_run(
        tmp_path / "ppo-weak",
        {"env": "hopper", "algo": "ppo", "seed": 0, "num_timesteps": 1_000_000, "x": 1},
        {"n_timesteps": np.array([1e4, 1e6]), RET: np.array([1.0, 40.0])},
    )
    groups = plot.group_runs(plot.find_runs([runs["parent"], weak]))
    cells = plot.data_ratio_table(groups, RET)[2].strip("| ").split(" | ")
    assert cells[4:] == ["not reached in 1,000,000 (best 40.0)", "> 166.7x"]
    # Nothing to compare: no table.
    assert plot.data_ratio_table(plot.group_runs(plot.find_runs([runs["parent"]])), RET) == []


def test_baseline_seeds_of_different_lengths_group(tmp_path):
    cols = {"n_timesteps": np.array([0.0, 1e5]), RET: np.array([0.0, 1.0])}
    a = write_run(
        tmp_path / "a",
        {"env": "hopper", "algo": "ppo", "seed": 0, "num_timesteps": 10**6, "num_evals": 20},
        cols,
    )
    b = write_run(
        tmp_path / "b",
        {"env": "hopper", "algo": "ppo", "seed": 1, "num_timesteps": 6 * 10**6, "num_evals": 25},
        cols,
    )
    assert [len(g.runs) for g in plot.group_runs(plot.find_runs([a, b]))] == [2]


def test_mixed_runs_get_a_log_panel_and_the_ratio(runs, tmp_path, capsys):
    out = tmp_path / "mixed"
    written = plot.make_plots([runs["parent"], runs["baseline"]], str(out), RET, logx=False)
    curves = out / "PrePolicy_AverageReturn_vs_steps.png"
    assert str(curves) in written
    assert png_size(curves) == (1680, 600)  # two panels
    text = (out / "summary.md").read_text()
    assert "Real steps to reach MB-MPO's final" in text and "| 22.6x |" in text
    assert "22.6x" in capsys.readouterr().out
    # MB-MPO alone: one panel, no ratio section.
    written = plot.make_plots([runs["parent"]], str(tmp_path / "alone"), RET, logx=False)
    assert png_size(tmp_path / "alone" / "PrePolicy_AverageReturn_vs_steps.png") == (960, 600)
    assert "Real steps" not in (tmp_path / "alone" / "summary.md").read_text()


def test_plot_cli_bad_input(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text("iteration,n_timesteps,PrePolicy/AverageReturn\n")
    for arg, words in (
        (str(tmp_path / "missing"), "no such directory"),
        (str(tmp_path / "not_a_run"), "no metrics.csv"),
        (str(empty), "has no rows"),
    ):
        line = one_line_error(run_module("experiments.plot", arg), 2)
        assert words in line, line
    for flag, words in (("--at_steps=1e5,abc", "must be numbers"), ("--at_steps=-5", ">= 0")):
        line = one_line_error(run_module("experiments.plot", str(empty), flag), 2)
        assert words in line, line


# ---------------------------------------------------------------------------- render
def test_write_gif_synthetic_frames(tmp_path):
    from PIL import Image, ImageSequence

    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    frames = [np.broadcast_to(np.array(c, np.uint8), (24, 32, 3)).copy() for c in colors]
    frames[0][:4, :4] = 0  # not all one colour
    path = str(tmp_path / "x.gif")
    render.write_gif(frames, path, frame_ms=40.0)
    with open(path, "rb") as f:
        assert f.read(6) == b"GIF89a"
    with Image.open(path) as im:
        assert im.size == (32, 24) and im.n_frames == 4
        assert im.info["loop"] == 0 and im.info["duration"] == 40
        got = [np.asarray(fr.convert("RGB")) for fr in ImageSequence.Iterator(im)]
    for g, c in zip(got[1:], colors[1:], strict=True):
        np.testing.assert_array_equal(g[12, 16], c)
    np.testing.assert_array_equal(got[0][0, 0], [0, 0, 0])
    assert not os.path.exists(path + ".tmp")
    with pytest.raises(ValueError, match="frame 1"):
        render.write_gif([frames[0], frames[1][:, :16]], path, 40.0)
    with pytest.raises(ValueError, match="no frames"):
        render.write_gif([], path, 40.0)


def test_frame_every():
    assert render.frame_every(0.008, 30.0) == 4  # hopper: 32 ms per frame
    assert render.frame_every(0.05, 30.0) == 1
    assert render.frame_every(0.05, 5.0) == 4


@pytest.fixture
def smoke_run(tmp_path):
    """A run directory with config.json and a checkpoint of a fresh (untrained) state."""
    import jax

    from mbmpo_jax import config as config_lib
    from mbmpo_jax import mbmpo
    from mbmpo_jax.checkpoint import Checkpointer

    cfg = config_lib.get_config("hopper", "smoke")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(config_lib.to_json(cfg))
    state = mbmpo.Trainer(cfg).empty_state(jax.random.PRNGKey(0))
    ckpt = Checkpointer(str(run_dir))
    ckpt.save(3, state)
    ckpt.close()
    return str(run_dir)


def test_render_without_gl_says_what_to_install(tmp_path):
    from mbmpo_jax import config as config_lib

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "0").mkdir(parents=True)
    (run_dir / "config.json").write_text(
        config_lib.to_json(config_lib.get_config("hopper", "smoke"))
    )
    proc = run_module(
        "experiments.render", str(run_dir), env=dict(os.environ, MUJOCO_GL="nonexistent")
    )
    line = one_line_error(proc, 1)
    assert "MUJOCO_GL=nonexistent" in line
    assert "MUJOCO_GL=egl" in line and "libosmesa6" in line


def test_render_bad_input(tmp_path):
    line = one_line_error(run_module("experiments.render", str(tmp_path / "nope")), 2)
    assert "no such directory" in line
    line = one_line_error(run_module("experiments.render", str(tmp_path)), 2)
    assert "no config.json" in line


def test_render_writes_gif_or_explains(smoke_run, tmp_path):
    from PIL import Image

    out = tmp_path / "hopper.gif"
    args = [smoke_run, f"--out={out}", "--steps=12", "--width=64", "--height=48"]
    proc = run_module("experiments.render", *args, env=dict(os.environ, MUJOCO_GL="egl"))
    if proc.returncode == 1:  # no EGL here: the one-line message is the contract
        line = one_line_error(proc, 1)
        assert "cannot render" in line
        pytest.skip(f"no GL context: {line}")
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint 3" in proc.stdout and f"wrote {out}" in proc.stdout
    with Image.open(out) as im:
        assert im.size == (64, 48) and im.n_frames >= 2
    # A checkpoint step that does not exist is bad input.
    proc = run_module("experiments.render", smoke_run, "--checkpoint=7")
    assert "not a checkpoint" in one_line_error(proc, 2)
    # A corrupt one is one line too (no tracebacks from orbax's aborted reads).
    for root, _, files in os.walk(os.path.join(smoke_run, "checkpoints", "3")):
        for f in files:
            if f.startswith("manifest") or f.endswith(".ocdbt"):
                os.remove(os.path.join(root, f))
    proc = run_module("experiments.render", *args, env=dict(os.environ, MUJOCO_GL="egl"))
    assert "could not be restored" in one_line_error(proc, 2)
