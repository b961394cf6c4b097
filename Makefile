# sagewire — every workflow starts here. `make run` and `make test` set up what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
BUF       := tools/buf/node_modules/.bin/buf
PROTODEPS := .build/protodeps
SITE       = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
GRPC_PROTO = $(shell $(PY) -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
PROTOS    := $(shell find protos -name '*.proto' | sort)
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): requirements/dev.txt pyproject.toml
	@py=$$(tools/find-python.sh) || exit 1; \
	  if [ ! -x $(PY) ]; then echo "creating $(VENV) with $$py"; "$$py" -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create the virtual environment with pinned dependencies

$(BUF): tools/buf/package.json tools/buf/package-lock.json
	npm ci --prefix tools/buf --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: tools
tools: $(STAMP) $(BUF) ## Install the pinned non-Python tools (buf)

$(PROTODEPS): $(STAMP)
	@rm -rf $@ && mkdir -p $@/google/api $@/google/rpc
	@cp $(SITE)/google/api/annotations.proto $(SITE)/google/api/http.proto $@/google/api/
	@cp $(SITE)/google/rpc/status.proto $(SITE)/google/rpc/error_details.proto $@/google/rpc/

# protoc from grpcio-tools: messages, gRPC stubs and typed stubs (mypy-protobuf), and one
# descriptor set with its imports and source info (proto comments) for the REST bridge's
# OpenAPI document and the gRPC-JSON transcoder of Envoy.
define GEN
	@rm -rf $(1) && mkdir -p $(1)/sagewire/v1
	$(PY) -m grpc_tools.protoc -I protos -I $(PROTODEPS) -I $(GRPC_PROTO) \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
	  --python_out=$(1) --grpc_python_out=$(1) --mypy_out=$(1) --mypy_grpc_out=$(1) \
	  --descriptor_set_out=$(1)/sagewire/v1/sagewire.binpb --include_imports --include_source_info \
	  $(PROTOS)
	@touch $(1)/sagewire/v1/py.typed
endef

.PHONY: protos
protos: $(STAMP) $(PROTODEPS) ## Regenerate generated/ from protos/
	$(call GEN,generated)

.PHONY: check-generated
check-generated: $(STAMP) $(PROTODEPS) ## Fail when generated/ is stale against protos/
	$(call GEN,.build/generated-check)
	@diff -r -x __pycache__ generated .build/generated-check >/dev/null || { \
	  echo "generated/ is stale: run 'make protos' and commit the result."; \
	  diff -r -x __pycache__ generated .build/generated-check | head -20; exit 1; }
	@echo "generated/ is current"

.PHONY: lint
lint: $(STAMP) $(BUF) $(PROTODEPS) ## ruff, mypy, buf lint, hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(BUF) lint
	$(VENV)/bin/hadolint Dockerfile

.PHONY: test
test: check-generated lint ## Everything CI runs: generated-code check, lint, types, all tests
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: unit
unit: $(STAMP) ## Only the fast unit tests
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

.PHONY: run
run: $(STAMP) ## Run sagewire on 127.0.0.1:50051 with the local SageMaker emulator and demo models
	$(VENV)/bin/sagewire local --config config/local.toml

.PHONY: demo-certs
demo-certs: $(STAMP) ## Throwaway CA, server and SPIFFE client certificates in demo-certs/ (docs/security.md)
	$(PY) tools/demo_certs.py demo-certs

.PHONY: bench
bench: $(STAMP) ## Benchmarks against the alternatives, then overload, observability A/B and workers (~13 min; QUICK=1: a 1-min smoke run)
	$(VENV)/bin/python -m bench.run $(if $(QUICK),--quick,)
	$(if $(QUICK),,$(VENV)/bin/python -m bench.overload)
	$(if $(QUICK),,$(VENV)/bin/python -m bench.ab --observability --loads unary --rounds 10 --seconds 3)
	$(VENV)/bin/python -m bench.workers $(if $(QUICK),--quick,--out docs/benchmarks.md)

.PHONY: fmt
fmt: $(STAMP) ## Format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: lock
lock: $(STAMP) ## Re-pin requirements/*.txt from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.12 --generate-hashes -q -o requirements/dev.txt
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.12 --generate-hashes -q -o requirements/runtime.txt

.PHONY: clean
clean: ## Remove the environment and build leftovers
	rm -rf $(VENV) .build tools/buf/node_modules .mypy_cache .pytest_cache .ruff_cache
