"""Every tunable of the platform, with defaults that work on a fresh clone.

Each field can be set with an environment variable `FIN_BEHAVIOR_<FIELD>` (e.g. `FIN_BEHAVIOR_RAW_DATA_PATH`),
and the per-run ones are also Dagster run config (their defaults in the launchpad come from here).
Each field's `description` is its meaning in docs/reference/settings.md, which `make docs` writes from this
model: a field without one, or a page not regenerated after a change, fails the tests.
"""

from __future__ import annotations

import os
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
    var_dir: Path = Field(
        default_factory=lambda: _project_root() / "var", description="all local state: data, artifacts, caches"
    )
    raw_data_path: Path | None = Field(
        None, description="input CSV (also resource config storage.raw_data_path); empty = the embedded synthetic "
        "data at <var_dir>/data/transactions.csv, made on first use",
    )  # fmt: skip
    artifact_store_url: str = Field(
        "", description="object storage for artifacts, an fsspec URL (abfs://... for Azure Blob, file:///shared/...; "
        "s3:// needs s3fs installed); empty = artifacts live only under <var_dir>/artifacts (storage/remote.py)",
    )  # fmt: skip
    default_rows: int = Field(5_000, ge=1, description="rows of the embedded data made on first use")
    default_seed: int = Field(42, description="seed of the embedded data made on first use")

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
    n_estimators: tuple[int, int] = Field((50, 200), description="search range of the forest's trees, inclusive")
    max_depth: tuple[int, int] = Field((3, 20), description="search range of the trees' depth, inclusive")
    min_samples_split: tuple[int, int] = Field((2, 20), description="search range of min_samples_split, inclusive")
    min_samples_leaf: tuple[int, int] = Field((1, 20), description="search range of min_samples_leaf, inclusive")
    bootstrap: tuple[bool, ...] = Field((True, False), description="search choices of bootstrap")
    class_weight: tuple[str, ...] = Field(
        ("balanced", "balanced_subsample", "none"), description="search choices of class_weight"
    )
    min_roc_auc: float = Field(0.75, ge=0, le=1, description="roc_auc_gate: hold-out ROC-AUC at least this")
    min_accuracy: float = Field(0.8, ge=0, le=1, description="accuracy_gate: hold-out accuracy at least this")
    min_balanced_accuracy_margin: float = Field(
        0.05, ge=0, le=1, description="accuracy_gate: balanced accuracy above the majority baseline by this"
    )
    max_latency_ms: float = Field(100.0, gt=0, description="latency gates: single-row p95 at most this (ms)")

    # trained_model: protected attributes, assessed on every version (fin_behavior/ml/fairness.py)
    protected_attributes: tuple[str, ...] = Field(
        ("gender", "age"), description="protected attributes: the model's selection is compared between their "
        "groups on every version (age in the bands of age_bands)",
    )  # fmt: skip
    protected_features: tuple[str, ...] = Field(
        ("age",), description="protected attributes the model may use as input features; the others are not model "
        "inputs (the dataset keeps them for fairness and the service still accepts them)",
    )  # fmt: skip
    age_bands: tuple[int, ...] = Field(
        (25, 45, 65), description="lower edges of the age bands after the first: (25, 45, 65) = <25, 25-44, 45-64, 65+"
    )
    fairness_judged_attributes: tuple[str, ...] = Field(
        ("gender",), description="protected attributes the blocking fairness gates judge; the others are "
        "reported with the same figures and not judged (see docs/governance.md for why age is not, by default)",
    )  # fmt: skip
    min_selection_rate_ratio: float = Field(
        0.8, ge=0, le=1, description="selection_rate_ratio gate: smallest over largest group selection rate at least "
        "this (the four-fifths rule)",
    )  # fmt: skip
    max_equalized_odds_difference: float = Field(
        0.1, ge=0, le=1, description="equalized_odds_difference gate: largest gap in true- or false-positive rate "
        "between two groups at most this",
    )  # fmt: skip
    fairness_min_group_size: int = Field(
        100, ge=1, description="hold-out rows a group needs to be judged; smaller groups are reported, not judged"
    )
    fairness_bootstrap_samples: int = Field(
        1_000, ge=100, description="bootstrap resamples behind each fairness figure's 95% interval"
    )

    # compatible_model: the serving environment the model must load in
    serving_environment: str = Field("local", description="the serving environment the model must load in")
    serving_environments_file: Path = Field(
        default_factory=lambda: Path(__file__).parent / "environments" / "serving_environments.toml",
        description="where serving environments are declared",
    )
    parity_tolerance: float = Field(
        0.02, ge=0, le=1, description="quality_parity: largest serving vs trained hold-out ROC-AUC difference"
    )
    resolution_max_age_seconds: float = Field(
        3_600, ge=0, description="how long a resolution of an unchanged serving spec is reused (the observation, "
        "the build, the checks and the environment sensor share it) before the index is asked again",
    )  # fmt: skip
    envs_dir: Path | None = Field(
        None, description="where built serving environments live (hundreds of MB each); empty = <var_dir>/envs"
    )
    bytecode_cache_dir: Path | None = Field(
        None, description="the environments' bytecode, compiled once per source file for every environment and "
        "checkout of this user (safe to delete); empty = $XDG_CACHE_HOME/fin-behavior/bytecode or "
        "~/.cache/fin-behavior/bytecode",
    )  # fmt: skip

    mlflow_tracking_uri: str = Field(
        "", description="MLflow tracking and registry store (also resource config mlflow.tracking_uri); "
        "empty = a SQLite store at <var_dir>/mlflow/mlflow.db",
    )  # fmt: skip
    mlflow_experiment: str = Field("financial-behavior", description="MLflow experiment name")
    registered_model_name: str = Field("financial-behavior-model", description="MLflow registered model name")
    review_interval_days: int = Field(
        365, ge=1, description="model inventory: a registered model's next review is this long after its last "
        "validation (`fin-behavior models`)",
    )  # fmt: skip
    model_card_path: Path = Field(
        default_factory=lambda: _project_root() / "model_card.yaml",
        description="the owner-edited model card: intended use, limitations, owner (read into each risk report)",
    )

    # live_deployment: where the model serves, and the gates a new version passes before it gets traffic
    deployment_target: str = Field("local", description="where live_deployment serves: local, azureml or kubernetes")
    endpoint_host: str = Field("127.0.0.1", description="the stable URL's host")
    endpoint_port: int = Field(8080, ge=1, le=65535, description="the stable URL's port")
    endpoint_dir: Path | None = Field(
        None, description="endpoint state, keys, logs, prediction log and downloaded releases; "
        "empty = <var_dir>/endpoint",
    )  # fmt: skip
    deploy_start_timeout_seconds: float = Field(
        60.0, gt=0, description="the ready gate: how long a new color may take to answer /ready"
    )
    drain_seconds: float = Field(
        service_default("drain_seconds"), ge=0,
        description="how long a replaced color keeps answering its open keep-alive connections (Connection: close)",
    )  # fmt: skip
    keep_old_color: bool = Field(False, description="keep the replaced color running, idle, after a success")
    rollout_lock_timeout_seconds: float = Field(
        600.0, ge=0, description="one rollout at a time per endpoint: how long a second one waits, then gives up"
    )
    # Approvals and the history (fin_behavior/governance): four eyes before a version takes traffic.
    approval_required: bool = Field(
        False, description="a registered version deploys (by any job, sensor, command, target or submission) only "
        "once approved by an actor other than its author: `fin-behavior approve`",
    )  # fmt: skip
    actor: str = Field(
        "", description="who the commands and runs act as, in approvals and the history; empty = the OS user"
    )
    audit_lock_timeout_seconds: float = Field(
        60.0, gt=0, description="how long a writer waits for the history's lock (<var_dir>/audit), then gives up"
    )
    # The local endpoint's supervisor restarts a live color that dies, at most max_restarts times in
    # restart_window_seconds; past that it reports a crash loop and stops answering.
    max_restarts: int = Field(5, ge=0, description="restarts of a dead live color allowed in the window")
    restart_window_seconds: float = Field(300.0, gt=0, description="the window max_restarts counts in")
    serving_parity_tolerance: float = Field(1e-4, ge=0, description="the parity gate: served vs verified probability")
    gate_latency_requests: int = Field(
        50, ge=1, description="requests in the latency gate and the latency_p95 check (bar: max_latency_ms)"
    )
    # The prediction log each color writes (var/endpoint/predictions/<color>.jsonl) and its bounds on disk
    # (see serving/prediction_log.py).
    prediction_log_sample_rate: float = Field(
        service_default("log_sample_rate"), ge=0, le=1,
        description="share of scored requests logged with their inputs and answers",
    )  # fmt: skip
    prediction_log_max_bytes: int = Field(
        service_default("log_max_bytes"), ge=1024, description="a color's prediction log is rotated at this size"
    )
    prediction_log_keep_files: int = Field(
        service_default("log_keep_files"), ge=1, description="rotated prediction log files kept"
    )
    # Explanations (GET /explain/{request_id}, POST /explain; serving/explain.py): computed in worker processes of
    # their own, bounded, so they never slow /score.
    explain_workers: int = Field(
        service_default("explain_workers"), ge=0,
        description="processes per color computing explanations, started on the first one (0 turns /explain off)",
    )  # fmt: skip
    explain_max_pending: int = Field(
        service_default("explain_max_pending"), ge=1,
        description="explanations a color accepts at once (running or waiting), at most half of them (at least one) "
        "from one key; past it /explain answers 429",
    )  # fmt: skip
    # Monitoring (serving_quality, `fin-behavior endpoint stats`): the rolling window, the bars of its checks,
    # and where alerts go.
    monitor_window_minutes: float = Field(15.0, gt=0, description="the rolling window monitoring looks at")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="error_rate: non-200 share of scoring requests")
    # PSI has a sampling noise of about (bins - 1) / rows: city has ~40 categories, so 1,000 rows keep it ~0.04.
    min_monitor_rows: int = Field(1_000, ge=1, description="traffic_volume: rows needed before drift is judged")
    psi_warn: float = Field(0.1, gt=0, description="input_drift warns from this PSI")
    psi_alert: float = Field(0.2, gt=0, description="input_drift and prediction_drift fail from this PSI")
    # Drift is measured on a uniform sample of the window's logged requests: 10,000 keep PSI's noise ~0.004.
    monitor_max_sampled: int = Field(10_000, ge=100, description="logged requests drift is measured on, at most")
    monitor_log_dir: Path | None = Field(
        None, description="where the monitor reads the prediction log (e.g. lines collected from Azure ML); "
        "empty = <endpoint dir>/predictions, on Kubernetes <endpoint dir>/kubernetes/predictions",
    )  # fmt: skip
    alert_webhook_url: str = Field(
        "", description="where a failed monitoring check is posted (a Slack-compatible incoming webhook); "
        "empty = no alerts, the checks still fail",
    )  # fmt: skip
    # Outcomes (realized_performance, the ground_truth folder, POST /feedback): labels joined to logged decisions
    # by request id, judged over a window of prediction time that ends label_delay_hours ago.
    ground_truth_dir: Path | None = Field(
        None, description="folder of label files (CSV or Parquet: request_id, row, label, observed_at) the "
        "ground_truth source watches; empty = <var_dir>/ground_truth",
    )  # fmt: skip
    outcome_window_hours: float = Field(
        168.0, gt=0, description="realized_performance: the window of prediction time it judges"
    )
    label_delay_hours: float = Field(
        0.0, ge=0, description="how long labels take to come back: decisions younger than this are estimated "
        "(label-free), not judged",
    )  # fmt: skip
    min_labelled_rows: int = Field(
        200, ge=1, description="label_coverage: labelled decisions (with both classes) needed for a verdict"
    )
    min_label_coverage: float = Field(
        0.1, ge=0, le=1, description="label_coverage: labelled share of the window's logged decisions needed"
    )
    realized_tolerance: float = Field(
        0.05, ge=0, le=1, description="realized_roc_auc and realized_recall fail below the version's validation "
        "figure minus this",
    )  # fmt: skip
    # Champion and challenger traffic (`fin-behavior endpoint shadow|split`, deploy/challengers.py).
    challenger_timeout_seconds: float = Field(
        1.0, gt=0, le=60, description="how long the live color waits for a split's challenger to answer a request; "
        "past it the champion answers (a shadow's copies are never waited for)",
    )  # fmt: skip
    # Champion and challenger (challenger_comparison): the paired verdict over the window of prediction time.
    challenger_window_hours: float = Field(
        168.0, gt=0, description="challenger_comparison: the window of prediction time it compares the two versions "
        "over",
    )  # fmt: skip
    challenger_alpha: float = Field(
        0.05, gt=0, lt=1, description="challenger_comparison: the verdict's significance level once there are the "
        "rows needed (DeLong's paired test, two-sided; its intervals are at 1 - alpha)",
    )  # fmt: skip
    challenger_early_alpha: float = Field(
        0.001, ge=0, lt=1, description="challenger_comparison: the p-value a look before the rows needed must go "
        "below to give a verdict (Haybittle-Peto boundary; 0 = no verdict before the rows needed)",
    )  # fmt: skip
    challenger_min_gain: float = Field(
        0.05, gt=0, lt=1, description="challenger_comparison: the smallest ROC-AUC gain worth detecting; sets the "
        "labelled rows asked for",
    )  # fmt: skip
    challenger_power: float = Field(
        0.9, gt=0.5, lt=1, description="challenger_comparison: the chance of seeing a gain of challenger_min_gain "
        "at the rows asked for",
    )  # fmt: skip
    challenger_min_class_rows: int = Field(
        50, ge=1, description="challenger_comparison: labelled paired decisions of each class (positive and "
        "negative) needed before a verdict",
    )  # fmt: skip
    challenger_bootstrap_samples: int = Field(
        1000, ge=100, le=100_000, description="challenger_comparison: paired bootstrap resamples"
    )
    # Canary on targets that split traffic (azureml), e.g. FIN_BEHAVIOR_TRAFFIC_STEPS='[10, 50]'.
    traffic_steps: tuple[int, ...] = Field(
        (), description="canary shares (%) the new color holds, each watched for traffic_step_seconds, before it "
        "takes all; empty = at once",
    )  # fmt: skip
    traffic_step_seconds: float = Field(60.0, ge=0, description="how long each canary share is watched")

    # Submitted training scripts (fin_behavior/submissions): where they live, their limits, the HTTP API.
    submissions_dir: Path | None = Field(
        None, description="submitted scripts, their records, working directories, bundles and endpoints; "
        "empty = <var_dir>/submissions",
    )  # fmt: skip
    submission_max_script_bytes: int = Field(256 * 1024, ge=1, description="largest accepted script")
    submission_default_timeout_seconds: float = Field(
        600.0, gt=0, description="a script's timeout when none is asked for"
    )
    submission_max_timeout_seconds: float = Field(3_600.0, gt=0, description="the longest timeout a script may ask")
    # Kernel bounds on every process a script (and its model's verification) starts, together (a cgroup; tmpfs
    # and shared memory count as memory), and on its working directory (a tmpfs of this size and file count).
    submission_memory_limit_mb: int = Field(
        4_096, ge=64, description="memory (MiB) of a script and everything it starts, tmpfs and shared memory included"
    )
    submission_max_processes: int = Field(256, ge=8, description="processes and threads a script may hold at once")
    submission_cpus: float = Field(1.0, gt=0, description="CPU time a script may use per second (1.0: one core)")
    submission_disk_limit_mb: int = Field(2_048, ge=16, description="a script's working directory (MiB), at most")
    submission_max_files: int = Field(20_000, ge=100, description="files in a script's working directory and model")
    submission_max_model_mb: int = Field(1_024, ge=1, description="the logged model taken from the script (MiB)")
    submission_max_log_bytes: int = Field(8 << 20, ge=4096, description="a script's output kept in its log")
    # ... and on each served color of a submitted model (its writable directory holds its prediction log)
    submission_serve_memory_limit_mb: int = Field(1_024, ge=64, description="memory (MiB) of one served color")
    submission_serve_max_processes: int = Field(64, ge=8, description="processes and threads of one served color")
    submission_serve_cpus: float = Field(1.0, gt=0, description="CPU time one served color may use per second")
    submission_serve_disk_limit_mb: int = Field(256, ge=16, description="one served color's writable directory (MiB)")
    submission_predict_timeout_seconds: float = Field(
        10.0, gt=0, description="a submitted model's predict past this answers 504 (its health keeps answering)"
    )
    submission_accept_weaker_bounds: bool = Field(
        False,
        description="where the kernel cannot bound submissions (no cgroup controllers, not root), run them with "
        "rlimits only instead of refusing them",
    )
    submission_key: str = Field(
        "",
        description="the API key the command line submits with (names belong to the key that made them); "
        "empty = the operator's own identity",
    )
    submission_python: str = Field("3.11", description="the Python a script's environment is built with")
    submission_workers: int = Field(
        2, ge=1, description="slots of the submissions pool: scripts run at once; the rest wait"
    )
    submission_max_pending: int = Field(
        20, ge=1, description="submissions the API holds, queued or running; past it POST /mlops/deploy is a 429"
    )
    submission_max_pending_per_key: int = Field(
        5, ge=1, description="of those, from one API key (one team); past it that key's POST is a 429"
    )
    submission_api_host: str = Field("127.0.0.1", description="the /mlops HTTP API's host")
    submission_api_port: int = Field(8090, ge=1, le=65535, description="the /mlops HTTP API's port")
    # Below the kernel's ephemeral range, so no outgoing connection or port-0 bind can take it between its
    # choice and the first deployment.
    submission_first_port: int = Field(
        8100, ge=1, le=65535, description="each submitted model name's stable URL takes the next port from here, "
        "in the order names first arrive (kept in <submissions dir>/endpoints/<name>/port)",
    )  # fmt: skip

    submission_first_uid: int = Field(
        1_500_000_000, ge=100_000, le=4_000_000_000, description="when the platform runs as root, each model name "
        "runs as two user ids of its own from here (its script and verification, its served colors), in the order "
        "names first arrive: far above the ranges that systems (< 65,536) and container engines' subordinate ids "
        "(100,000 + 65,536 n) give out, so no account is ever one of them (setpriv needs no account)",
    )  # fmt: skip

    # Batch scoring (fin_behavior/batch.py, the batch_scores asset, `fin-behavior score`).
    batch_inbox_dir: Path | None = Field(
        None, description="where files to score are dropped (CSV or Parquet, the Kaggle layout): each becomes a "
        "partition of batch_scores; empty = <var_dir>/batch/inbox",
    )  # fmt: skip
    batch_output_dir: Path | None = Field(
        None, description="batch_scores writes each file's scores, quarantine and summary in <this>/<file name>; "
        "empty = <var_dir>/batch/scores",
    )  # fmt: skip
    batch_chunk_rows: int = Field(
        100_000, ge=1_000, description="rows read, validated and scored at a time: bounds a batch's memory"
    )
    batch_model_alias: str = Field(
        "production", description="the registered version batch scoring uses: an alias or a version number"
    )

    # The serving image (fin_behavior/deploy/image.py).
    image_base: str = Field(
        "fin-behavior/python:3.11-bookworm", description="the serving image's base (made by fin-behavior image base)"
    )
    debian_mirror: str = Field("http://deb.debian.org/debian", description="where image base fetches Debian from")
    image_registry: str = Field(
        "", description="where images are pushed (image build --push, build_image, the Kubernetes target); "
        "empty = images stay in the local engine",
    )  # fmt: skip

    # deployment_target = "kubernetes": the cluster from the kube config (KUBECONFIG, kubernetes_context) or,
    # inside a pod, its service account; the endpoint's Service `kubernetes_app` and its two Deployments.
    kubernetes_context: str = Field(
        "", description="the cluster's context in the kube config (KUBECONFIG); empty = its current context, "
        "in a pod its service account",
    )  # fmt: skip
    kubernetes_namespace: str = Field("fin-behavior", description="where the endpoint lives")
    kubernetes_app: str = Field(
        "fin-behavior", description="the endpoint Service's name (Deployments <app>-blue, <app>-green, Secret "
        "<app>-keys)",
    )  # fmt: skip
    kubernetes_replicas: int = Field(2, ge=1, description="pods per color")
    kubernetes_service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="the endpoint Service's type"
    )
    kubernetes_cpu_request: str = Field("250m", description="each pod's CPU request")
    kubernetes_cpu_limit: str = Field("1", description="each pod's CPU limit")
    kubernetes_memory_request: str = Field("512Mi", description="each pod's memory request")
    kubernetes_memory_limit: str = Field("1Gi", description="each pod's memory limit")
    kubernetes_ready_timeout_seconds: float = Field(
        300.0, gt=0, description="how long a new color may take to be ready (image pulls included)"
    )

    # How a run executes its steps (fin_behavior/defs/executor.py). "celery" needs `make setup-distributed`, a
    # broker, Dagster storage every process reaches (Postgres) and `fin-behavior worker` processes; "k8s" a run
    # launched in a Kubernetes pod (K8sRunLauncher). See docs/scaling-out.md.
    executor: Literal["in_process", "multiprocess", "celery", "k8s"] = Field(
        "in_process", description="how runs execute their steps (celery and k8s need make setup-distributed)"
    )
    celery_broker_url: str = Field("redis://127.0.0.1:6379/0", description="the Celery broker (executor celery)")
    celery_backend_url: str = Field("redis://127.0.0.1:6379/1", description="the Celery result backend")
    # Steps that touch the machine's own endpoint (deploy, its checks, monitoring, submissions) go to this queue.
    celery_endpoint_queue: str = Field(
        "dagster", description="the queue of the steps that work on the local endpoint: give it the serving host's "
        "worker only (dagster: Celery's default queue, any worker)",
    )  # fmt: skip
    # Longer than any step: the broker's own default, 1 h, would run a step queued behind a longer one twice.
    celery_visibility_timeout_seconds: float = Field(
        43_200.0, gt=0, description="how long Redis waits before giving a reserved, unstarted step to another worker"
    )

    # deployment_target = "azureml": the workspace (else AZURE_SUBSCRIPTION_ID / AZURE_RESOURCE_GROUP /
    # AZURE_WORKSPACE_NAME, else an Azure ML config.json), the endpoint and its deployments
    azure_subscription_id: str = Field("", description="the workspace's subscription; empty = AZURE_SUBSCRIPTION_ID")
    azure_resource_group: str = Field("", description="the workspace's resource group; empty = AZURE_RESOURCE_GROUP")
    azure_workspace_name: str = Field(
        "", description="the Azure ML workspace; empty = AZURE_WORKSPACE_NAME, else azure_config_file"
    )
    azure_config_file: Path = Field(
        Path("config.json"), description="an Azure ML workspace config.json (downloaded from the portal)"
    )
    azure_endpoint_name: str = Field("fin-behavior", description="the managed online endpoint (unique in its region)")
    azure_instance_type: str = Field("Standard_F4s_v2", description="deployment instance type")
    azure_instance_count: int = Field(1, ge=1, description="deployment instances")
    azure_request_timeout_ms: int = Field(90_000, ge=1_000, description="request timeout of a deployment")
    azure_max_concurrent_requests_per_instance: int = Field(
        4, ge=1, description="concurrent requests per instance (WORKER_COUNT follows it)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name in ("n_estimators", "max_depth", "min_samples_split", "min_samples_leaf"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must be [low, high] with 1 <= low <= high, got [{low}, {high}]")
        for name in ("protected_features", "fairness_judged_attributes"):
            if unknown := set(getattr(self, name)) - set(self.protected_attributes):
                raise ValueError(f"{name} {sorted(unknown)} are not in protected_attributes")
        if list(self.age_bands) != sorted(set(self.age_bands)):
            raise ValueError(f"age_bands must be increasing ages, got {list(self.age_bands)}")
        if self.min_positive_rate > self.max_positive_rate:
            raise ValueError("min_positive_rate must not exceed max_positive_rate")
        if self.challenger_early_alpha >= self.challenger_alpha:
            raise ValueError("challenger_early_alpha (a look before the rows needed) must be below challenger_alpha")
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
    def batch_inbox(self) -> Path:
        return self.batch_inbox_dir or self.var_dir / "batch" / "inbox"

    @property
    def batch_scores_root(self) -> Path:
        return self.batch_output_dir or self.var_dir / "batch" / "scores"

    @property
    def bytecode_cache(self) -> Path:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        if not cache_home.is_absolute():  # as the XDG specification says: ignored
            cache_home = Path.home() / ".cache"
        return self.bytecode_cache_dir or cache_home / "fin-behavior" / "bytecode"

    @property
    def artifacts_dir(self) -> Path:
        return self.var_dir / "artifacts"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.var_dir.resolve() / 'mlflow' / 'mlflow.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
