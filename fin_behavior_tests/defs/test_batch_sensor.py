"""The batch inbox sensor on a real Dagster instance: files become partitions and runs; a file still being written,
an odd name or another kind of file does not; a file replaced under its name is scored again."""

from __future__ import annotations

import os
import time

import dagster as dg

from fin_behavior.defs.batch import BATCH_FILES, batch_inbox_sensor
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import dagster_instance


def _tick(instance: dg.DagsterInstance) -> dg.SensorResult:
    result = batch_inbox_sensor(dg.build_sensor_context(instance=instance))
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(BATCH_FILES, list(request.partition_keys))
    return result


def _write(name: str, text: str, age: float = 60.0) -> None:
    path = get_settings().batch_inbox / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (time.time() - age, time.time() - age))


def test_inbox_files_become_partitions_and_runs_once_settled():
    with dagster_instance() as instance:
        assert _tick(instance).skip_reason.skip_message == "no file in the inbox"
        _write("a.csv", "x")
        _write("b.parquet", "x")
        _write("still-arriving.csv", "x", age=0)
        _write("notes.txt", "x")
        _write("with space.csv", "x")
        first = _tick(instance)
        assert [r.partition_key for r in first.run_requests] == ["a.csv", "b.parquet"]
        assert sorted(instance.get_dynamic_partitions(BATCH_FILES)) == ["a.csv", "b.parquet"]

        again = _tick(instance)  # the same run keys: the daemon runs each once
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
        assert not again.dynamic_partitions_requests

        _write("a.csv", "a longer file")  # replaced under its name
        replaced = _tick(instance)
        keys = {r.partition_key: r.run_key for r in replaced.run_requests}
        assert keys["a.csv"] != first.run_requests[0].run_key

    with dagster_instance() as instance:
        for name in ("a.csv", "b.parquet"):
            (get_settings().batch_inbox / name).unlink()
        (get_settings().batch_inbox / "still-arriving.csv").unlink()
        result = _tick(instance)
        assert "with space.csv: rename it" in result.skip_reason.skip_message
