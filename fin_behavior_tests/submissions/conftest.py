from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import ENVS


@pytest.fixture(autouse=True)
def reachable_submissions(monkeypatch, isolated_settings):
    """Submissions where the sandbox user can reach them (pytest's own temporary directories are closed to
    others), and the scripts' environments in the shared test environments."""
    root = Path(tempfile.mkdtemp(prefix="fin-behavior-submissions-", dir="/tmp"))
    root.chmod(0o755)
    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSIONS_DIR", str(root))
    monkeypatch.setenv("FIN_BEHAVIOR_ENVS_DIR", str(ENVS))
    get_settings.cache_clear()
    yield root
    shutil.rmtree(root, ignore_errors=True)
