#!/usr/bin/env python3
"""run_all.py — runs every python/tests/test_*.py (unittest) and prints one summary line,
"python: N passed, N failed, N skipped", like the C tests' last line. Exit status 1 on any
failure or error. Modules that need numpy or torch skip themselves (with the reason) where
those are missing. Used by `make test-python`.
"""
import os
import sys
import unittest

import _common

_common.seed()


class _Result(unittest.TextTestResult):
    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.stream.writeln(f"SKIP {test.id()}: {reason}")


def main():
    import importlib.util
    if importlib.util.find_spec("numpy") is None:
        print("python: numpy is not installed: the tests that need it skip (pip install numpy "
              "to run them); the ABI and bench/peers.py plan checks still run")
    loader = unittest.TestLoader()
    suite = loader.discover(_common.TESTS_DIR, pattern="test_*.py", top_level_dir=_common.TESTS_DIR)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=int(os.environ.get("V", "1")),
                                     resultclass=_Result)
    res = runner.run(suite)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    skipped = len(res.skipped)
    passed = res.testsRun - failed - skipped
    print(f"python: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
