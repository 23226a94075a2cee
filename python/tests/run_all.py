#!/usr/bin/env python3
"""run_all.py — runs the binding's unittest modules of one suite and ends, like the C test
binaries, with a "N passed, N failed" line (tests/run_suite.sh reads the same format).

    run_all.py [--strict] [--no-cuda] [DIR]
        DIR: python/tests (the CPU suite, default) or python/tests/with_torch (torch on the
        CPU and the GPU). --no-cuda leaves out the suite's CUDA modules (test_cuda.py,
        test_*_cuda.py) and names them: `make test-python` on a machine with torch and no GPU
        runs the rest of the torch suite; `make test-gpu` runs all of it.

Counting is per test method (a module that cannot be imported counts as one failure, a module
that skips at import counts as one skip and is named). A skip hides what it skipped, so under
--strict (the default when CI=true, and what `make test-python` and `make test-gpu` ask for)
every skip is a failure: the suite a machine runs must run whole there, and what only another
machine can run lives in another suite (the torch suite runs in `make test-gpu`).
"""
import argparse
import os
import sys
import unittest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)  # _common and the shared makers, for suites in sub-folders

import _common  # noqa: E402


class _Result(unittest.TextTestResult):
    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.stream.writeln(f"SKIP {test.id()}: {reason}")


def _module_skips(res):
    """The skips that stand for a whole module (unittest's ModuleSkipped placeholder)."""
    return [(t, r) for t, r in res.skipped if t.id().startswith("unittest.loader.ModuleSkipped")]


def _is_cuda_module(name):
    base = name.rsplit(".", 1)[-1]
    return base == "test_cuda" or (base.startswith("test_") and base.endswith("_cuda"))


def _module_of(test):
    """The test's module; for a module that skipped or failed at import, unittest's placeholder
    (unittest.loader.ModuleSkipped / _FailedTest) names the module as its method."""
    mod = type(test).__module__
    return test.id().rsplit(".", 1)[-1] if mod == "unittest.loader" else mod


def _without_cuda(suite):
    """suite without the tests of CUDA modules, and the names of the modules left out."""
    kept, left = unittest.TestSuite(), set()
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            sub, names = _without_cuda(item)
            kept.addTest(sub)
            left.update(names)
        elif _is_cuda_module(_module_of(item)):
            left.add(_module_of(item))
        else:
            kept.addTest(item)
    return kept, sorted(left)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", default=TESTS_DIR)
    ap.add_argument("--strict", action="store_true",
                    default=os.environ.get("CI", "").lower() in ("1", "true", "yes"),
                    help="count every skip as a failure (default when CI=true)")
    ap.add_argument("--no-cuda", action="store_true",
                    help="leave out the CUDA modules (test_cuda.py, test_*_cuda.py)")
    args = ap.parse_args(argv)
    suite_dir = os.path.abspath(args.dir)
    if suite_dir not in sys.path:
        sys.path.insert(0, suite_dir)
    _common.seed()
    print(f"python {sys.version.split()[0]} ({sys.executable}); suite {suite_dir}"
          f"{'; strict: a skip is a failure' if args.strict else ''}", flush=True)
    # the top level is the suite's own folder, so modules of the two suites never share a name
    suite = unittest.TestLoader().discover(suite_dir, pattern="test_*.py",
                                           top_level_dir=suite_dir)
    if args.no_cuda:
        suite, left = _without_cuda(suite)
        for name in left:
            print(f"not run here (needs a CUDA device; make test-gpu runs it): {name}")
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=int(os.environ.get("V", "1")),
                                     resultclass=_Result)
    res = runner.run(suite)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    skipped = len(res.skipped)
    passed = res.testsRun - failed - skipped
    for t, reason in _module_skips(res):
        print(f"!! a whole module skipped at import: {reason}")
    if args.strict and skipped:
        print(f"!! strict: {skipped} skipped test(s) count as failures")
        failed += skipped
        skipped = 0
    print(f"python: {passed} passed, {failed} failed, {skipped} skipped")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
