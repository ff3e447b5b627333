"""How runs execute their steps, chosen by FIN_BEHAVIOR_EXECUTOR when the code location loads.

in_process (default): one interpreter, a small run takes seconds. multiprocess: a process per step.
celery: each step a task on a Redis (or other) broker, run by `fin-behavior worker` processes on any machine that
reaches the broker, Dagster's storage, the MLflow server and the artifact store (README: "Outgrowing one machine").
k8s: each step a Kubernetes Job, for runs that K8sRunLauncher started in a cluster (its settings are reused).
"""

from __future__ import annotations

import dagster as dg

from fin_behavior.settings import Settings, get_settings

CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG, without importing celery


class DistributedExtraMissing(RuntimeError):
    pass


def run_executor(settings: Settings | None = None) -> dg.ExecutorDefinition:
    settings = settings or get_settings()
    if settings.executor == "in_process":
        return dg.in_process_executor
    if settings.executor == "multiprocess":
        return dg.multiprocess_executor
    try:
        if settings.executor == "k8s":
            from dagster_k8s import k8s_job_executor

            return k8s_job_executor
        from dagster_celery import celery_executor
    except ImportError as exc:
        raise DistributedExtraMissing(
            f"FIN_BEHAVIOR_EXECUTOR={settings.executor} needs the distributed extra: run `make setup-distributed` "
            "(or `pip install -e .[distributed]`)"
        ) from exc
    config = {"broker": settings.celery_broker_url, "backend": settings.celery_backend_url}
    return celery_executor.configured(config | {"config_source": celery_config(settings)}, name="celery")


def celery_config(settings: Settings) -> dict:
    """Celery settings of the executor and the workers alike (fin_behavior/worker.py): dagster-celery's broker
    options, with the visibility timeout of the settings."""
    from dagster_celery.defaults import broker_transport_options

    timeout = settings.celery_visibility_timeout_seconds
    return {"broker_transport_options": broker_transport_options | {"visibility_timeout": timeout}}


def on_endpoint_host() -> dict[str, str]:
    """Tags for a step that works on this machine's own endpoint (its processes, state and prediction log):
    under Celery it goes to the serving host's queue. Nothing under the other executors."""
    settings = get_settings()
    return {CELERY_QUEUE_TAG: settings.celery_endpoint_queue} if settings.executor == "celery" else {}
