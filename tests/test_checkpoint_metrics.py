"""Checkpoints and metrics: round trips, keep-N, mismatches, and disk errors."""

import errno
import os

import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging as absl_logging

from mbmpo_jax import checkpoint, metrics


def _state(n=3):
    return {"w": jnp.arange(n * 2, dtype=jnp.float32).reshape(n, 2), "step": jnp.int32(7)}


def test_checkpoint_round_trip_and_keep_last_n(tmp_path):
    ck = checkpoint.Checkpointer(str(tmp_path), keep=2)
    for step in range(4):
        ck.save(step, {"w": _state()["w"] + step, "step": jnp.int32(step)})
    assert ck.all_steps() == [2, 3] and ck.latest_step() == 3
    restored = ck.restore(3, _state())
    np.testing.assert_array_equal(restored["w"], np.asarray(_state()["w"]) + 3)
    assert int(restored["step"]) == 3


def test_checkpoint_of_another_config_names_the_mismatch(tmp_path):
    ck = checkpoint.Checkpointer(str(tmp_path))
    ck.save(0, _state(3))
    with pytest.raises(checkpoint.CheckpointError, match=r"\['w'\] has shape \(3, 2\).*\(5, 2\)"):
        ck.restore(0, _state(5))


def test_checkpoint_disk_error_is_one_line_and_keeps_earlier(tmp_path, monkeypatch, caplog):
    ck = checkpoint.Checkpointer(str(tmp_path))
    ck.save(0, _state())

    def full_disk(*args, **kwargs):
        # what orbax's writer thread does before the save fails: logs a traceback via absl
        absl_logging.error("RESOURCE_EXHAUSTED: Failed writing\nTraceback (most recent...)")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck._manager, "save", full_disk)
    with pytest.raises(checkpoint.CheckpointError, match="could not write checkpoint 1") as e:
        ck.save(1, _state())
    assert "\n" not in str(e.value)
    assert not [r for r in caplog.records if "RESOURCE_EXHAUSTED" in r.getMessage()]
    monkeypatch.undo()
    assert ck.latest_step() == 0
    np.testing.assert_array_equal(ck.restore(0, _state())["w"], np.asarray(_state()["w"]))


def test_metrics_rows_truncate_and_reload(tmp_path):
    w = metrics.MetricsWriter(str(tmp_path), tensorboard=False)
    for it in (1, 2, 3):
        w.write({"iteration": it, "n_timesteps": 100 * it, "x": it / 2})
    w.write({"iteration": 2, "n_timesteps": 200, "x": 9.0})  # a re-run replaces, not duplicates
    w.truncate(2)  # resume from the checkpoint of iteration 2
    rows = metrics.read_metrics(os.path.join(tmp_path, "metrics.csv"))
    assert [r["iteration"] for r in rows] == [1.0, 2.0]
    assert rows[1]["x"] == 9.0
    again = metrics.MetricsWriter(str(tmp_path), tensorboard=False)
    assert [r["iteration"] for r in again.rows] == [1.0, 2.0]
    with pytest.raises(ValueError, match="iteration"):
        again.write({"n_timesteps": 1})


def test_metrics_disk_error_keeps_the_previous_file(tmp_path, monkeypatch):
    w = metrics.MetricsWriter(str(tmp_path), tensorboard=False)
    w.write({"iteration": 1, "n_timesteps": 10})
    path = os.path.join(tmp_path, "metrics.csv")
    before = open(path).read()

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="could not write .*metrics.csv: No space left") as e:
        w.write({"iteration": 2, "n_timesteps": 20})
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    assert open(path).read() == before  # the earlier rows are intact


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    ck = checkpoint.Checkpointer(str(tmp_path))
    ck.save(0, _state())
    for root, _, files in os.walk(os.path.join(ck.directory, "0")):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage\xff" * 3)
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint 0") as e:
        ck.restore(0, _state())
    assert "\n" not in str(e.value)


