"""The whole platform on one state directory, driven as a user drives it: the real jobs and sensors of the
Definitions, MLflow, uv-built serving environments and endpoint processes. Shared by the end-to-end modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from fin_behavior.definitions import defs
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.deploy.deployer import make_target, releases_dir
from fin_behavior.deploy.local import LocalTarget, free_port
from fin_behavior.ml import registry
from fin_behavior.records import read_json
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import ENVS, FAST_TRAINING, dagster_instance

FAST = {"ops": {"trained_model": {"config": FAST_TRAINING}}}


@dataclass
class Platform:
    var: Path
    instance: dg.DagsterInstance
    env: dict[str, str]
    cursors: dict[str, str | None]

    @property
    def target(self) -> LocalTarget:
        return make_target(get_settings())

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=get_settings().tracking_uri)

    @property
    def name(self) -> str:
        return get_settings().registered_model_name

    def run(self, job: str, run_config: dict | None = None, tags: dict | None = None):
        return defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, run_config=run_config or {}, tags=tags, raise_on_error=False
        )

    def tick(self, sensor):
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(sensor.name),
            resources={"storage": StorageResource(), "mlflow": MlflowTracking()},
        )
        result = sensor(context)
        self.cursors[sensor.name] = context.cursor
        return result

    def move_serving_pins(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        """The serving spec moves to scikit-learn 1.7.2: the run the environment sensor requests, run."""
        from fin_behavior.defs.sensors import environment_drift_sensor
        from fin_behavior.environments.spec import DEFAULT_SPEC_FILE

        spec = tmp_path / "serving_environments.toml"
        spec.write_text(DEFAULT_SPEC_FILE.read_text().replace('"scikit-learn==1.8.0"', '"scikit-learn==1.7.2"'))
        assert spec.read_text() != DEFAULT_SPEC_FILE.read_text()
        monkeypatch.setenv("FIN_BEHAVIOR_SERVING_ENVIRONMENTS_FILE", str(spec))
        get_settings.cache_clear()
        request = self.tick(environment_drift_sensor)
        assert isinstance(request, dg.RunRequest) and request.job_name == "rebuild_compatible", request
        result = self.run(request.job_name, tags=request.tags)
        assert result.success, failure_message(result)
        return result

    def alias(self, alias: str) -> str | None:
        return registry.alias_version(self.client, self.name, alias)

    def record(self) -> dict:
        live = self.target.live()
        return read_json(releases_dir(get_settings()) / live.version / "expected.json")["records"][0]


@contextmanager
def running_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    var = tmp_path_factory.mktemp("var")
    env = {
        "FIN_BEHAVIOR_VAR_DIR": str(var),
        "FIN_BEHAVIOR_ENVS_DIR": str(ENVS),
        "FIN_BEHAVIOR_ENDPOINT_PORT": str(free_port()),
        "FIN_BEHAVIOR_DRAIN_SECONDS": "2",
    }
    with pytest.MonkeyPatch.context() as patch, dagster_instance() as instance:
        for key, value in env.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        state = Platform(var, instance, env, {})
        try:
            yield state
        finally:
            state.target.stop_all()


@pytest.fixture(scope="module")
def platform_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One platform per test module: its tests run in order on one state directory, like a user's day."""
    with running_platform(tmp_path_factory) as state:
        yield state


@pytest.fixture
def platform(platform_state: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """The module's platform with its settings in place for one test (the test's monkeypatch resets them)."""
    for key, value in platform_state.env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return platform_state


def failure_message(result) -> str:
    return next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.message


def log_messages(platform: Platform, result) -> list[str]:
    """What the run's log says (context.log lines included), as the UI shows it."""
    return [entry.user_message for entry in platform.instance.all_logs(result.run_id)]
