# w4a8moe — GNU Makefile.
#
#   make run      install missing Debian packages, build, run `w4a8moe bench` on the default model
#   make test     build and run every test this machine supports (unit tests also under
#                 AddressSanitizer + UndefinedBehaviorSanitizer), and the CLI tests
#   make          the static and shared library and the CLI (build/)
#   make install PREFIX=/usr/local
#   make test-gpu the GPU test suite (needs a CUDA device; see docs/PERFORMANCE.md)
#   make fuzz     libFuzzer targets (clang), FUZZ_SECONDS per target
#
# CUDA sources (src/cuda/*.cu) are compiled whenever nvcc is found. (Expert parallelism over
# NCCL, src/nccl/, is planned and not built yet.)

CC       ?= cc
BUILD    ?= build
PREFIX   ?= /usr/local
# versions live in include/w4a8moe.h (W4A8MOE_VERSION_STRING, W4A8MOE_SOVERSION)
VERSION  := $(shell sed -n 's/^\#define W4A8MOE_VERSION_STRING "\(.*\)"/\1/p' include/w4a8moe.h)
SOVERSION := $(shell sed -n 's/^\#define W4A8MOE_SOVERSION \([0-9]*\)/\1/p' include/w4a8moe.h)

# Debian packages the build needs (libjansson-dev ships libjansson.a, linked statically so the
# binaries run on machines without libjansson, such as the GPU machine).
DEB_PACKAGES := libjansson-dev pkg-config

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
# -fvisibility=hidden: only what include/w4a8moe.h declares is exported (it marks itself
# visible), so internal functions never become ABI; src/exports.map is the export list.
CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -Iinclude -pthread -fPIC -fvisibility=hidden $(WARN)
OPT      ?= -O2 -g
CFLAGS   ?=
ALL_CFLAGS := $(CFLAGS_COMMON) $(OPT) $(CFLAGS)
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
JANSSON_LIB := -l:libjansson.a
LDLIBS   := $(JANSSON_LIB) -lm -ldl -pthread

