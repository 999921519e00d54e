# The targets a newcomer uses. `make demo` and `make test` install missing
# Debian packages first (scripts/install-deps.sh), then build.
BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_TYPE ?= RelWithDebInfo
FUZZ_SECONDS ?= 30
PREFIX     ?= /usr/local
CMAKE_FLAGS ?=
MAKEFLAGS  += --no-print-directory

.PHONY: all deps build demo demo-live test test-all test-asan test-tsan test-browser fuzz bench install clean gpu-check-dry

all: build

deps:
	@./scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

demo: build
	@./scripts/demo.sh $(BUILD)

# A replay that runs for PACE seconds with ckalloc-stat --watch on it (q quits).
PACE ?= 60
demo-live: build
	@./scripts/demo-live.sh $(BUILD) $(PACE)

test: build
	@ctest --no-tests=error --test-dir $(BUILD) --output-on-failure -j$(JOBS) -LE browser

# ASan+UBSan and TSan over every test (the host backend runs streams on
# threads, so every test is threaded), then each fuzzer
# for FUZZ_SECONDS, then the HTML report in headless Chromium, then the GPU
# check without a GPU (gpu-check-dry).
test-all: test test-asan test-tsan fuzz test-browser gpu-check-dry

test-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCKALLOC_SANITIZE=address,undefined -DCKALLOC_BENCH=OFF >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@ASAN_OPTIONS=detect_leaks=1 ctest --no-tests=error --test-dir build-asan --output-on-failure -j$(JOBS) -LE "gpu|browser"

test-tsan: deps
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCKALLOC_SANITIZE=thread -DCKALLOC_BENCH=OFF >/dev/null
	@cmake --build build-tsan -j$(JOBS)
	@TSAN_OPTIONS=halt_on_error=1 ctest --no-tests=error --test-dir build-tsan --output-on-failure -j$(JOBS) -LE "gpu|install|browser|examples"

# scripts/gpu-check.sh run1 and run2 end to end without a GPU (every GPU
# step must skip cleanly), built from the carried .deps prefix only, with
# what the device tool would bring back checked (tests/gpu/gpu_check_dry.sh).
# Fetches .deps first when missing (needs apt and a network).
gpu-check-dry:
	@./tests/gpu/gpu_check_dry.sh build-gpu-dry

# Tests labelled "browser" need Chromium, a big package: installed here only.
test-browser: build
	@./scripts/install-deps.sh --browser
	@ctest --no-tests=error --test-dir $(BUILD) --output-on-failure -L browser

fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DCKALLOC_FUZZ=ON \
	    -DCKALLOC_SANITIZE=address,undefined -DCKALLOC_BENCH=OFF >/dev/null
	@cmake --build build-fuzz -j$(JOBS)
	@set -e; for f in build-fuzz/tests/fuzz/fuzz_*; do \
	    [ -x "$$f" ] || continue; n=$$(basename $$f); mkdir -p build-fuzz/corpus/$$n; \
	    echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/$$n tests/fuzz/seeds/$$n \
	        >build-fuzz/$$n.log 2>&1 || { tail -40 build-fuzz/$$n.log; echo "fuzz: $$n FAILED (log: build-fuzz/$$n.log)"; exit 1; }; \
	    tail -3 build-fuzz/$$n.log; \
	done

# Results go to $(BUILD)/bench-results.jsonl; SAVE=1 also updates the tracked
# bench/results/host-latest.jsonl.
bench: build
	@./scripts/bench.sh $(if $(filter 1 yes,$(SAVE)),--save) $(BUILD)

install: build
	@cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
