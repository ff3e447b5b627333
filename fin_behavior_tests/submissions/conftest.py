from __future__ import annotations

import os
import shutil

import pytest

from fin_behavior.deploy.local import free_port
from fin_behavior.settings import get_settings
from fin_behavior.submissions import pipeline
from fin_behavior_tests.helpers import ENVS


@pytest.fixture(autouse=True)
def shared_environments(monkeypatch, isolated_settings):
    """The scripts' environments in the shared test environments; the submissions in the test's own state
    directory, which pytest makes closed to other users: confined, the sandbox users need no way through it."""
    monkeypatch.setenv("FIN_BEHAVIOR_ENVS_DIR", str(ENVS))
    get_settings.cache_clear()
    return isolated_settings / "submissions"


@pytest.fixture(scope="module")
def platform_env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("submissions")  # closed to others (pytest makes it so): confined, none need a way in
    env = {
        "FIN_BEHAVIOR_VAR_DIR": str(tmp_path_factory.mktemp("var")),
        "FIN_BEHAVIOR_SUBMISSIONS_DIR": str(root),
        "FIN_BEHAVIOR_ENVS_DIR": str(ENVS),
        "FIN_BEHAVIOR_DRAIN_SECONDS": "2",
        "FIN_BEHAVIOR_SUBMISSION_API_PORT": str(free_port()),
        "FIN_BEHAVIOR_SUBMISSION_KEY": "team-a-s-own-key",  # the command line acts as team A
        "FIN_BEHAVIOR_SUBMISSION_PREDICT_TIMEOUT_SECONDS": "2",
        "DAGSTER_HOME": str(tmp_path_factory.mktemp("dagster_home")),
    }
    yield env
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        for name in os.listdir(root / "endpoints"):
            pipeline.endpoint(get_settings(), name)[0].stop_all()
    get_settings.cache_clear()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def on_one_platform(platform_env, monkeypatch):
    """The module's one platform in place of the test's own state directory (an end-to-end module's tests run in
    order on it: `pytestmark = pytest.mark.usefixtures("on_one_platform")`)."""
    for key, value in platform_env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
