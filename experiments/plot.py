"""Learning curves and the ensemble-std / KL diagnostic: `python -m experiments.plot RUN_DIR ...`.

  python -m experiments.plot runs/ant-cpu runs/ant-cpu-metrpo runs/ant-ppo [--out=plots]
      [--logx] [--metric=PrePolicy/AverageReturn] [--label="MB-MPO" --label=... ...]

Each RUN_DIR is a run directory (config.json + metrics.csv, written by `experiments.run` or
`experiments.baseline`) or a directory whose sub-directories are run directories (e.g. the
seed0, seed1, ... of `experiments.run --num_seeds=N`). Runs whose config.json are equal apart
from `seed` and the run length (`total_steps`, `num_iterations`; a baseline's
`num_timesteps`, `num_evals`) and the settings of parts the run does not use (the PPO outer
step's `meta.ppo_*` under the paper's TRPO one) are seeds of one configuration and form one
curve. Each curve is labelled by the config fields in which it differs from the others;
`--label`, given once per configuration in the order of their first run, names them instead
(the seed count is still appended).

Writes into --out (default `runs/plots/`):
  <metric>_vs_steps.png   the metric (default the pre-update policy's real return) against
      real time steps (n_timesteps): per configuration the mean over its seeds, each seed
      interpolated linearly onto the union of their step values within the range that every
      seed covers, with the min-max over seeds shaded. --logx: log x-axis, as the paper's
      comparison with model-free methods. MB-MPO and model-free runs together (without
      --logx): two panels, MB-MPO's step range on a linear axis and every run on a log one.
  ensemble_std_vs_kl.png  the paper's diagnostic: ensemble std of the model predictions
      (Model/EnsembleStd) against KL(pre || post) of the adaptation (Meta/KLPrePost), one
      point per iteration of every MB-MPO run with adaptation (alpha = 0 runs have KL = 0),
      Pearson r in the title. Skipped (with a note) when no run has both columns (e.g.
      only model-free baselines).
  std_kl_within_iteration.png  the same relation measured within each iteration, free of
      the trends both quantities follow across iterations: Pearson r per meta step over
      (task, state) pairs (Diag/StdKLCorrStates) and over tasks (Diag/StdKLCorrTasks),
      averaged over the iteration's meta steps, against real steps; the mean over
      iterations is printed.
  summary.md  a table per configuration: seeds, the metric at each --at_steps (mean +- std
      over seeds, each seed linearly interpolated; n/a where a seed stops short, - where
      a run's rows around that step lie more than half the step count apart, as a
      model-free baseline's evaluations do at MB-MPO's step counts), the
      steps and value of the last row (mean over seeds), and the best value. With MB-MPO
      and model-free runs of one env: the real steps each needs to reach MB-MPO's final
      value (the last point of its mean curve; first crossing of each mean curve, linearly
      interpolated) and their ratio, the paper's "10-100x less data".

Bad input (missing directory, no metrics.csv, empty metrics) prints one line `error: ...`
and exits with code 2.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from absl import app, flags

from experiments import _quiet  # noqa: F401  (keeps library chatter off the console)
from experiments._cli import fail, own_flags_parser

# A FlagValues of its own: the CLIs can be imported together (tests) without clashing flags.
_FLAGS = flags.FlagValues()

_OUT = flags.DEFINE_string(
    "out", os.path.join("runs", "plots"), "directory for the PNGs", flag_values=_FLAGS
)
_LOGX = flags.DEFINE_bool("logx", False, "log-scale x-axis (real time steps)", flag_values=_FLAGS)
_METRIC = flags.DEFINE_string(
    "metric", "PrePolicy/AverageReturn", "metrics.csv column to plot", flag_values=_FLAGS
)
_AT = flags.DEFINE_list(
    "at_steps",
    ["50000", "100000"],
    "real step counts for the summary table (metric interpolated per seed)",
    flag_values=_FLAGS,
)

_LABELS = flags.DEFINE_multi_string(
    "label",
    [],
    "names the configurations in the order of their first run, one --label each "
    "(default: the config fields in which they differ)",
    flag_values=_FLAGS,
)

STEPS = "n_timesteps"
STD_COL = "Model/EnsembleStd"
KL_COL = "Meta/KLPrePost"
WITHIN_COLS = ("Diag/StdKLCorrStates", "Diag/StdKLCorrTasks")
# Config fields that do not make two runs different configurations.
# Not configuration: the seed, and how long a run was asked to go (a run extended with
# `--resume --config.total_steps=...` is still a seed of its configuration).
# The model-free baselines' `num_timesteps` and `num_evals` are their run length and its
# evaluation spacing; `devices`, how many devices a baseline's updates were spread over.
_NOT_CONFIG = (
    "seed", "checkpoint_keep", "total_steps", "num_iterations", "num_timesteps", "num_evals",
    "devices",
)  # fmt: skip
# Fields that configure a part the run does not use, by (field that selects it, its value,
# prefix of the unused fields): with the paper's TRPO outer step the PPO outer step's
# settings (whose defaults changed between runs) do not make two runs different.
_INERT = (("meta.outer", "trpo", "meta.ppo_"),)
# Ablations worth naming in a label even when no other plotted run differs in them.
_ALWAYS_NOTABLE = {"meta.inner_lr": 1e-3, "meta.outer": "trpo", "meta.start_from": "reset"}
_MAX_LABEL_DIFFS = 4


class PlotError(ValueError):
    """Bad input; the message is one line."""


@dataclass
class Run:
    """One run directory: its config (may be empty) and metrics rows."""

    path: str
    config: dict
    rows: list[dict[str, float]]

    def column(self, name: str) -> list[float]:
        return [r.get(name, math.nan) for r in self.rows]

    def has(self, name: str) -> bool:
        return any(math.isfinite(v) for v in self.column(name))


@dataclass
class Group:
    """Seeds of one configuration."""

    key: str
    config: dict
    runs: list[Run] = field(default_factory=list)
    label: str = ""


# ---------------------------------------------------------------------------- loading
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def load_run(path: str) -> Run:
    """Reads `path/metrics.csv` (and config.json if present); PlotError if unusable."""
    from mbmpo_jax.metrics import read_metrics

    csv_path = os.path.join(path, "metrics.csv")
    try:
        rows = read_metrics(csv_path)
    except (OSError, ValueError, csv.Error) as e:
        raise PlotError(f"{csv_path} is unreadable: {str(e).splitlines()[0]}") from None
    if not rows:
        raise PlotError(f"{csv_path} has no rows (has the run finished an iteration?)")
    if STEPS not in rows[0]:
        raise PlotError(f"{csv_path} has no {STEPS} column")
    config: dict = {}
    cfg_path = os.path.join(path, "config.json")
    if os.path.exists(cfg_path):
        try:
            with open(cfg_path) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise PlotError(f"{cfg_path} is unreadable: {str(e).splitlines()[0]}") from None
        if not isinstance(config, dict):
            raise PlotError(f"{cfg_path} is not a JSON object")
    return Run(path=path, config=config, rows=rows)


def find_runs(paths: Sequence[str]) -> list[Run]:
    """The run directories named on the command line (or their run sub-directories)."""
    if not paths:
        raise PlotError("no RUN_DIR given; usage: python -m experiments.plot RUN_DIR [RUN_DIR ...]")
    runs = []
    for p in paths:
        if not os.path.isdir(p):
            raise PlotError(f"{p}: no such directory")
        if os.path.exists(os.path.join(p, "metrics.csv")):
            runs.append(load_run(p))
            continue
        subs = sorted(
            (os.path.join(p, s) for s in os.listdir(p)),
            key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)],
        )
        subs = [s for s in subs if os.path.exists(os.path.join(s, "metrics.csv"))]
        if not subs:
            raise PlotError(f"{p} has no metrics.csv (not a run directory, nor a parent of runs)")
        runs.extend(load_run(s) for s in subs)
    return runs


def group_runs(runs: Sequence[Run], labels: Sequence[str] = ()) -> list[Group]:
    """Groups runs whose config.json are equal apart from `seed` and the run length;
    labels each group (by `labels`, one per group in order, when given).

    Runs without a config.json are their own group, labelled by directory name. Groups keep
    the order in which their first run was given.
    """
    groups: dict[str, Group] = {}
    for r in runs:
        if r.config:
            cfg = _with_defaults(r.config)
            cfg = {k: v for k, v in cfg.items() if k not in _NOT_CONFIG}
            for field, value, prefix in _INERT:
                if cfg.get(field) == value:
                    cfg = {k: v for k, v in cfg.items() if not k.startswith(prefix)}
            key = json.dumps(sorted(cfg.items()), default=str)
        else:
            cfg, key = {}, f"dir:{os.path.abspath(r.path)}"
        groups.setdefault(key, Group(key=key, config=cfg)).runs.append(r)
    out = list(groups.values())
    _label(out)
    if labels:
        if len(labels) != len(out):
            auto = "; ".join(g.label for g in out)
            raise PlotError(
                f"{len(labels)} --label given for {len(out)} configurations "
                f"(one each, in the order of their first run): {auto}"
            )
        for g, name in zip(out, labels, strict=True):
            g.label = name + _seeds_suffix(g)
    return out


def _with_defaults(config: dict) -> dict:
    """An MB-MPO run's flattened config with the fields added since it was written filled
    in as `config.from_json` fills them on resume (a field whose default changed since
    takes the value that reproduces the older code), so that old and new runs of one
    configuration still group as seeds, and runs of different ones do not."""
    flat = _flatten(config)
    if "algo" in flat or "env" not in flat or "preset" not in flat:
        return flat
    from mbmpo_jax import config as config_lib

    try:
        full = config_lib.from_json(json.dumps(config))
    except config_lib.ConfigError:
        try:  # e.g. a field since removed: fill from the preset's defaults alone
            full = config_lib.get_config(flat["env"], flat["preset"])
        except config_lib.ConfigError:
            return flat
    full = _flatten(json.loads(config_lib.to_json(full)))
    return {**{k: v for k, v in full.items() if k not in ("env", "preset")}, **flat}


def _algo(cfg: dict) -> str:
    return str(cfg.get("algo", "mbmpo"))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return ",".join(_fmt(x) for x in v)
    return str(v)


def _label(groups: list[Group]) -> None:
    # Fields that differ between groups of one algorithm (present in all of them).
    by_algo: dict[str, list[Group]] = {}
    for g in groups:
        if g.config:
            by_algo.setdefault(_algo(g.config), []).append(g)
    differing: dict[str, list[str]] = {}
    for algo, gs in by_algo.items():
        common = set.intersection(*(set(g.config) for g in gs))
        keys = sorted(
            k
            for k in common
            if k not in ("env", "preset", "algo") and len({repr(g.config[k]) for g in gs}) > 1
        )
        differing[algo] = keys
    seen: dict[str, int] = {}
    for g in groups:
        c = g.config
        if not c:
            base = os.path.basename(os.path.normpath(g.runs[0].path))
        else:
            algo = _algo(c)
            parts = [str(c.get("env", "?"))]
            if c.get("preset"):
                parts.append(str(c["preset"]))
            if algo != "mbmpo":
                parts.append(f"algo={algo}")
            keys = list(differing.get(algo, []))
            if algo == "mbmpo":
                keys += [k for k, d in _ALWAYS_NOTABLE.items() if k in c and c[k] != d]
            keys = list(dict.fromkeys(keys))
            shorts = [k.rsplit(".", 1)[-1] for k in keys]
            diffs = [
                f"{k if shorts.count(s) > 1 else s}={_fmt(c[k])}"
                for k, s in zip(keys, shorts, strict=True)
            ]
            if len(diffs) > _MAX_LABEL_DIFFS:
                diffs = diffs[:_MAX_LABEL_DIFFS] + ["..."]
            base = " ".join(parts + diffs)
        seen[base] = seen.get(base, 0) + 1
        g.label = base if seen[base] == 1 else f"{base} #{seen[base]}"
        g.label += _seeds_suffix(g)


def _seeds_suffix(g: Group) -> str:
    return f" ({len(g.runs)} seeds)" if len(g.runs) > 1 else ""


# ---------------------------------------------------------------------------- numbers
def curve(run: Run, metric: str):
    """`(steps, values)` of `run`, finite rows only, sorted by steps (numpy arrays)."""
    import numpy as np

    x = np.asarray(run.column(STEPS), float)
    y = np.asarray(run.column(metric), float)
    ok = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[ok], kind="stable")
    return x[ok][order], y[ok][order]


def aggregate(curves: Sequence[tuple]):
    """Mean and min-max of seeds' curves on a common step grid.

    Args:
      curves: `(steps [n_i], values [n_i])` per seed, steps increasing.
    Returns:
      `(grid, mean, low, high)`: the grid is the sorted union of every seed's steps within
      the range that all seeds cover (each seed interpolated linearly onto it); if the
      seeds' ranges do not overlap, the union of all steps, averaging the seeds that cover
      each point. Empty arrays when no curve has a point.
    """
    import numpy as np

    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x)]
    if not curves:
        e = np.zeros(0)
        return e, e, e, e
    lo = max(x[0] for x, _ in curves)
    hi = min(x[-1] for x, _ in curves)
    allx = np.unique(np.concatenate([x for x, _ in curves]))
    grid = allx[(allx >= lo) & (allx <= hi)] if lo <= hi else allx
    vals = np.full((len(curves), len(grid)), np.nan)
    for i, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        vals[i, inside] = np.interp(grid[inside], x, y)
    return grid, np.nanmean(vals, 0), np.nanmin(vals, 0), np.nanmax(vals, 0)


def break_sparse(grid, *series):
    """`grid` and `series` with a NaN point inserted wherever two neighbouring steps lie more
    than `MAX_GAP_FRACTION` of the later one apart, so a plotted line breaks there instead of
    drawing a straight line across steps that were never evaluated (the rule the summary
    table uses not to interpolate: a model-free run evaluated at 0 and then 245k has no
    value at 100k)."""
    import numpy as np

    grid = np.asarray(grid, float)
    gaps = np.flatnonzero(np.diff(grid) > MAX_GAP_FRACTION * np.abs(grid[1:])) + 1
    return tuple(np.insert(np.asarray(a, float), gaps, np.nan) for a in (grid, *series))


def pearson(x, y) -> float:
    """Pearson correlation of the finite pairs (NaN with < 2 pairs or a constant side)."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


