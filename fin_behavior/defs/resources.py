"""Where the platform keeps its files. One resource, so a run (or a deployment) can point all of it elsewhere."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from fin_behavior.data.generate import generate_csv
from fin_behavior.settings import get_settings
from fin_behavior.storage.remote import RemoteArtifacts, artifact_store
from fin_behavior.storage.store import VersionStore

if TYPE_CHECKING:
    from mlflow.entities import RunInfo


class StorageResource(dg.ConfigurableResource):
    """Paths of the raw input and of every artifact. Empty values fall back to the settings."""

    raw_data_path: str = Field(
        default="", description="Input CSV; empty = FIN_BEHAVIOR_RAW_DATA_PATH or the embedded synthetic data"
    )
    var_dir: str = Field(default="", description="State directory; empty = FIN_BEHAVIOR_VAR_DIR or ./var")
    artifact_store_url: str = Field(
        default="",
        description="Object storage for artifacts (fsspec URL, e.g. abfs://container/path); "
        "empty = FIN_BEHAVIOR_ARTIFACT_STORE_URL, or local artifacts only",
    )

    @property
    def root(self) -> Path:
        return Path(self.var_dir) if self.var_dir else get_settings().var_dir

    @property
    def raw_path(self) -> Path:
        if self.raw_data_path:
            return Path(self.raw_data_path)
        settings = get_settings()
        return settings.raw_data_path or self.root / "data" / "transactions.csv"

    def ensure_raw_data(self) -> Path:
        """The input path; the embedded default data is generated the first time it is needed."""
        path = self.raw_path
        using_default = not self.raw_data_path and get_settings().raw_data_path is None
        if using_default and not path.exists():
            settings = get_settings()
            generate_csv(path, rows=settings.default_rows, seed=settings.default_seed)
        return path

    @property
    def fingerprint_cache(self) -> Path:
        return self.root / "cache" / "fingerprints.json"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @cached_property
    def remote(self) -> RemoteArtifacts | None:
        return artifact_store(self.artifact_store_url or get_settings().artifact_store_url, self.artifacts)

    def versions(self, stage: str) -> VersionStore:
        """The versions of a stage's artifact (processed_dataset, trained_model, compatible_model), with their
        evidence, mirrored to the artifact store when one is configured."""
        return VersionStore(self.artifacts / stage, self.remote)

    def publish_file(self, path: Path) -> None:
        """Upload an artifact file just written (nothing to do without an artifact store)."""
        if self.remote is not None:
            self.remote.push_file(path)

    def fetch_file(self, path: Path) -> Path:
        """The artifact file as the store holds it (the local copy without an artifact store)."""
        if self.remote is not None and not self.remote.pull_file(path):
            raise FileNotFoundError(f"{self.remote.remote(path)} is not in the artifact store {self.remote.url}")
        return path

    def quarantine_path(self, run_id: str) -> Path:
        return self.artifacts / "processed_dataset" / "quarantine" / f"{run_id}.csv"

    @property
    def environments(self) -> Path:
        return get_settings().envs_dir or self.root / "envs"

    @property
    def resolution_cache(self) -> Path:
        return self.root / "cache" / "serving_resolution.json"

    @property
    def scratch(self) -> Path:
        return self.root / "tmp"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow" / "artifacts"


class MlflowTracking(dg.ConfigurableResource):
    """MLflow through dagster-mlflow, with the run's life in the asset's hands.

    dagster-mlflow's own resource starts its MLflow run when Dagster initialises resources (at the start
    of an in-process run, even if training never happens), re-uses whatever run is already active in the
    process (so the next Dagster run writes into a run left open), and its end-of-run hook only closes the
    run when the job's last node is an op (not when it is an asset check). Here the asset opens the run with
    dagster-mlflow's `MlFlow` (experiment, tagging with the Dagster run id) and always closes it itself.
    """

    tracking_uri: str = Field(
        default="",
        description="MLflow tracking URI; empty = FIN_BEHAVIOR_MLFLOW_TRACKING_URI "
        "or a SQLite store in the var directory",
    )
    experiment_name: str = Field(default="", description="empty = FIN_BEHAVIOR_MLFLOW_EXPERIMENT")

    @property
    def uri(self) -> str:
        uri = self.tracking_uri or get_settings().tracking_uri
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return uri

    @property
    def experiment(self) -> str:
        return self.experiment_name or get_settings().mlflow_experiment

    @contextmanager
    def start_run(self, context: dg.AssetExecutionContext, artifact_dir: Path) -> Iterator["RunInfo"]:
        """An MLflow run for this step, tagged with the Dagster run id; FINISHED or FAILED when the block ends."""
        import mlflow  # lazy: ~5 s of imports that loading the code location must not pay
        from dagster_mlflow.resources import MlFlow

        from fin_behavior.ml.tracking import ensure_experiment

        while (stale := mlflow.active_run()) is not None:  # ended in the store it belongs to, before switching
            context.log.warning(f"ending MLflow run {stale.info.run_id} left active by earlier work in this process")
            mlflow.end_run(status="KILLED")
        mlflow.set_tracking_uri(self.uri)
        ensure_experiment(self.experiment, artifact_dir if self.uri.startswith("sqlite:") else None)
        init = SimpleNamespace(
            log=context.log,
            dagster_run=context.run,
            run_id=context.run.run_id,
            resource_config={"mlflow_tracking_uri": self.uri, "experiment_name": self.experiment},
        )
        tracker = MlFlow(init)
        try:
            # MlFlow gets mlflow's functions (active_run among them) from its metaclass, which mypy cannot see
            yield tracker.active_run().info  # type: ignore[attr-defined]
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")
