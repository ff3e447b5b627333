from __future__ import annotations

import subprocess
import sys

import pandas as pd

from fin_behavior.cli import main
from fin_behavior.settings import get_settings


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


def test_image_commands_without_an_engine_say_so_at_once(tmp_path):
    """No engine at DOCKER_HOST: a one-line reason (not a traceback, not a minute of debootstrap first)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "FIN_BEHAVIOR_VAR_DIR": str(tmp_path)}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no.sock"
    for command in (["image", "base"], ["image", "build", "--version", "1"]):
        done = subprocess.run(
            [sys.executable, "-m", "fin_behavior.cli", *command], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "debootstrap bookworm" not in done.stdout
        why = ("no Docker engine answers", "docker CLI is not installed", "apt-get install debootstrap")
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"fin-behavior image {command[1]}: ") and any(w in last for w in why), last


def test_stopping_a_name_that_was_never_submitted_says_so_and_gives_it_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSIONS_DIR", str(tmp_path / "submissions"))
    get_settings.cache_clear()
    assert main(["submissions", "stop", "never-submitted"]) == 1
    assert "no submitted model named 'never-submitted' has an endpoint" in capsys.readouterr().err
    assert not (tmp_path / "submissions" / "endpoints" / "never-submitted").exists()  # no port given to it


def test_importing_a_log_says_what_was_wrong_with_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIN_BEHAVIOR_MONITOR_LOG_DIR", str(tmp_path / "log"))
    get_settings.cache_clear()
    assert main(["endpoint", "import-log", str(tmp_path / "missing.log"), "--name", "green"]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "service.log").write_text("INFO serving model version 3\n")  # no prediction line in it
    assert main(["endpoint", "import-log", str(tmp_path / "service.log"), "--name", "green"]) == 1
    assert "0 request lines, 0 input lines and 0 label lines" in capsys.readouterr().out
