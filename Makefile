# Setup is two commands: `make serve` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch that lies on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install serve test bench clean grpc-code

install: $(STAMP)

# The test install carries the ray extra: the Ray Serve and Ray Data tests run in `make test`.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,ray]"
	touch $(STAMP)

serve: install
	$(VENV)/bin/text-embeddings-router $(ARGS)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Ours vs Infinity (installed on first use into benchmarks/.venv-infinity) vs in-process
# sentence-transformers; see benchmarks/README.md. ARGS="--soak 600" for the 10-minute memory check.
bench: install
	$(PY) -m pip install -q -e ".[test,ray,bench]"
	$(PY) benchmarks/compare.py $(ARGS)

# Regenerate the committed gRPC modules in src/tei/grpc/ from tei.proto.
grpc-code:
	PYTHON=$(PYTHON) src/tei/grpc/regenerate.sh

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
