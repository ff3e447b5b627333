from __future__ import annotations

import subprocess
import sys

import pandas as pd

from fin_behavior.cli import main


def test_generate_data_writes_the_requested_rows(tmp_path, capsys):
    out = tmp_path / "nested" / "t.csv"
    assert main(["generate-data", "--rows", "123", "--seed", "9", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 123
    assert "wrote 123 rows" in capsys.readouterr().out


def test_console_script_reports_bad_arguments_without_a_traceback(tmp_path):
    exe = [sys.executable, "-m", "fin_behavior.cli"]
    bad = subprocess.run(
        [*exe, "generate-data", "--rows", "0", "--out", str(tmp_path / "x.csv")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "must be a positive whole number" in bad.stderr
    assert "Traceback" not in bad.stderr
    unwritable = subprocess.run(
        [*exe, "generate-data", "--rows", "5", "--out", "/proc/nope/x.csv"], capture_output=True, text=True
    )
    assert unwritable.returncode == 2 and "error:" in unwritable.stderr and "Traceback" not in unwritable.stderr