LIB_SRCS := $(wildcard src/common/*.c src/loader/*.c src/core/*.c src/cpu/*.c src/nccl/*.c)
TOOL_SRCS := $(wildcard tools/*.c)
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_NAMES := $(patsubst tests/%.c,%,$(TEST_SRCS))
CUDA_SRCS := $(wildcard src/cuda/*.cu)

# ---- CUDA (optional) ----------------------------------------------------------------------
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
ifneq ($(strip $(NVCC)),)
ifneq ($(strip $(CUDA_SRCS)),)
WITH_CUDA := 1
endif
endif
ifdef WITH_CUDA
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCHS ?= -gencode=arch=compute_89,code=sm_89 -gencode=arch=compute_90a,code=sm_90a
NVCC_FLAGS := -std=c++17 -O3 -lineinfo -Xptxas=--warn-on-spills -Xcompiler=-fPIC,-Wall,-fvisibility=hidden \
              -Iinclude $(CUDA_ARCHS) -DW4A8MOE_WITH_CUDA=1
ALL_CFLAGS += -DW4A8MOE_WITH_CUDA=1 -I$(CUDA_HOME)/include
CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/targets/x86_64-linux/lib))
LDLIBS   += -L$(CUDA_LIBDIR) -lcudart_static -lrt -lstdc++
# the CLI's FP8 GEMM-rate probe loads libcublasLt.so.13 with dlopen (no static cuBLASLt here, and
# the library itself never depends on cuBLAS)
TOOL_LDLIBS :=
CUDA_OBJS := $(patsubst %.cu,$(BUILD)/obj/%.o,$(CUDA_SRCS))
# GPU tests (tests/gpu): C drivers linked with their .cu reference kernels; built by `make test`
# (compile check, CI has nvcc but no GPU) and run by `make test-gpu`
GPU_TEST_NAMES := $(patsubst tests/gpu/%.c,%,$(wildcard tests/gpu/test_gpu_*.c))
GPU_TESTS := $(addprefix $(BUILD)/tests-gpu/,$(GPU_TEST_NAMES))
GPU_TEST_OBJS := $(patsubst %.cu,$(BUILD)/obj/%.o,$(wildcard tests/gpu/*.cu))
# host-only tests of the CUDA kernels' data layouts (tests/test_*.cu): nvcc builds them, they
# run on any machine with `make test` (no GPU needed)
HOST_CUDA_TESTS := $(patsubst tests/%.cu,$(BUILD)/tests/%,$(wildcard tests/test_*.cu))
endif

LIB_OBJS  := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRCS)) $(CUDA_OBJS)
SAN_OBJS  := $(patsubst %.c,$(BUILD)/san/%.o,$(LIB_SRCS))
TOOL_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(TOOL_SRCS))
STATIC_LIB := $(BUILD)/libw4a8moe.a
SHARED_LIB := $(BUILD)/libw4a8moe.so
SAN_LIB    := $(BUILD)/libw4a8moe-san.a
CLI        := $(BUILD)/w4a8moe
TESTS      := $(addprefix $(BUILD)/tests/,$(TEST_NAMES))
SAN_TESTS  := $(addprefix $(BUILD)/tests-san/,$(TEST_NAMES))

.PHONY: all deps run test test-unit test-san test-cli test-python test-gpu install clean fuzz check-deps
# developer tool for bench/whole_model.sh: a synthetic checkpoint of a real model's size
SYNTH_CKPT := $(BUILD)/w4a8moe-synth-ckpt
all: deps $(STATIC_LIB) $(SHARED_LIB) $(CLI) $(SYNTH_CKPT)

# ---- dependencies --------------------------------------------------------------------------
# Installs missing Debian packages when run as root; otherwise prints the command and stops.
deps: $(BUILD)/.deps-ok
# $(call apt_install,PACKAGES): installs the missing ones when run as root; otherwise prints the
# exact apt-get line and fails. Marks the target done.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || exit 1; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "run: sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
	@mkdir -p $(BUILD) && touch $@
endef

$(BUILD)/.deps-ok:
	$(call apt_install,$(DEB_PACKAGES))

# ---- library -------------------------------------------------------------------------------
$(BUILD)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/san/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(SAN_FLAGS) -Werror -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.cu | deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -MMD -MP -c $< -o $@

$(STATIC_LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(SAN_LIB): $(SAN_OBJS)
	@rm -f $@
	ar rcs $@ $^

# Debian's libjansson.a is not position-independent: the shared library links libjansson.so.
# A copy of the system's libjansson.so.4 goes beside it and the library looks in its own folder
# first ($ORIGIN), so build/ can be carried to a machine without libjansson (the GPU machine)
# and used there by the Python binding. `make install` relies on the system's copy instead.
# (Linking it in fails: ld refuses load.o's PC32 reference to libc's `stdin` in a shared object.)
# Exports: src/exports.map; --exclude-libs keeps the static CUDA runtime's symbols local too.
JANSSON_SO := $(shell $(CC) -print-file-name=libjansson.so.4)
$(SHARED_LIB): $(LIB_OBJS) src/exports.map
	$(CC) -shared -Wl,-soname,libw4a8moe.so.$(SOVERSION) -Wl,-rpath,'$$ORIGIN' \
	  -Wl,--version-script=src/exports.map -Wl,--exclude-libs,ALL -o $@ $(LIB_OBJS) \
	  $(patsubst $(JANSSON_LIB),-ljansson,$(LDLIBS))
	@if [ -f "$(JANSSON_SO)" ]; then cp -L "$(JANSSON_SO)" $(BUILD)/libjansson.so.4; fi

$(CLI): $(TOOL_OBJS) $(STATIC_LIB)
	$(CC) -o $@ $(TOOL_OBJS) $(STATIC_LIB) $(TOOL_LDLIBS) $(LDLIBS) -lstdc++

$(SYNTH_CKPT): bench/synth_ckpt.c $(STATIC_LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(STATIC_LIB) $(LDLIBS) -lstdc++

# ---- tests ---------------------------------------------------------------------------------
$(BUILD)/tests/%: tests/%.c $(STATIC_LIB) tests/test_util.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Werror -Isrc -o $@ $< $(STATIC_LIB) $(LDLIBS) -lstdc++

$(BUILD)/tests-san/%: tests/%.c $(SAN_LIB) tests/test_util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(SAN_FLAGS) -Werror -Isrc -o $@ $< $(SAN_LIB) $(filter-out -L% -lcudart_static -lrt,$(LDLIBS))

ifdef WITH_CUDA
$(BUILD)/tests-gpu/%: tests/gpu/%.c $(GPU_TEST_OBJS) $(STATIC_LIB) tests/test_util.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Werror -Isrc -Itests -o $@ $< $(GPU_TEST_OBJS) $(STATIC_LIB) $(LDLIBS) -lstdc++
test-unit: $(GPU_TESTS)
$(BUILD)/tests/%: tests/%.cu tests/test_util.h | deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -MMD -MP -Isrc -Itests -o $@ $<
endif

test: test-unit test-san test-cli test-python
	@echo "make test: all suites passed"

test-unit: $(TESTS) $(HOST_CUDA_TESTS) all
	@tests/run_suite.sh $(TESTS) $(HOST_CUDA_TESTS)

test-san: $(SAN_TESTS)
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 W4A8MOE_TEST_QUICK=1 tests/run_suite.sh $(SAN_TESTS)

test-cli: $(CLI)
	@tests/cli/run.sh $(CLI)

# ---- Python --------------------------------------------------------------------------------
# The interpreter the binding's tests use, recorded in $(BUILD)/python: $(PYTHON) when given;
# else the first of python3 and Debian's /usr/bin/python3 that has numpy, venv, pip, setuptools
# and wheel (the last two build the package offline, python/tests/test_package.py); else
# Debian's python3 after installing PY_DEB_PACKAGES like DEB_PACKAGES (root: apt-get; others:
# the exact command). python3 on PATH may be a pyenv or conda one that Debian's packages do not
# reach, hence the second candidate.
PY_DEB_PACKAGES := python3 python3-numpy python3-venv python3-pip python3-setuptools python3-wheel
PY_PROBE := import numpy, venv, ensurepip, setuptools, wheel
$(BUILD)/python: | deps
	@py="$(PYTHON)"; \
	if [ -z "$$py" ]; then for c in python3 /usr/bin/python3; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c '$(PY_PROBE)' >/dev/null 2>&1; then \
	    py=$$(command -v $$c); break; fi; done; fi; \
	if [ -z "$$py" ]; then $(MAKE) --no-print-directory $(BUILD)/.python-deps-ok && py=/usr/bin/python3; fi; \
	$$py -c '$(PY_PROBE)' || { echo "$$py lacks numpy, venv, pip, setuptools or wheel"; exit 1; }; \
	echo "python for the tests: $$py"; echo "$$py" > $@

$(BUILD)/.python-deps-ok:
	$(call apt_install,$(PY_DEB_PACKAGES))

# The binding's CPU suite (python/tests): every test runs, none may skip (--strict); it ends
# with "N passed, N failed". The torch suite (python/tests/with_torch) runs here only where
# torch is installed, without its CUDA modules where torch sees no GPU; `make test-gpu` always
# runs all of it.
PY_TEST_ENV = PYTHONDONTWRITEBYTECODE=1 W4A8MOE_LIB=$(abspath $(SHARED_LIB)) CC="$(CC)" \
	W4A8MOE_BUILD=$(abspath $(BUILD))
test-python: $(SHARED_LIB) $(BUILD)/python
	@py=$$(cat $(BUILD)/python); \
	$(PY_TEST_ENV) $$py python/tests/run_all.py --strict python/tests || exit 1; \
	if $$py -c 'import torch' >/dev/null 2>&1; then \
	  nocuda=$$($$py -c 'import torch; print("" if torch.cuda.is_available() else "--no-cuda")'); \
	  $(PY_TEST_ENV) $$py python/tests/run_all.py --strict $$nocuda python/tests/with_torch || exit 1; \
	else echo "test-python: the torch suite (python/tests/with_torch) is not run: no torch here;" \
	  "make test-gpu runs it"; fi

# The GPU machine has torch and numpy in its own python (nothing can be installed there):
# PYTHON names it when python3 is not that one.
test-gpu: all $(TESTS) $(GPU_TESTS)
	@tests/gpu/run.sh $(BUILD)
	@$(PY_TEST_ENV) $${PYTHON:-python3} python/tests/run_all.py --strict python/tests/with_torch

# ---- fuzzing (libFuzzer) -------------------------------------------------------------------
# `make fuzz FUZZ_SECONDS=600` runs each target that long (clang's libFuzzer + ASan + UBSan)
# on fuzz/corpus/<parser>; new inputs go to $(BUILD)/fuzz/corpus-<target>, crashes to
# $(BUILD)/fuzz/<target>-crash-*. Needs clang and its runtime (installed like DEB_PACKAGES).
FUZZ_SECONDS ?= 60
FUZZ_PACKAGES := clang libclang-rt-dev
FUZZ_TARGETS := fuzz_safetensors fuzz_config
FUZZ_LIB_SRCS := src/common/status.c src/loader/safetensors.c src/loader/hf_config.c \
                 src/loader/hf_quant.c src/loader/names.c

fuzz: $(addprefix $(BUILD)/fuzz/,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)/fuzz/corpus-$$t; \
	  echo "== $$t for $(FUZZ_SECONDS) s"; \
	  $(BUILD)/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -max_len=65536 \
	    -timeout=10 -rss_limit_mb=2048 -artifact_prefix=$(BUILD)/fuzz/$$t- \
	    $(BUILD)/fuzz/corpus-$$t fuzz/corpus/$${t#fuzz_} || exit 1; \
	done

$(BUILD)/fuzz/%: fuzz/%.c $(FUZZ_LIB_SRCS) | $(BUILD)/.fuzz-deps-ok
	@mkdir -p $(dir $@)
	clang -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -g -O1 -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=undefined -o $@ $< $(FUZZ_LIB_SRCS) -l:libjansson.a -lm

$(BUILD)/.fuzz-deps-ok: | deps
	$(call apt_install,$(FUZZ_PACKAGES))

# What a static link of libw4a8moe.a needs besides it (pkg-config --static): jansson, and the
# CUDA runtime when this build has CUDA inside.
PC_LIBS_PRIVATE := $(patsubst $(JANSSON_LIB),-ljansson,$(LDLIBS))

# ---- install -------------------------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 include/w4a8moe.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(PREFIX)/lib/libw4a8moe.so.$(VERSION)
	ln -sf libw4a8moe.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libw4a8moe.so.$(SOVERSION)
	ln -sf libw4a8moe.so.$(SOVERSION) $(DESTDIR)$(PREFIX)/lib/libw4a8moe.so
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@LIBS_PRIVATE@|$(PC_LIBS_PRIVATE)|g' w4a8moe.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/w4a8moe.pc

# ---- run -----------------------------------------------------------------------------------
run: all
	$(CLI) bench

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
