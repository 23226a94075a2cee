"""_common.py — what the binding's tests share: the import path, the repository root, optional
modules (numpy, torch) with skip helpers, and the random seed.

The tests are plain unittest modules in two suites, run by run_all.py: python/tests (numpy, the
library and a C compiler: `make test-python`, which sets all three up) and python/tests/with_torch
(torch, and a GPU for test_cuda.py: `make test-gpu`). A module raises unittest.SkipTest at import
when what it needs is missing, so a bare python3 can still run the rest; run_all.py --strict
(CI=true, and the make targets) counts every skip as a failure.
Random tests print their seed; replay with W4A8MOE_TEST_SEED.
"""
import os
import sys
import time
import unittest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PY_DIR = os.path.dirname(TESTS_DIR)
REPO = os.path.dirname(PY_DIR)
if PY_DIR not in sys.path:
    sys.path.insert(0, PY_DIR)


def need_numpy():
    """numpy, or raise SkipTest (usable at module import)."""
    try:
        import numpy
    except ImportError:
        raise unittest.SkipTest("numpy is not installed (`make test-python` installs Debian's "
                                "python3-numpy, or pip install numpy)")
    return numpy


def need_torch():
    """torch, or raise SkipTest (usable at module import)."""
    torch = maybe_torch()
    if torch is None:
        raise unittest.SkipTest("torch is not installed (the torch suite needs it)")
    return torch


def maybe_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def need_library():
    """The loaded library. When none loads: SkipTest, unless W4A8MOE_LIB names one (as
    `make test-python` does), then the failure is real and raised."""
    import w4a8moe._lib as L
    try:
        return L.load()
    except OSError as e:
        if os.environ.get("W4A8MOE_LIB"):
            raise
        raise unittest.SkipTest(f"libw4a8moe.so not loadable: {str(e).splitlines()[0]}")


_seed = None


def seed():
    """The run's seed (W4A8MOE_TEST_SEED or the clock), printed once."""
    global _seed
    if _seed is None:
        env = os.environ.get("W4A8MOE_TEST_SEED")
        _seed = int(env) if env else int(time.time_ns() % (1 << 31))
        print(f"seed {_seed} (replay with W4A8MOE_TEST_SEED={_seed})", flush=True)
    return _seed


def quick():
    return os.environ.get("W4A8MOE_TEST_QUICK") == "1"
