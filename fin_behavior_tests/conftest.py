from __future__ import annotations

from pathlib import Path

import pytest

from fin_behavior.data.generate import generate_csv
from fin_behavior.settings import get_settings

# The real serving environment, bundle and service, shared by the serving, deploy and end-to-end tests; and the
# whole platform on one state directory per end-to-end module.
pytest_plugins = ["fin_behavior_tests.serving_fixtures", "fin_behavior_tests.e2e"]


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
    return generate_csv(tmp_path_factory.mktemp("data") / "transactions.csv", rows=5_000, seed=42)
