"""Shared helpers for the Python tests of tools/python/ckalloc.

The library reads CKALLOC_CONF once, when it is loaded, and keeps one pool
per device for the life of the process. So every test whose outcome depends
on the environment runs in a fresh interpreter: @isolated(env) re-runs the
decorated test method as `python -m unittest MODULE.CLASS.TEST` with env
applied, and the parent passes, fails or skips with the child.

Environment (set by ctest, see tests/python.cmake):
  CKALLOC_LIBRARY        the library under test (libckalloc_preload.so when built)
  CKALLOC_PLAIN_LIBRARY  libckalloc.so (no preload entry points)
  CKALLOC_BUILD_DIR      the build tree (for `cmake --install`)
  CKALLOC_INSTALL_LIBDIR CMAKE_INSTALL_LIBDIR
  CKALLOC_EXPECT_VERSION the project version
  PYTHONPATH             tools/python
"""

import ctypes
import functools
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))
PKG_PARENT = os.path.join(SRC, "tools", "python")
CHILD_VAR = "CK_PYTEST_CHILD"

# Variables a child never inherits unless a test sets them.
_SCRUB = ("CKALLOC_CONF", "LD_PRELOAD", "PYTORCH_CUDA_ALLOC_CONF", CHILD_VAR)


def child_env(env=None, unset=()):
    e = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    pp = e.get("PYTHONPATH", "")
    if PKG_PARENT not in pp.split(os.pathsep):
        e["PYTHONPATH"] = PKG_PARENT + (os.pathsep + pp if pp else "")
    for k in unset:
        e.pop(k, None)
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def in_child():
    return os.environ.get(CHILD_VAR) is not None


def isolated(env=None, unset=(), timeout=120):
    """Run this test method alone in a fresh interpreter with env applied
    (a value of None removes the variable)."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self):
            test_id = "%s.%s.%s" % (type(self).__module__, type(self).__qualname__, fn.__name__)
            if os.environ.get(CHILD_VAR) == test_id:
                return fn(self)
            e = child_env(env, unset)
            e[CHILD_VAR] = test_id
            r = subprocess.run(
                [sys.executable, "-m", "unittest", "-v", test_id],
                cwd=HERE, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, timeout=timeout,
            )
            out = r.stdout
            if r.returncode != 0:
                self.fail("child for %s exited %d:\n%s" % (test_id, r.returncode, out))
            m = re.search(r"\.\.\. skipped '(.*)'", out)
            if m:
                self.skipTest(m.group(1))

        return wrapper

    return deco


def run_py(code, env=None, unset=(), cwd=None, timeout=120):
    """Run python -c code; returns CompletedProcess with stdout+stderr."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd or HERE, env=child_env(env, unset),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )


def library_under_test():
    return os.environ.get("CKALLOC_LIBRARY")


def require_preload(testcase):
    """Skip unless the loaded library has the preload entry points."""
    import ckalloc

    lib = ckalloc.library()
    if not hasattr(lib, "ckalloc_torch_malloc"):
        testcase.skipTest("%s has no ckalloc_torch_malloc (libckalloc_preload.so not built)"
                          % ckalloc.library_path())
    return lib


def require_preload_path(testcase):
    """Skip unless CKALLOC_LIBRARY names libckalloc_preload.so (without
    loading it: for tests where loading must come later)."""
    lib = library_under_test()
    if not lib or not os.path.basename(lib).startswith("libckalloc_preload"):
        testcase.skipTest("CKALLOC_LIBRARY is not libckalloc_preload.so (%s)" % lib)
    return lib


def round512(n):
    return (n + 511) // 512 * 512


def byte_at(addr, off=0):
    return ctypes.string_at(addr + off, 1)[0]
