# Local development and CI commands for the DICOMweb function app.
#   make run      install what is missing, start Azurite in the background and serve the app on http://localhost:7071/
#                 with WORKERS processes (default: the CPU count; the timers run in one of them; WORKERS=1: one),
#                 and the DIMSE gateway (AE DICOMWEB) on port DIMSE_PORT (11112)
#   make test     install what is missing, lint and type-check, and run the test suite (its fixtures start their own Azurite)
#   make lint     ruff over the code, the bench and the tests; mypy over dicom_core, function_app.py, local_host, dicomweb_cli, dimse_gateway
#   make viewer   `make run` plus the OHIF Viewer for it on http://localhost:3000/ (VIEWER_PORT)
#   make orthanc  install Debian's orthanc and orthanc-dicomweb where missing (as root; a real client in `make test`)
#   make dcmtk    install Debian's dcmtk where missing (as root; the DIMSE gateway tests use its tools)
#   make test-crash  the full crash matrix: every store and delete killed before each of its storage requests (182 cells),
#                    every step of the sequencer, cleanup and faulted-store cells, and the throttled scenario at full size
#   make test-viewer  the OHIF browser test in headless Debian Chromium (installed when missing and run as root)
#   make install  create .venv (requirements-dev.txt) and node_modules (package-lock.json) when missing or stale
#   make clean    remove .venv, node_modules and .azurite
#   make bench    the benchmark table on an Azurite and server of its own (BENCH_ARGS="--only qido --qido-studies 10000")

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:

PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 7071
DIMSE_PORT ?= 11112
APP ?= function_app:app
# Processes serving `make run` on the one port, as the Functions host runs several Python workers.
WORKERS ?= $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
PYTEST_ARGS ?=

VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# checkov (the infra/ static check of `make test`) has its own venv: its pins differ from the app's.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
AZURITE := node_modules/.bin/azurite
AZURITE_DIR := .azurite
AZURITE_PORTS := 10000 10001 10002
AZURITE_ARGS := --blobHost 127.0.0.1 --blobPort 10000 --queueHost 127.0.0.1 --queuePort 10001 \
    --tableHost 127.0.0.1 --tablePort 10002 --location $(AZURITE_DIR) --skipApiVersionCheck --loose --disableTelemetry

.PHONY: install run lint test clean bench viewer test-viewer test-crash orthanc dcmtk

install: $(VENV_STAMP) $(NODE_STAMP)

$(VENV_STAMP): $(wildcard requirements*.txt)
	[ -x $(VENV_PYTHON) ] || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(CHECKOV_STAMP): infra/requirements-checkov.txt | $(VENV_STAMP)
	[ -x $(CHECKOV_VENV)/bin/python ] || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --disable-pip-version-check -r infra/requirements-checkov.txt
	touch $@

run: install
	@for port in $(AZURITE_PORTS); do
		if (: </dev/tcp/127.0.0.1/$$port) 2>/dev/null; then
			echo "Port $$port is already in use (another Azurite?); stop that first." >&2; exit 1
		fi
	done
	mkdir -p $(AZURITE_DIR)
	$(AZURITE) $(AZURITE_ARGS) >$(AZURITE_DIR)/azurite.log 2>&1 &
	azurite_pid=$$!
	app_pid=
	gateway_pid=
	stop() {
		if [ -n "$$gateway_pid" ]; then kill "$$gateway_pid" 2>/dev/null || true; wait "$$gateway_pid" 2>/dev/null || true; fi
		if [ -n "$$app_pid" ]; then kill "$$app_pid" 2>/dev/null || true; wait "$$app_pid" 2>/dev/null || true; fi
		kill "$$azurite_pid" 2>/dev/null || true
		wait "$$azurite_pid" 2>/dev/null || true
		echo "Azurite stopped."
	}
	trap stop EXIT
	trap "exit 130" INT
	trap "exit 143" TERM
	for attempt in $$(seq 300); do
		ready=yes
		for port in $(AZURITE_PORTS); do (: </dev/tcp/127.0.0.1/$$port) 2>/dev/null || ready=no; done
		[ "$$ready" = no ] || break
		if ! kill -0 "$$azurite_pid" 2>/dev/null || [ "$$attempt" = 300 ]; then
			echo "Azurite did not start; $(AZURITE_DIR)/azurite.log says:" >&2; cat $(AZURITE_DIR)/azurite.log >&2; exit 1
		fi
		sleep 0.1
	done
	echo "Azurite: blob, queue, table on 127.0.0.1:10000-10002 (log: $(AZURITE_DIR)/azurite.log)"
	echo "DICOMweb server: http://localhost:$(PORT)/, $(WORKERS) worker process(es) (Ctrl-C stops it and Azurite)"
	$(VENV_PYTHON) -m local_host --host $(HOST) --port $(PORT) --app $(APP) --workers $(WORKERS) &
	app_pid=$$!
	$(VENV_PYTHON) -m dimse_gateway --port $(DIMSE_PORT) &
	gateway_pid=$$!
	wait "$$app_pid"

