# SwiftAI — `make test` is the test command CI runs; `make demo` shows the main job.
SWIFT_TEST_FLAGS ?= -c release -Xswiftc -enable-testing
export OMP_NUM_THREADS ?= 2
FUZZ_RUNS ?= 1000000

.PHONY: setup build lint test demo bench fuzz

setup:
	@./scripts/setup.sh

build: setup
	swift build -c release

# Formatting and style (.swift-format: 120-character lines); generated protobuf code is left as protoc wrote it.
lint:
	@swift format lint --strict $(shell find Sources Tests -name '*.swift' ! -name '*.pb.swift') Package.swift

# Tests run optimised: numeric loops in debug builds are 10-100x slower. Then `swiftai serve` end to end (real
# requests, a stalled client, concurrent clients, headless Chromium uploading through the page) on a bundle of a
# few training batches.
# The suite runs twice: natively, then with oneDNN capped at AVX2 and bf16 on its reference path (docs/decisions.md,
# "Every CPU, every code path"): on an AVX-512/VNNI/bf16 host the second pass runs the AVX2, 7-bit and GEMM-convolution
# paths, on an AVX2 host the bf16 plumbing.
# Last, a two-host MPI training job on this machine (scripts/mpi_two_hosts.sh: two network namespaces, TCP over a veth
# pair; needs root, as CI runs) that must end where one process does (parameters within 1e-5).
test: setup lint
	swift build $(SWIFT_TEST_FLAGS) --build-tests
	swift test $(SWIFT_TEST_FLAGS) --skip-build
	DNNL_MAX_CPU_ISA=AVX2 SWIFTAI_LOW_PRECISION=reference swift test $(SWIFT_TEST_FLAGS) --skip-build
	.build/release/swiftai train --arch cnn --epochs 1 --limit-batches 5 --out .build/serve-check > /dev/null
	python3 scripts/serve_check.py .build/release/swiftai .build/serve-check/model.safetensors Tests/SwiftAIVisionTests/Fixtures/imageio/gray8.png
	.build/release/swiftai-mpi-check train --opt adamw > .build/one-host.json
	scripts/mpi_two_hosts.sh .build/release/swiftai-mpi-check train --opt adamw --expect .build/one-host.json \
		| grep -o '"max_diff_vs_expected":[^,]*'

# A short training run: one epoch of 12 batches of the lesson's ResNet, table, weights, plots and JSON in out/demo.
demo: build
	.build/release/swiftai train --model resnet --epochs 1 --limit-batches 12 --out out/demo

bench: build
	.build/release/swiftai bench gemm
	.build/release/swiftai bench conv
	.build/release/swiftai bench step --model resnet --bs 1024

# libFuzzer on every file reader (docs/fuzzing.md): the Fuzz/ package built with ASan, then each fuzzer FUZZ_RUNS
# executions on a copy of its committed corpus, one at a time, niced. Not part of `make test`.
fuzz: setup
	FUZZ_RUNS=$(FUZZ_RUNS) scripts/fuzz.sh
