from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fin_behavior.settings import get_settings

# The real serving environment, bundle and service, shared by the serving, deploy and end-to-end tests; and the
# whole platform on one state directory per end-to-end module.
SHARED_FIXTURES = ("fin_behavior_tests.serving_fixtures", "fin_behavior_tests.e2e")


def pytest_configure(config: pytest.Config) -> None:
    """The shared fixtures, loaded where tests run: not in pytest-xdist's controller, which runs none and would
    spend ~4 s importing what they import (MLflow, Dagster, scikit-learn) before starting its workers."""
    distributing = config.getoption("dist", "no") != "no" and config.getoption("tx", None)
    if hasattr(config, "workerinput") or not distributing or config.getoption("collectonly"):
        for name in SHARED_FIXTURES:
            config.pluginmanager.import_plugin(name)


# Under parallel workers (`make test`: pytest-xdist, `-n 3 --dist loadscope`) a test module is one unit of work:
# its tests run in order on one worker and share the module's fixtures (an end-to-end module is one user's day).
# The longest units start first, so that no worker is left alone with one of them at the end; the rest follow
# in their usual order. Modules that confine code run beside each other: each worker gives out sandbox user ids
# and submitted models' ports from ranges of its own (`worker_ranges`).
LONGEST = (  # longest first, as measured in `make test` on a fresh clone (the rest each take under ~5 s)
    "fin_behavior_tests/submissions/test_sandbox.py",
    "fin_behavior_tests/submissions/test_end_to_end.py",
    "fin_behavior_tests/test_end_to_end.py",
    "fin_behavior_tests/test_challenger_end_to_end.py",
    "fin_behavior_tests/submissions/test_hostile_served.py",
    "fin_behavior_tests/environments/test_compatible.py",
    "fin_behavior_tests/defs/test_model.py",
    "fin_behavior_tests/test_lifecycle.py",
    "fin_behavior_tests/serving/test_explain.py",
    "fin_behavior_tests/defs/test_sensors.py",
    "fin_behavior_tests/test_approvals.py",
    "fin_behavior_tests/monitoring/test_feedback_service.py",
    "fin_behavior_tests/deploy/test_azure.py",
    "fin_behavior_tests/defs/test_compatible.py",
    "fin_behavior_tests/serving/test_submitted_explain.py",
    "fin_behavior_tests/test_outcomes_end_to_end.py",
    "fin_behavior_tests/deploy/test_supervision.py",
    "fin_behavior_tests/deploy/test_rollout.py",
    "fin_behavior_tests/deploy/test_image.py",
    "fin_behavior_tests/test_batch_end_to_end.py",
    "fin_behavior_tests/test_untrusted.py",
    "fin_behavior_tests/ml/test_fairness.py",
    "fin_behavior_tests/serving/test_app.py",
    "fin_behavior_tests/monitoring/test_serving_quality.py",
    "fin_behavior_tests/deploy/test_kubernetes.py",
    "fin_behavior_tests/monitoring/test_challenger.py",
    "fin_behavior_tests/test_cli.py",
    "fin_behavior_tests/serving/test_traffic.py",
    "fin_behavior_tests/test_webserver.py",
    "fin_behavior_tests/governance/test_submission_approval.py",
    "fin_behavior_tests/environments/test_spec_and_report.py",
)


