from __future__ import annotations

import pytest

from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import ENVS


@pytest.fixture(autouse=True)
def shared_environments(monkeypatch, isolated_settings):
    """The scripts' environments in the shared test environments; the submissions in the test's own state
    directory, which pytest makes closed to other users: confined, the sandbox users need no way through it."""
    monkeypatch.setenv("FIN_BEHAVIOR_ENVS_DIR", str(ENVS))
    get_settings.cache_clear()
    return isolated_settings / "submissions"
