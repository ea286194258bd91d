# Short aliases only; the logic lives in the wheelfactory package.
RELEASE ?= 0.33.0-t5
# `make images` builds every release locked in the wheelhouse; e.g. IMAGES="-r tests/releases/ci.toml"
IMAGES ?= --all
PYTHON ?= python3

.PHONY: install plan build lock venv images ci-images test test-fast lint

install:
	$(PYTHON) -m pip install -e '.[test]'

plan:
	wheelfactory plan --release $(RELEASE)

build:
	wheelfactory build --release $(RELEASE)

lock:
	wheelfactory lock --release $(RELEASE)

images:
	wheelfactory images $(IMAGES)

# The CI release and its -t5 sibling, end to end on any machine here: build, lock, images.
ci-images:
	wheelfactory build --release tests/releases/ci.toml vllm
	wheelfactory lock --release tests/releases/ci.toml
	wheelfactory lock --release tests/releases/ci-t5.toml
	wheelfactory images -r tests/releases/ci.toml -r tests/releases/ci-t5.toml

test:
	$(PYTHON) -m pytest -v --durations=25

test-fast:
	$(PYTHON) -m pytest -v -m "not slow"

lint:
	ruff check wheelfactory assemble recipes tests bench tools

# FlashInfer JIT with the wheel toolkit on a GPU machine: prepare the carry directory here (the
# factory's flashinfer-python, the toolkit wheels, apache-tvm-ffi) and print the commands to run
# there (bench/GPU-PROOF.md, tests/gpu/README.md).
.PHONY: gpu-proof-flashinfer
gpu-proof-flashinfer:
	bash bench/gpu-proof.sh prepare $(GPU_CARRY)

# vLLM with kernels built by the factory on a GPU machine without network: prepare the carry
# directory here (DEPS= the CMake dependency trees); then there `bash bench/gpu-vllm.sh setup|build|test`.
.PHONY: gpu-proof-vllm
gpu-proof-vllm:
	bash bench/gpu-vllm.sh prepare $(GPU_CARRY)
