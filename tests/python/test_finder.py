"""How the ckalloc package finds the library: CKALLOC_LIBRARY, a library
already loaded (LD_PRELOAD), the installed layout, the build tree, and the
error when there is none. Every case runs in a fresh interpreter."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from ckalloc_testutil import PKG_PARENT, SRC, library_under_test, run_py

REPORT = """
import json, ckalloc
out = {"file": ckalloc.__file__}
try:
    out["path"] = ckalloc.library_path()
    out["version"] = ckalloc.version()
    out["conf"] = ckalloc.loaded_conf()
except ckalloc.Error as e:
    out["error"] = str(e)
    out["error_type"] = type(e).__name__
    out["is_ck_error"] = isinstance(e, ckalloc.Error)
print(json.dumps(out))
"""


def report(test, **kw):
    r = run_py(REPORT, **kw)
    test.assertEqual(r.returncode, 0, r.stdout)
    return json.loads(r.stdout.strip().splitlines()[-1])


def copy_package(dest_parent):
    """The package alone (no build tree, no install layout) under dest_parent."""
    shutil.copytree(os.path.join(PKG_PARENT, "ckalloc"), os.path.join(dest_parent, "ckalloc"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest_parent


class FinderTest(unittest.TestCase):
    def setUp(self):
        self.lib = library_under_test()
        if not self.lib or not os.path.isfile(self.lib):
            self.skipTest("CKALLOC_LIBRARY does not name a built library")
        self.tmp = tempfile.mkdtemp(prefix="ckalloc-pytest-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_env_variable_is_honoured(self):
        # A copy under another directory: only CKALLOC_LIBRARY can lead there.
        copy = os.path.join(self.tmp, os.path.basename(self.lib))
        shutil.copy(self.lib, copy)
        j = report(self, env={"CKALLOC_LIBRARY": copy, "CKALLOC_CONF": "backend=host"})
        self.assertNotIn("error", j)
        self.assertEqual(j["path"], copy)
        self.assertEqual(j["conf"], "backend=host")
        self.assertRegex(j["version"], r"^\d+\.\d+\.\d+$")

    def test_missing_path_is_a_clear_error_at_first_use(self):
        missing = os.path.join(self.tmp, "no-such-dir", "libckalloc_preload.so")
        r = run_py("import ckalloc, ckalloc.torch; print('imported')",
                   env={"CKALLOC_LIBRARY": missing})
        self.assertEqual(r.returncode, 0, r.stdout)  # importing never fails
        j = report(self, env={"CKALLOC_LIBRARY": missing})
        self.assertEqual(j["error_type"], "LibraryNotFound")
        self.assertTrue(j["is_ck_error"])
        self.assertIn("CKALLOC_LIBRARY", j["error"])
        self.assertIn(missing, j["error"])

    def test_not_a_library(self):
        bogus = os.path.join(self.tmp, "libckalloc_preload.so")
        with open(bogus, "w") as f:
            f.write("not an ELF file\n")
        j = report(self, env={"CKALLOC_LIBRARY": bogus})
        self.assertEqual(j["error_type"], "LibraryNotFound")
        self.assertIn(bogus, j["error"])
        self.assertIn("CKALLOC_LIBRARY", j["error"])

    def test_nothing_found_names_the_variable(self):
        parent = copy_package(os.path.join(self.tmp, "pkg"))
        j = report(self, env={"PYTHONPATH": parent}, unset=("CKALLOC_LIBRARY",), cwd=self.tmp)
        self.assertTrue(j["file"].startswith(parent), j)
        self.assertEqual(j["error_type"], "LibraryNotFound")
        self.assertIn("CKALLOC_LIBRARY", j["error"])

    def test_preloaded_library_is_found(self):
        if not os.path.basename(self.lib).startswith("libckalloc_preload.so"):
            self.skipTest("libckalloc_preload.so not built")
        parent = copy_package(os.path.join(self.tmp, "pkg"))
        code = REPORT.replace(
            "import json, ckalloc",
            "import os, json\nos.environ['CKALLOC_CONF'] = 'changed-after-start'\nimport ckalloc",
        )
        r = run_py(code, env={"PYTHONPATH": parent, "LD_PRELOAD": os.path.abspath(self.lib),
                              "CKALLOC_CONF": "backend=host"},
                   unset=("CKALLOC_LIBRARY",), cwd=self.tmp)
        self.assertEqual(r.returncode, 0, r.stdout)
        j = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertNotIn("error", j)
        self.assertEqual(os.path.realpath(j["path"]), os.path.realpath(self.lib))
        # The conf the preloaded library read at start, not today's os.environ.
        self.assertEqual(j["conf"], "backend=host")

    def test_installed_layout(self):
        build = os.environ.get("CKALLOC_BUILD_DIR")
        libdir = os.environ.get("CKALLOC_INSTALL_LIBDIR", "lib")
        if not build or not shutil.which("cmake"):
            self.skipTest("CKALLOC_BUILD_DIR not set (run through ctest)")
        prefix = os.path.join(self.tmp, "prefix")
        r = subprocess.run(["cmake", "--install", build, "--component", "python", "--prefix", prefix],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        pkg = os.path.join(prefix, "share", "ckalloc", "python", "ckalloc")
        for f in ("__init__.py", "torch.py", "_install.py"):
            self.assertTrue(os.path.isfile(os.path.join(pkg, f)), f)
        dest = os.path.join(prefix, libdir)
        os.makedirs(dest, exist_ok=True)
        name = os.path.basename(self.lib)
        shutil.copy(self.lib, os.path.join(dest, name))
        j = report(self, env={"PYTHONPATH": os.path.join(prefix, "share", "ckalloc", "python")},
                   unset=("CKALLOC_LIBRARY",), cwd=self.tmp)
        self.assertNotIn("error", j)
        self.assertTrue(j["file"].startswith(pkg), j)
        self.assertEqual(j["path"], os.path.join(dest, name))

    def test_build_tree(self):
        build = os.path.join(SRC, "build")
        cands = [os.path.join(build, "libckalloc_preload.so"),
                 os.path.join(build, "preload", "libckalloc_preload.so"),
                 os.path.join(build, "libckalloc.so")]
        want = next((c for c in cands if os.path.isfile(c)), None)
        if want is None:
            self.skipTest("no library in the checkout's build/")
        j = report(self, unset=("CKALLOC_LIBRARY",), env={"CKALLOC_CONF": "backend=host"},
                   cwd=self.tmp)
        if "error" in j and "undefined symbol" in j["error"]:
            self.skipTest("build/ holds a stale library: " + j["error"])
        self.assertNotIn("error", j)
        self.assertEqual(j["path"], want)


if __name__ == "__main__":
    unittest.main()