def work_unit(nodeid: str) -> str:
    return nodeid.split("::")[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # a parallel worker: the longest units first (each module keeps its order)
        first = {unit: rank for rank, unit in enumerate(LONGEST)}
        items.sort(key=lambda item: first.get(work_unit(item.nodeid), len(first)))


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown when xdist is not loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadscope` (or xdist's default, which would split a module) with the work units above, handed out
    in collection order (longest first)."""
    if config.getvalue("dist") not in ("load", "loadscope"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False
    return ByWorkUnit(config, log)


@pytest.fixture(scope="session", autouse=True)
def worker_ranges(worker_id: str):
    """Each parallel worker (gw0, gw1, ...; "master" without xdist) gives out sandbox user ids and submitted
    models' stable ports from ranges of its own, so that two modules confining code at once never share a user id
    (whose processes one test's clean-up would end) nor race for a port. Inherited by the processes tests start."""
    n = 0 if worker_id == "master" else int(worker_id.removeprefix("gw"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIN_BEHAVIOR_SUBMISSION_FIRST_UID", str(1_500_000_000 + 1_000_000 * n))
        patch.setenv("FIN_BEHAVIOR_SUBMISSION_FIRST_PORT", str(8100 + 200 * n))
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def latency_bar_for_a_shared_machine():
    """The latency gates at 1 s unless a test sets its own bar. Their production bar (100 ms, single-row p95) is
    met here by a wide margin when the machine is idle (~5-20 ms), but the tests measure it beside the load clients
    of the end-to-end tests, concurrent submissions and a parallel worker on the same two cores, where a p95 over
    100 ms says how busy the neighbours are, not how fast the model is. The gates themselves are tested with bars
    of their own (ml/test_gates.py, defs/test_model.py, deploy/test_rollout.py, monitoring/test_serving_quality.py).
    Set for the whole session, before any module's fixtures, and inherited by the processes the tests start."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIN_BEHAVIOR_MAX_LATENCY_MS", "1000")
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def mlflow_schema_migrated_once(tmp_path_factory: pytest.TempPathFactory):
    """A new MLflow store (every test that tracks or registers makes one) is made by MLflow's own migrations, run
    once per session on an empty database; each new store afterwards gets a copy of its result (SQLite's backup)
    instead of running them again: a second or more of CPU each, an eighth of what the unit tests spent. The
    store MLflow then opens is the one its migrations make (same schema, same revision: MLflow verifies it);
    it adds its default experiment on top as always."""
    import sqlalchemy
    from mlflow.store.db import utils
    from mlflow.store.model_registry import sqlalchemy_store as registry_store

    migrate = utils._initialize_tables
    migrated = tmp_path_factory.mktemp("mlflow-schema") / "empty.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{migrated}")
    migrate(engine)
    engine.dispose()

    def initialize_tables(engine: sqlalchemy.Engine) -> None:
        if engine.dialect.name != "sqlite":
            return migrate(engine)
        connection = engine.raw_connection()
        try:
            with sqlite3.connect(migrated) as source:
                source.backup(connection.driver_connection)
        finally:
            connection.close()

    with pytest.MonkeyPatch.context() as patch:
        for module in (utils, registry_store):  # the registry's store imported the function by name
            patch.setattr(module, "_initialize_tables", initialize_tables)
        yield


@pytest.fixture(scope="session", autouse=True)
def one_tls_context_for_the_tests_http_clients():
    """Every httpx client loads the CA bundle into a TLS context of its own when it is made, even for plain-HTTP
    loopback URLs (~15 ms of CPU); the tests make thousands (a `httpx.get` is a client), so they share one."""
    from httpx._transports import default

    shared = default.create_ssl_context()
    made = default.create_ssl_context

    def create_ssl_context(verify=True, cert=None, trust_env=True):
        return shared if (verify, cert) == (True, None) else made(verify=verify, cert=cert, trust_env=trust_env)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(default, "create_ssl_context", create_ssl_context)
        yield


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own state directory; settings are re-read from the environment."""
    monkeypatch.setenv("FIN_BEHAVIOR_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("FIN_BEHAVIOR_RAW_DATA_PATH", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def nothing_written_to_the_working_directory():
    """MLflow puts artifacts in ./mlruns when an experiment has no location: no test may do that."""
    stray = Path.cwd() / "mlruns"
    existed = stray.exists()
    yield
    assert existed or not stray.exists(), f"a test wrote MLflow artifacts into {stray}"


@pytest.fixture(scope="session")
def banking_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 generated rows (seed 42), shared read-only by the tests."""
    from fin_behavior.data.generate import generate_csv

    return generate_csv(tmp_path_factory.mktemp("data") / "transactions.csv", rows=5_000, seed=42)