def test_a_failed_restore_silences_its_abandoned_reads_only(tmp_path):
    # After a failed restore, asyncio's "never retrieved" reports of orbax's other reads
    # (echoes of the CheckpointError) are dropped; the asyncio logger's other records pass.
    import logging

    ck = checkpoint.Checkpointer(str(tmp_path))
    ck.save(0, _state())
    for root, _, files in os.walk(os.path.join(ck.directory, "0")):
        for name in files:
            os.remove(os.path.join(root, name))
    with pytest.raises(checkpoint.CheckpointError):
        ck.restore(0, _state())
    asyncio_logger = logging.getLogger("asyncio")

    def passes(msg):
        rec = asyncio_logger.makeRecord("asyncio", logging.ERROR, __file__, 1, msg, (), None)
        return asyncio_logger.filter(rec)

    assert not passes("Task exception was never retrieved\nfuture: <Task finished ...>")
    assert not passes("Future exception was never retrieved")
    assert passes("Executing <Task pending> took 0.2 seconds")


def _written_metrics(tmp_path, rows=3):
    from mbmpo_jax.metrics import MetricsWriter

    w = MetricsWriter(str(tmp_path), tensorboard=False)
    for i in range(1, rows + 1):
        w.write({"iteration": i, "n_timesteps": 100 * i, "x": 0.5 * i})
    return os.path.join(str(tmp_path), "metrics.csv")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text.splitlines()[0] + "\n", "holds iterations none"),
        (lambda text: "", "is empty but the checkpoint is at iteration 3"),
        (lambda text: text[: text.rindex(",")], "cells, the header"),
        (lambda text: text.replace("\n3.0,", "\n5.0,"), "holds iterations 1, 2, 5"),
        (lambda text: text.replace(",1.5\n", ",1.5e\n"), "is not a number"),
        (lambda text: text.replace("300.0", "301.0"), "n_timesteps 301"),
    ],
    ids=["header-only", "empty", "cut-mid-row", "wrong-iteration", "cut-number", "other-run"],
)
def test_check_metrics_refuses_damage(tmp_path, damage, message):
    from mbmpo_jax.metrics import MetricsError, check_metrics

    path = _written_metrics(tmp_path)
    text = open(path).read()
    assert check_metrics(path, 3, 300) is None and check_metrics(path, 2, 200) is None
    open(path, "w").write(damage(text))
    with pytest.raises(MetricsError, match=message):
        check_metrics(path, 3, 300)


def test_check_metrics_column_added_on_resume(tmp_path):
    # A run resumed by code that logs one more column: the writer leaves that column empty
    # in the earlier rows, and the next resume accepts it; an empty cell after the
    # column's first number (a row cut after a comma) or in the keys is still damage.
    from mbmpo_jax.metrics import MetricsError, MetricsWriter, check_metrics, read_metrics

    path = _written_metrics(tmp_path, rows=2)
    w = MetricsWriter(str(tmp_path), tensorboard=False)
    w.write({"iteration": 3, "n_timesteps": 300, "x": 1.5, "new": 7.0})
    lines = open(path).read().splitlines()
    assert lines[0].endswith(",new") and lines[1].endswith(",") and lines[3].endswith(",7.0")
    assert check_metrics(path, 3, 300) is None
    assert [r["new"] for r in read_metrics(path)][2] == 7.0
    w.write({"iteration": 4, "n_timesteps": 400, "x": 2.0})  # the column missing again
    with pytest.raises(MetricsError, match="line 5: '' is not a number"):
        check_metrics(path, 4, 400)
    text = "\n".join(lines[:3]) + "\n"
    open(path, "w").write(text.replace("\n2.0,", "\n,"))
    with pytest.raises(MetricsError, match="line 3: '' is not a number"):
        check_metrics(path, 2, 200)


def test_check_metrics_missing_file_is_a_note(tmp_path):
    from mbmpo_jax.metrics import check_metrics

    path = os.path.join(str(tmp_path), "metrics.csv")
    assert check_metrics(path, 0, 0) is None
    assert "missing" in check_metrics(path, 2, 200)