LINTED := dicom_core function_app.py local_host dicomweb_cli dimse_gateway viewer bench tests

# mypy reads its files and strictness from pyproject.toml.
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/mypy

# The browser test needs a system Chromium: `make test-viewer` runs it (.ci/run runs both).
test: lint $(CHECKOV_STAMP) orthanc dcmtk
	$(VENV_PYTHON) -m pytest tests --ignore=tests/viewer/test_ohif_viewer.py --ignore=tests/viewer/test_ohif_documents.py $(PYTEST_ARGS)

# Orthanc with its DICOMweb plugin is a real client in `make test` (tests/clients): Debian's packages, installed
# as root where missing (CI runs as root); elsewhere install them yourself.
ORTHANC := /usr/sbin/Orthanc
ORTHANC_DICOMWEB_PLUGIN := /usr/share/orthanc/plugins/libOrthancDicomWeb.so

orthanc:
	if [ ! -x $(ORTHANC) ] || [ ! -e $(ORTHANC_DICOMWEB_PLUGIN) ]; then
		if [ "$$(id -u)" != 0 ]; then
			echo "$(ORTHANC) or its DICOMweb plugin is missing: sudo apt-get install orthanc orthanc-dicomweb" >&2; exit 1
		fi
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y --no-install-recommends orthanc orthanc-dicomweb \
			|| { apt-get update && apt-get install -y --no-install-recommends orthanc orthanc-dicomweb; }
	fi

# DCMTK's storescu, findscu, movescu, getscu and storescp drive the DIMSE gateway tests: Debian's dcmtk, installed
# where missing (as root; elsewhere: sudo apt-get install dcmtk).
dcmtk:
	if ! command -v storescu >/dev/null; then
		if [ "$$(id -u)" != 0 ]; then echo "DCMTK is missing: sudo apt-get install dcmtk" >&2; exit 1; fi
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y --no-install-recommends dcmtk || { apt-get update && apt-get install -y --no-install-recommends dcmtk; }
	fi

clean:
	rm -rf $(VENV) node_modules $(AZURITE_DIR)

BENCH_ARGS ?=

# `make test` runs a reduced crash matrix (tests/test_crash_matrix.py); CRASH_MATRIX=full runs every cell.
test-crash: install
	CRASH_MATRIX=full $(VENV_PYTHON) -m pytest tests/test_crash_matrix.py tests/test_crash_faults.py tests/test_throttled_storage.py $(PYTEST_ARGS)

# Starts its own Azurite and server on free ports (bench/environment.py); results in bench/results/.
# The archive-scale QIDO run (10,000 studies / 100,000 instances, 30-60 min): $(VENV_PYTHON) -m bench.qido_archive
bench: install
	$(VENV_PYTHON) -m bench $(BENCH_ARGS)

VIEWER_PORT ?= 3000
CHROMIUM := /usr/bin/chromium

# The viewer runs beside `make run`, whose server is told to allow the viewer's origin (CORS).
viewer: install
	if (: </dev/tcp/127.0.0.1/$(VIEWER_PORT)) 2>/dev/null; then
		echo "Port $(VIEWER_PORT) is already in use; stop that first or set VIEWER_PORT." >&2; exit 1
	fi
	$(VENV_PYTHON) -m viewer --host $(HOST) --port $(VIEWER_PORT) --dicomweb-root http://localhost:$(PORT)/v2 &
	viewer_pid=$$!
	trap 'kill $$viewer_pid 2>/dev/null || true; wait $$viewer_pid 2>/dev/null || true; echo "Viewer stopped."' EXIT
	trap "exit 130" INT
	trap "exit 143" TERM
	echo "OHIF Viewer: http://localhost:$(VIEWER_PORT)/"
	DICOMWEB_CORS_ALLOWED_ORIGINS="http://localhost:$(VIEWER_PORT),http://127.0.0.1:$(VIEWER_PORT)" \
		$(MAKE) --no-print-directory run

# CI runs as root and installs Debian's chromium; elsewhere install it yourself (apt-get install chromium).
test-viewer: install
	if [ ! -x $(CHROMIUM) ]; then
		if [ "$$(id -u)" != 0 ]; then echo "$(CHROMIUM) is missing: sudo apt-get install chromium" >&2; exit 1; fi
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y --no-install-recommends chromium || { apt-get update && apt-get install -y --no-install-recommends chromium; }
	fi
	$(VENV_PYTHON) -m pytest tests/viewer/test_ohif_viewer.py tests/viewer/test_ohif_documents.py $(PYTEST_ARGS)
