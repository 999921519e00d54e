"""Run one test module for ctest: exit 0 when it passes, 1 when a test fails,
77 (ctest SKIP_RETURN_CODE) when every test in it was skipped."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if len(sys.argv) != 2:
    sys.exit("usage: run.py TEST_MODULE")
suite = unittest.defaultTestLoader.loadTestsFromName(sys.argv[1])
result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
if not result.wasSuccessful():
    sys.exit(1)
if result.testsRun and len(result.skipped) == result.testsRun:
    print("skipped: every test of %s was skipped" % sys.argv[1])
    sys.exit(77)
sys.exit(0)
