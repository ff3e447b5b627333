# Everything runs from the project's own virtual environment, built from requirements.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/dagster_home
# mkdocs-material's notice about its successor, printed on every build otherwise
export NO_MKDOCS_2_WARNING := 1
MLFLOW_STORE ?= sqlite:///$(CURDIR)/var/mlflow/mlflow.db
# Parallel test workers (pytest-xdist); 0 runs the suite in this one process. Three on this 2-core machine: the
# tests wait for the processes they start much of the time (warm clone: 2 workers 460 s, 3: 376 s, 4: 415 s).
TEST_WORKERS ?= 3

.PHONY: setup demo test dev mlflow-ui lint docs lock clean bench-tools endpoint-status docker-engine image test-image setup-distributed test-distributed

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml Makefile
	@# submitted code runs in bubblewrap's sandbox (Debian's bubblewrap); as root, installed here when missing
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null; } \
	  || echo "bubblewrap is not installed: submissions will be refused (apt-get install bubblewrap)"
	@# without a pip of its own (ensurepip is most of a venv's 3 s, and uv pip sync removes it): uv installed by
	@# the interpreter's pip, else by one ensurepip gives the environment
	test -x $(BIN)/python || $(PYTHON) -m venv --without-pip $(VENV)
	UV="uv==$$(sed -n 's/^uv==//p' requirements.lock)"; $(PYTHON) -m pip --python $(BIN)/python install --quiet "$$UV" 2>/dev/null \
	  || { $(BIN)/python -m ensurepip --default-pip >/dev/null && $(BIN)/python -m pip install --quiet "$$UV"; }
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@# .pyc now (else, with PYTHONDONTWRITEBYTECODE set, every start compiles every module), from the user's bytecode cache
	$(BIN)/python -m fin_behavior.environments.bytecode $(VENV)
	@# and of the project's own package, imported by every process it starts (workers, services, scripts' runners,
	@# serving tasks): 0.02-0.08 CPU-s each without, measured; checked by time, so an edited module is never shadowed
	$(BIN)/python -m compileall -q fin_behavior
	touch $@

demo: setup  ## run the main job end to end on the embedded data
	$(BIN)/dagster job execute -m fin_behavior.definitions -j full_pipeline

test: setup  ## lint, then run the test suite on $(TEST_WORKERS) parallel workers (one test module per worker at a time)
	$(BIN)/ruff check fin_behavior fin_behavior_tests benchmarks
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope

dev: setup  ## open the Dagster UI on http://127.0.0.1:3000
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

mlflow-ui: setup  ## MLflow UI on the local tracking store: http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_STORE)" --host 127.0.0.1 --port 5000

bench-tools:  ## the serving benchmark's load generator (autocannon, pinned in benchmarks/package-lock.json)
	npm ci --prefix benchmarks --no-audit --no-fund

endpoint-status: setup  ## where the model serves, which version, which processes
	$(BIN)/fin-behavior endpoint status

docker-engine:  ## a Docker engine for the image targets: started here (root, vfs storage) when none answers
	@docker info >/dev/null 2>&1 || { \
	  command -v dockerd >/dev/null || { echo "no Docker engine answers and there is no dockerd: apt-get install docker.io"; exit 1; }; \
	  mkdir -p var; (dockerd --storage-driver vfs --iptables=false --bridge=none >var/dockerd.log 2>&1 &); \
	  for i in $$(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  docker info >/dev/null 2>&1 || { echo "dockerd did not start: see var/dockerd.log"; exit 1; }; }

image: setup docker-engine  ## the serving image of the candidate version (after make demo), gated, recorded
	$(BIN)/fin-behavior image base
	$(BIN)/fin-behavior image build --version candidate

test-image: setup docker-engine  ## the image tests with a real engine (skipped by make test when none answers)
	$(BIN)/fin-behavior image base
	FIN_BEHAVIOR_TEST_DOCKER=1 $(BIN)/pytest -q fin_behavior_tests/deploy/test_image.py

setup-distributed: setup  ## the distributed extra (dagster-celery, dagster-postgres, dagster-k8s, redis, psycopg2) on top
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements-distributed.lock

test-distributed: setup-distributed  ## full_pipeline and the sensor's retrain on Celery workers (needs redis-server, postgresql)
	FIN_BEHAVIOR_TEST_DISTRIBUTED=1 $(BIN)/pytest -q fin_behavior_tests/distributed

lint: setup  ## ruff (rules and formatting), mypy, the layer contracts (setup.cfg [importlinter]), the docs site built strictly
	$(BIN)/ruff check fin_behavior fin_behavior_tests benchmarks
	$(BIN)/ruff format --check --quiet fin_behavior fin_behavior_tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/mkdocs build --strict --quiet

docs: setup  ## docs/reference/ written from the code, then the site built strictly into site/
	$(BIN)/python -W ignore -m fin_behavior.docs_reference
	$(BIN)/mkdocs build --strict --quiet

lock:  ## re-resolve requirements.lock after changing pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra distributed --python-version 3.11 \
	  -c requirements.lock -o requirements-distributed.lock

clean:  ## remove all local state (data, artifacts, run history)
	rm -rf var dagster_home/history dagster_home/storage dagster_home/schedules dagster_home/logs
