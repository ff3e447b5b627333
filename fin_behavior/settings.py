"""Every tunable of the platform, with defaults that work on a fresh clone.

Each field can be set with an environment variable `FIN_BEHAVIOR_<FIELD>` (e.g. `FIN_BEHAVIOR_RAW_DATA_PATH`),
and the per-run ones are also Dagster run config (their defaults in the launchpad come from here).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fin_behavior.serving.config import service_default


def _project_root() -> Path:
    """The checkout when installed editable (the normal case), else the working directory."""
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "pyproject.toml").exists() else Path.cwd()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIN_BEHAVIOR_", frozen=True)

    # Where state lives: data, artifacts, the MLflow store. Git-ignored.
    var_dir: Path = Field(default_factory=lambda: _project_root() / "var")
    # Input CSV. Empty means the embedded synthetic data at <var_dir>/data/transactions.csv, made on first use.
    raw_data_path: Path | None = None
    # Object storage for artifacts (fsspec URL, e.g. abfs://<container>/<path>), so steps share no disk;
    # empty = artifacts live only under <var_dir>/artifacts. See fin_behavior/ml/remote.py.
    artifact_store_url: str = ""
    default_rows: int = Field(5_000, ge=1)
    default_seed: int = 42

    # processed_dataset
    target_quantile: float = Field(0.95, gt=0, lt=1, description="HighAmount = amount >= this quantile")
    max_invalid_fraction: float = Field(0.01, ge=0, le=1, description="share of invalid rows that fails the run")
    min_rows: int = Field(1_000, ge=1, description="min_row_count check")
    min_positive_rate: float = Field(0.01, ge=0, le=1, description="positive_rate_in_band check, lower bound")
    max_positive_rate: float = Field(0.25, ge=0, le=1, description="positive_rate_in_band check, upper bound")
    max_single_feature_auc: float = Field(
        0.95, gt=0.5, le=1, description="no_target_leakage: a feature alone scoring this ROC-AUC leaks the target"
    )

    # trained_model: the search (as in the seeds; ranges are inclusive [low, high]) and its quality gates
    n_iter: int = Field(20, ge=1, description="search candidates")
    cv: int = Field(3, ge=2, description="cross-validation folds")
    search_max_rows: int = Field(20_000, ge=100, description="the search runs on a stratified sample of this size")
    test_size: float = Field(0.2, gt=0, lt=1, description="stratified hold-out share")
    random_state: int = Field(42, description="seed of the split, the search and the forest")
    n_estimators: tuple[int, int] = (50, 200)
    max_depth: tuple[int, int] = (3, 20)
    min_samples_split: tuple[int, int] = (2, 20)
    min_samples_leaf: tuple[int, int] = (1, 20)
    bootstrap: tuple[bool, ...] = (True, False)
    class_weight: tuple[str, ...] = ("balanced", "balanced_subsample", "none")
    min_roc_auc: float = Field(0.75, ge=0, le=1, description="roc_auc_gate: hold-out ROC-AUC at least this")
    min_accuracy: float = Field(0.8, ge=0, le=1, description="accuracy_gate: hold-out accuracy at least this")
    min_balanced_accuracy_margin: float = Field(
        0.05, ge=0, le=1, description="accuracy_gate: balanced accuracy above the majority baseline by this"
    )
    max_latency_ms: float = Field(100.0, gt=0, description="latency gates: single-row p95 at most this (ms)")

    # compatible_model: the serving environment the model must load in
    serving_environment: str = Field("local", description="the serving environment the model must load in")
    serving_environments_file: Path = Field(
        default_factory=lambda: Path(__file__).parent / "environments" / "serving_environments.toml"
    )
    parity_tolerance: float = Field(
        0.02, ge=0, le=1, description="quality_parity: largest serving vs trained hold-out ROC-AUC difference"
    )
    # How long the environment sensor trusts a resolution of the serving spec before asking the index again.
    resolution_max_age_seconds: float = Field(3_600, ge=0)
    # Built serving environments (hundreds of MB each). Empty = <var_dir>/envs.
    envs_dir: Path | None = None

    # MLflow tracking and registry. Empty URI = a SQLite store at <var_dir>/mlflow/mlflow.db.
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "financial-behavior"
    registered_model_name: str = Field("financial-behavior-model", description="MLflow registered model name")

    # live_deployment: where the model serves, and the gates a new version passes before it gets traffic
    deployment_target: str = "local"
    endpoint_host: str = "127.0.0.1"
    endpoint_port: int = Field(8080, ge=1, le=65535)
    # Endpoint state, keys, logs and downloaded releases. Empty = <var_dir>/endpoint.
    endpoint_dir: Path | None = None
    deploy_start_timeout_seconds: float = Field(60.0, gt=0)
    # How long a replaced color keeps answering its open keep-alive connections (with Connection: close).
    drain_seconds: float = Field(service_default("drain_seconds"), ge=0)
    keep_old_color: bool = Field(False, description="keep the replaced color running, idle, after a success")
    # One rollout at a time per endpoint: how long a second one waits for the first before it gives up.
    rollout_lock_timeout_seconds: float = Field(600.0, ge=0)
    # The local endpoint's supervisor restarts a live color that dies, at most max_restarts times in
    # restart_window_seconds; past that it reports a crash loop and stops answering.
    max_restarts: int = Field(5, ge=0)
    restart_window_seconds: float = Field(300.0, gt=0)
    serving_parity_tolerance: float = Field(1e-4, ge=0)
    gate_latency_requests: int = Field(50, ge=1)
    # The prediction log each color writes (var/endpoint/predictions/<color>.jsonl): the share of scored
    # requests logged with their inputs and outputs, and its bounds on disk (see serving/prediction_log.py).
    prediction_log_sample_rate: float = Field(service_default("log_sample_rate"), ge=0, le=1)
    prediction_log_max_bytes: int = Field(service_default("log_max_bytes"), ge=1024)
    prediction_log_keep_files: int = Field(service_default("log_keep_files"), ge=1)
    # Monitoring (serving_quality, `fin-behavior endpoint stats`): the rolling window, the bars of its checks,
    # and where alerts go (a Slack-compatible incoming webhook; empty = no alerts, the checks still fail).
    monitor_window_minutes: float = Field(15.0, gt=0, description="the rolling window monitoring looks at")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="error_rate: non-200 share of scoring requests")
    # PSI has a sampling noise of about (bins - 1) / rows: city has ~40 categories, so 1,000 rows keep it ~0.04.
    min_monitor_rows: int = Field(1_000, ge=1, description="traffic_volume: rows needed before drift is judged")
    psi_warn: float = Field(0.1, gt=0, description="input_drift warns from this PSI")
    psi_alert: float = Field(0.2, gt=0, description="input_drift and prediction_drift fail from this PSI")
    # Drift is measured on a uniform sample of the window's logged requests: 10,000 keep PSI's noise ~0.004.
    monitor_max_sampled: int = Field(10_000, ge=100, description="logged requests drift is measured on, at most")
    monitor_log_dir: Path | None = None  # empty = <endpoint dir>/predictions (the local endpoint's colors)
    alert_webhook_url: str = ""
    # Canary on targets that split traffic (azureml): shares (%) the new color holds, each watched for
    # traffic_step_seconds, before it takes all, e.g. FIN_BEHAVIOR_TRAFFIC_STEPS='[10, 50]'. Empty = at once.
    traffic_steps: tuple[int, ...] = ()
    traffic_step_seconds: float = Field(60.0, ge=0)

    # Submitted training scripts (fin_behavior/submissions): where they live, their limits, the HTTP API.
    submissions_dir: Path | None = None  # empty = <var_dir>/submissions
    submission_max_script_bytes: int = Field(256 * 1024, ge=1)
    submission_default_timeout_seconds: float = Field(600.0, gt=0)
    submission_max_timeout_seconds: float = Field(3_600.0, gt=0)
    # Kernel bounds on every process a script (and its model's verification) starts, together (a cgroup; tmpfs
    # and shared memory count as memory), and on its working directory (a tmpfs of this size and file count).
    submission_memory_limit_mb: int = Field(4_096, ge=64, description="memory of a script and all it starts")
    submission_max_processes: int = Field(256, ge=8, description="processes and threads a script may hold at once")
    submission_cpus: float = Field(1.0, gt=0, description="CPU time a script may use per second (1.0: one core)")
    submission_disk_limit_mb: int = Field(2_048, ge=16, description="a script's working directory, at most")
    submission_max_files: int = Field(20_000, ge=100, description="files in a script's working directory and model")
    submission_max_model_mb: int = Field(1_024, ge=1, description="the logged model taken from the script, at most")
    submission_max_log_bytes: int = Field(8 << 20, ge=4096, description="a script's output kept in its log")
    # ... and on each served color of a submitted model (its writable directory holds its prediction log)
    submission_serve_memory_limit_mb: int = Field(1_024, ge=64, description="memory of one served color")
    submission_serve_max_processes: int = Field(64, ge=8, description="processes and threads of one served color")
    submission_serve_cpus: float = Field(1.0, gt=0, description="CPU time one served color may use per second")
    submission_serve_disk_limit_mb: int = Field(256, ge=16, description="one served color's writable directory")
    submission_predict_timeout_seconds: float = Field(
        10.0, gt=0, description="a submitted model's predict past this answers 504 (its health keeps answering)"
    )
    # Where the kernel cannot bound a submission (no cgroup controllers, no root for the tmpfs), submissions are
    # refused unless this is true: then they run confined with rlimits only, and the status says so.
    submission_accept_weaker_bounds: bool = False
    # The API key the command line acts with: names belong to the key that created them (empty: the operator's
    # own identity, which owns the names first submitted from the command line).
    submission_key: str = ""
    submission_python: str = "3.11"  # the Python a script's environment is built with
    submission_workers: int = Field(2, ge=1)  # slots of the `submissions` pool: scripts run at once; the rest wait
    submission_max_pending: int = Field(20, ge=1)  # submissions the API holds, queued or running; past it a 429
    submission_max_pending_per_key: int = Field(5, ge=1)  # of those, from one API key (one team): none starves others
    submission_api_host: str = "127.0.0.1"
    submission_api_port: int = Field(8090, ge=1, le=65535)
    # each model name's stable URL takes the next port from here (below the kernel's ephemeral range, so no
    # outgoing connection or port-0 bind can take it between its choice and the first deployment)
    submission_first_port: int = Field(8100, ge=1, le=65535)

    # The serving image (fin_behavior/deploy/image.py): its base (made by `fin-behavior image base` from the
    # Debian archive at debian_mirror) and the registry images are pushed to (empty = kept in the local engine).
    image_base: str = "fin-behavior/python:3.11-bookworm"
    debian_mirror: str = "http://deb.debian.org/debian"
    image_registry: str = ""

    # deployment_target = "kubernetes": the cluster from the kube config (KUBECONFIG, kubernetes_context) or,
    # inside a pod, its service account; the endpoint's Service `kubernetes_app` and its two Deployments.
    kubernetes_context: str = ""  # empty = the kube config's current context
    kubernetes_namespace: str = "fin-behavior"
    kubernetes_app: str = "fin-behavior"
    kubernetes_replicas: int = Field(2, ge=1)
    kubernetes_service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    kubernetes_cpu_request: str = "250m"
    kubernetes_cpu_limit: str = "1"
    kubernetes_memory_request: str = "512Mi"
    kubernetes_memory_limit: str = "1Gi"
    kubernetes_ready_timeout_seconds: float = Field(300.0, gt=0)  # image pulls take longer than a process start

    # How a run executes its steps (fin_behavior/defs/executor.py). "celery" needs `make setup-distributed`, a
    # broker, Dagster storage every process reaches (Postgres) and `fin-behavior worker` processes; "k8s" a run
    # launched in a Kubernetes pod (K8sRunLauncher). See the README's "Outgrowing one machine". Steps that
    # touch the machine's own endpoint (deploy, its checks, monitoring, submissions) go to
    # celery_endpoint_queue, which only the serving host's worker consumes.
    executor: Literal["in_process", "multiprocess", "celery", "k8s"] = "in_process"
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    celery_backend_url: str = "redis://127.0.0.1:6379/1"
    celery_endpoint_queue: str = "dagster"  # "dagster": Celery's default queue, any worker
    # Redis gives a step a worker reserved but has not started to another worker after this long: longer than
    # any step (the broker's own default, 1 h, would run a step queued behind a longer one twice).
    celery_visibility_timeout_seconds: float = Field(43_200.0, gt=0)

    # deployment_target = "azureml": the workspace (else AZURE_SUBSCRIPTION_ID / AZURE_RESOURCE_GROUP /
    # AZURE_WORKSPACE_NAME, else an Azure ML config.json), the endpoint and its deployments
    azure_subscription_id: str = ""
    azure_resource_group: str = ""
    azure_workspace_name: str = ""
    azure_config_file: Path = Path("config.json")
    azure_endpoint_name: str = "fin-behavior"
    azure_instance_type: str = "Standard_F4s_v2"
    azure_instance_count: int = Field(1, ge=1)
    azure_request_timeout_ms: int = Field(90_000, ge=1_000)
    azure_max_concurrent_requests_per_instance: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name in ("n_estimators", "max_depth", "min_samples_split", "min_samples_leaf"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must be [low, high] with 1 <= low <= high, got [{low}, {high}]")
        if self.min_positive_rate > self.max_positive_rate:
            raise ValueError("min_positive_rate must not exceed max_positive_rate")
        steps = self.traffic_steps
        if any(not 0 < p < 100 for p in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"traffic_steps must be increasing shares between 1 and 99 (%), got {list(steps)}")
        return self

    def with_overrides(self, **overrides: object) -> Settings:
        """These settings with some replaced (e.g. by run config), validated like the rest."""
        return type(self)(**(self.model_dump() | overrides)) if overrides else self

    @property
    def images_dir(self) -> Path:
        """What `image build` made, one record per version (fin_behavior/deploy/image.py)."""
        return self.var_dir / "images"

    @property
    def submissions_root(self) -> Path:
        return self.submissions_dir or self.var_dir / "submissions"

    @property
    def artifacts_dir(self) -> Path:
        return self.var_dir / "artifacts"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.var_dir.resolve() / 'mlflow' / 'mlflow.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
