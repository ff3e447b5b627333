"""The Celery app a `fin-behavior worker` runs: dagster-celery's step task on the broker of the settings.

Started with `fin-behavior worker`, which runs `celery -A fin_behavior.worker worker ...`. A step's task names
the run's Dagster instance (Postgres) and the job's code (`fin_behavior.definitions`), so a worker needs this
package installed with the distributed extra, the broker, the instance's database, the MLflow server and the
artifact store: no disk shared with the machine that started the run.
"""

from __future__ import annotations

import os
import sys

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from fin_behavior.defs.executor import celery_config
from fin_behavior.settings import get_settings

_settings = get_settings()
app = make_app(
    CeleryExecutor.for_cli(
        broker=_settings.celery_broker_url, backend=_settings.celery_backend_url, config_source=celery_config(_settings)
    ).app_args()
)
execute_plan = create_task(app)


def worker_argv(name: str, queues: list[str], concurrency: int, loglevel: str = "INFO") -> list[str]:
    """The celery command line of one worker. A prefetch multiplier of 1: a step runs for minutes, and a worker
    that reserved several would hold them while another worker idles."""
    celery = os.path.join(os.path.dirname(sys.executable), "celery")
    return [
        celery, "-A", __name__, "worker", "--hostname", f"{name}@%h", "--queues", ",".join(queues),
        "--concurrency", str(concurrency), "--prefetch-multiplier", "1", "--loglevel", loglevel,
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
