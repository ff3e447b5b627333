# Everything runs from the project's own virtual environment, built from requirements.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/dagster_home
MLFLOW_STORE ?= sqlite:///$(CURDIR)/var/mlflow/mlflow.db

.PHONY: setup demo test dev mlflow-ui lint lock clean bench-tools endpoint-status

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$$(sed -n 's/^uv==//p' requirements.lock)"
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

demo: setup  ## run the main job end to end on the embedded data
	$(BIN)/dagster job execute -m fin_behavior.definitions -j full_pipeline

test: setup  ## lint, then run the test suite
	$(BIN)/ruff check fin_behavior fin_behavior_tests benchmarks
	$(BIN)/pytest -q

dev: setup  ## open the Dagster UI on http://127.0.0.1:3000
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

mlflow-ui: setup  ## MLflow UI on the local tracking store: http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_STORE)" --host 127.0.0.1 --port 5000

bench-tools:  ## the serving benchmark's load generator (autocannon, pinned in benchmarks/package-lock.json)
	npm ci --prefix benchmarks --no-audit --no-fund

endpoint-status: setup  ## where the model serves, which version, which processes
	$(BIN)/fin-behavior endpoint status

lint: setup
	$(BIN)/ruff check fin_behavior fin_behavior_tests benchmarks

lock:  ## re-resolve requirements.lock after changing pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:  ## remove all local state (data, artifacts, run history)
	rm -rf var dagster_home/history dagster_home/storage dagster_home/schedules dagster_home/logs