# ---------------------------------------------------------------------------- figures
def _pyplot():
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font-cache notes via absl
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _is_model_free(g: Group) -> bool:
    return bool(g.config) and _algo(g.config) != "mbmpo"


def plot_returns(groups: list[Group], metric: str, out_path: str, logx: bool) -> list[str]:
    """Writes the learning-curve figure; returns notes on runs left out.

    With MB-MPO and model-free runs together (and no --logx), two panels: real steps on a
    linear axis over the MB-MPO runs' range, and every curve on a log axis (the paper's
    comparison: the model-free runs take 10-100x the steps)."""
    plt = _pyplot()
    notes = []
    mixed = not logx and any(_is_model_free(g) for g in groups)
    mixed = mixed and not all(_is_model_free(g) for g in groups if g.config)
    if mixed:
        fig, axes = plt.subplots(1, 2, figsize=(14, 5), dpi=120)
        axes, scales = list(axes), ["linear", "log"]
    else:
        fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
        axes, scales = [ax], ["log" if logx else "linear"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn, mb_max = 0, 0.0
    for i, g in enumerate(groups):
        curves = []
        for r in g.runs:
            x, y = curve(r, metric)
            if logx:
                x, y = x[x > 0], y[x > 0]
            if len(x) == 0:
                notes.append(f"{r.path}: no finite {metric} values; left out")
                continue
            curves.append((x, y))
        grid, mean, low, high = aggregate(curves)
        if len(grid) == 0:
            continue
        if not _is_model_free(g):
            mb_max = max(mb_max, float(grid[-1]))
        color = colors[i % len(colors)]
        marker = "o" if len(grid) < 30 else None
        for ax, scale in zip(axes, scales, strict=True):
            keep = grid > 0 if scale == "log" else slice(None)
            x, m, lo, hi = break_sparse(grid[keep], mean[keep], low[keep], high[keep])
            ax.plot(x, m, color=color, label=g.label, marker=marker, markersize=3)
            if len(curves) > 1:
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
        drawn += 1
    if not drawn:
        plt.close(fig)
        raise PlotError(f"no run has finite values of {metric!r}")
    for ax, scale in zip(axes, scales, strict=True):
        ax.set_xscale(scale)
        ax.set_xlabel("real time steps" + (" (log)" if scale == "log" and mixed else ""))
        ax.set_ylabel(metric)
    if mixed and mb_max > 0:
        axes[0].set_xlim(0, 1.05 * mb_max)
        axes[0].set_title("MB-MPO's range (linear)")
        axes[1].set_title("all runs (log steps)")
        fig.suptitle(f"{metric} (mean over seeds; shaded: min-max)")
        for ax in axes[:-1]:
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        axes = axes[-1:]
    else:
        axes[0].set_title(f"{metric} (mean over seeds; shaded: min-max)")
    _finish(plt, fig, axes[0], out_path)
    return notes


def _finish(plt, fig, ax, out_path: str) -> None:
    """Grid, legend, layout; writes the PNG and frees the figure."""
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


def plot_std_vs_kl(groups: list[Group], out_path: str) -> float | None:
    """Writes the ensemble-std / KL scatter; returns Pearson r, or None if no run has both."""
    import numpy as np

    points = []
    for g in groups:
        xs, ys = [], []
        for r in g.runs:
            # alpha = 0 runs (KL identically 0: no adaptation) have nothing to correlate
            if r.has(STD_COL) and r.has(KL_COL) and any(v != 0 for v in r.column(KL_COL)):
                xs += r.column(STD_COL)
                ys += r.column(KL_COL)
        if xs:
            points.append((g.label, np.asarray(xs), np.asarray(ys)))
    if not points:
        return None
    r = pearson(np.concatenate([p[1] for p in points]), np.concatenate([p[2] for p in points]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    for label, x, y in points:
        ax.scatter(x, y, s=14, alpha=0.7, label=label)
    ax.set_xlabel(f"ensemble std ({STD_COL})")
    ax.set_ylabel(f"KL(pre || post) ({KL_COL})")
    r_text = "n/a" if math.isnan(r) else f"{r:.3f}"
    n = sum(int(np.sum(np.isfinite(x) & np.isfinite(y))) for _, x, y in points)
    ax.set_title(f"Ensemble std vs KL(pre || post): Pearson r = {r_text} (n={n})")
    _finish(plt, fig, ax, out_path)
    return r


def plot_std_kl_within(groups: list[Group], out_path: str) -> list[str]:
    """Writes the within-iteration r's against real steps; returns summary lines ([] if no
    run logged them, e.g. runs from before the diagnostic existed or alpha = 0)."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    lines = []
    for g in groups:
        for col, style in zip(WITHIN_COLS, ("-", ":"), strict=True):
            values = []
            for r in g.runs:
                if not r.has(col):
                    continue
                x, y = curve(r, col)
                values += list(y)
                ax.plot(x, y, style, alpha=0.8, label=f"{g.label}: {col.split('/')[1]}")
            if values:
                v = np.asarray(values)
                lines.append(
                    f"{g.label}: {col} mean {v.mean():.3f} +- {v.std():.3f} over {v.size} "
                    f"iterations, positive in {np.mean(v > 0):.0%}"
                )
    if not lines:
        plt.close(fig)
        return []
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_xlabel("real time steps")
    ax.set_ylabel("Pearson r (ensemble std, KL(pre || post))")
    ax.set_title("Std vs KL within each iteration (mean over its meta steps)")
    _finish(plt, fig, ax, out_path)
    return lines


# A summary cell interpolates between the two rows around its step count only when they lie
# at most this fraction of that count apart: MB-MPO logs every 2,000-4,000 real steps, but
# a model-free baseline evaluates every 0.1-0.3M steps, and a value "at 50k" drawn between
# its evaluations at 0 and 246k would be a straight line, not a measurement.
MAX_GAP_FRACTION = 0.5


def bracket(run: Run, metric: str, steps: float) -> tuple[float, float]:
    """The step counts of the rows at or around `steps` (equal when a row lies exactly
    there; nan outside the run's range)."""
    import numpy as np

    x, _ = curve(run, metric)
    if len(x) == 0 or not x[0] <= steps <= x[-1]:
        return math.nan, math.nan
    i = int(np.searchsorted(x, steps, side="left"))
    if x[i] == steps:
        return float(steps), float(steps)
    return float(x[i - 1]), float(x[i])


def _sparse(run: Run, metric: str, steps: float, fraction: float) -> tuple[float, float] | None:
    """The rows around `steps` when they lie more than `fraction` of `steps` apart."""
    lo, hi = bracket(run, metric, steps)
    return (lo, hi) if hi - lo > fraction * steps else None


def value_at(run: Run, metric: str, steps: float, max_gap_fraction: float | None = None) -> float:
    """`metric` linearly interpolated at `steps` real steps (nan outside the run's range;
    with `max_gap_fraction`, nan too where the rows around `steps` lie more than that
    fraction of `steps` apart)."""
    import numpy as np

    x, y = curve(run, metric)
    if len(x) == 0 or not x[0] <= steps <= x[-1]:
        return math.nan
    if max_gap_fraction is not None and _sparse(run, metric, steps, max_gap_fraction):
        return math.nan
    return float(np.interp(steps, x, y))


def summary_table(groups: list[Group], metric: str, at_steps: Sequence[float]) -> list[str]:
    """Markdown table lines: per configuration, the metric at `at_steps` over its seeds."""
    import numpy as np

    def cell(values) -> str:
        v = np.asarray(values, float)
        if v.size == 0 or not np.all(np.isfinite(v)):
            return "n/a"
        return f"{v.mean():.1f} +- {v.std():.1f}" if v.size > 1 else f"{v[0]:.1f}"

    head = ["configuration", "seeds"] + [f"at {s:,.0f} steps" for s in at_steps]
    head += ["last row: steps, value", "best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for g in groups:
        curves = [curve(r, metric) for r in g.runs]
        curves = [(x, y) for x, y in curves if len(x)]
        if not curves:
            continue
        cells = [g.label, str(len(curves))]
        for s in at_steps:
            gaps = [
                (r, gap)
                for r in g.runs
                if (gap := _sparse(r, metric, s, MAX_GAP_FRACTION)) is not None
            ]
            if gaps:
                cells.append("-")
                notes += [
                    f"- {g.label} at {s:,.0f}: no row near it in {r.path} (rows at "
                    f"{lo:,.0f} and {hi:,.0f}; a cell interpolates only between rows at "
                    f"most {MAX_GAP_FRACTION:.0%} of its step count apart)"
                    for r, (lo, hi) in gaps
                ]
            else:
                cells.append(cell([value_at(r, metric, s) for r in g.runs]))
        last_steps = np.mean([x[-1] for x, _ in curves])
        cells.append(f"{last_steps:,.0f}, {cell([y[-1] for _, y in curves])}")
        cells.append(cell([y.max() for _, y in curves]))
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "-: the runs evaluate too sparsely there to interpolate:"] + notes
    return lines


def first_reach(x, y, target: float) -> float:
    """The first step at which the piecewise-linear curve `(x, y)` reaches `target` (nan if
    it never does): between the last point below and the first point at or above, linearly
    interpolated."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    above = np.nonzero(y >= target)[0]
    if len(above) == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def data_ratio_table(groups: list[Group], metric: str) -> list[str]:
    """Markdown lines: for each MB-MPO configuration and each model-free one on the same
    env, the real steps each needs to reach MB-MPO's final value (the last point of its
    mean-over-seeds curve), first crossing of each mean curve, and their ratio. Empty when
    there is no such pair."""

    def mean_curve(g):
        grid, mean, _, _ = aggregate([c for c in (curve(r, metric) for r in g.runs) if len(c[0])])
        return grid, mean

    head = ["MB-MPO configuration", "its final value", "MB-MPO steps to reach it"]
    head += ["model-free configuration", "its steps to reach it", "ratio (model-free / MB-MPO)"]
    lines = []
    for m in groups:
        if not m.config or _is_model_free(m):
            continue
        mx, my = mean_curve(m)
        if len(mx) == 0:
            continue
        target = float(my[-1])
        steps_m = first_reach(mx, my, target)
        for f in groups:
            if not _is_model_free(f) or f.config.get("env") != m.config.get("env"):
                continue
            fx, fy = mean_curve(f)
            if len(fx) == 0:
                continue
            steps_f = first_reach(fx, fy, target)
            if math.isfinite(steps_f):
                reach, ratio = f"{steps_f:,.0f}", f"{steps_f / max(steps_m, 1.0):.1f}x"
            else:
                reach = f"not reached in {fx[-1]:,.0f} (best {fy.max():.1f})"
                ratio = f"> {fx[-1] / max(steps_m, 1.0):.1f}x"
            cells = [m.label, f"{target:.1f}", f"{steps_m:,.0f}", f.label, reach, ratio]
            lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + lines


def make_plots(
    paths: Sequence[str],
    out: str,
    metric: str,
    logx: bool,
    at_steps: Sequence[float] = (50_000, 100_000),
    labels: Sequence[str] = (),
) -> list[str]:
    """Everything the CLI does, minus the exit codes; returns the paths written."""
    runs = find_runs(paths)
    if not any(metric in r.rows[0] for r in runs):
        raise PlotError(
            f"no run has a {metric!r} column; columns of {runs[0].path}: "
            + ", ".join(runs[0].rows[0])
        )
    for r in runs:
        if metric not in r.rows[0]:
            print(f"note: {r.path} has no {metric!r} column; left out of the curves")
    groups = group_runs(runs, labels)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise PlotError(f"cannot create --out={out}: {e.strerror or e}") from None
    written = []
    name = re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")
    path = os.path.join(out, f"{name}_vs_steps{'_logx' if logx else ''}.png")
    for note in plot_returns(groups, metric, path, logx):
        print(f"note: {note}")
    written.append(path)
    path = os.path.join(out, "ensemble_std_vs_kl.png")
    r = plot_std_vs_kl(groups, path)
    if r is None:
        print(f"note: no run has {STD_COL} and {KL_COL} (MB-MPO runs); diagnostic skipped")
    else:
        written.append(path)
        print(f"ensemble std vs KL(pre || post) across iterations: Pearson r = {r:.3f}")
    path = os.path.join(out, "std_kl_within_iteration.png")
    lines = plot_std_kl_within(groups, path)
    if lines:
        written.append(path)
        for line in lines:
            print(f"within-iteration r: {line}")
    table = summary_table(groups, metric, at_steps)
    path = os.path.join(out, "summary.md")
    ratios = data_ratio_table(groups, metric)
    with open(path, "w") as f:
        f.write(f"{metric} (mean +- std over seeds)\n\n" + "\n".join(table) + "\n")
        if ratios:
            f.write(f"\nReal steps to reach MB-MPO's final {metric}\n\n" + "\n".join(ratios))
            f.write("\n")
    print("\n".join(table))
    if ratios:
        print("\n".join(ratios))
    written.append(path)
    return written


# ---------------------------------------------------------------------------- CLI


def main(argv):
    bad = [a for a in argv[1:] if a.startswith("-")]
    if bad:
        fail(f"unknown flag {bad[0]}")
    try:
        at_steps = [float(v) for v in _AT.value]
    except ValueError:
        fail(f"--at_steps must be numbers, got {','.join(_AT.value)}")
    if not all(math.isfinite(v) and v >= 0 for v in at_steps):
        fail("--at_steps must be finite and >= 0")
    try:
        written = make_plots(
            argv[1:], _OUT.value, _METRIC.value, _LOGX.value, at_steps, _LABELS.value
        )
    except PlotError as e:
        fail(str(e))
    except OSError as e:
        fail(f"{type(e).__name__}: {str(e).splitlines()[0]}")
    for p in written:
        print(f"wrote {p}")


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
