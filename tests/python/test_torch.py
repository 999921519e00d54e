"""ckalloc.torch.use() against a stand-in torch package (tests/python/faketorch):
its CUDAPluggableAllocator loads the library and calls ckalloc_torch_malloc /
ckalloc_torch_free the way PyTorch does, so use()'s set-up, its refusals and
memory_stats() are checked without PyTorch or a GPU. The real thing is in
test_torch_cuda.py."""

import ctypes
import os
import shutil
import sys
import tempfile
import unittest

from ckalloc_testutil import HERE, isolated, require_preload, require_preload_path

FAKE = os.path.join(HERE, "faketorch")
MiB = 1 << 20


def fake_env(**kw):
    pp = [FAKE, os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in pp if p)}
    env.update(kw)
    return env


class UseTest(unittest.TestCase):
    @isolated(fake_env())
    def test_use_installs_the_allocator(self):
        import ckalloc
        import ckalloc.torch as ct
        import torch

        self.assertTrue(torch.IS_FAKE)
        require_preload_path(self)
        self.assertIsNone(os.environ.get("CKALLOC_CONF"))
        alloc = ct.use("backend=host,budget=64M")
        self.assertEqual(os.environ["CKALLOC_CONF"], "backend=host,budget=64M")
        self.assertIs(torch.cuda.memory.current_allocator(), alloc)
        self.assertEqual(alloc.path, ckalloc.library_path())
        self.assertEqual((alloc.alloc_fn_name, alloc.free_fn_name),
                         ("ckalloc_torch_malloc", "ckalloc_torch_free"))
        # What PyTorch does with it: malloc(size, device, stream).
        p = alloc.malloc(MiB, 0, None)
        self.assertTrue(p)
        ctypes.memset(p, 7, MiB)
        m = ct.memory_stats()
        self.assertEqual(m["ckalloc.budget"], 64 * MiB)  # the conf use() set was read
        self.assertEqual(m["allocated_bytes.all.current"], MiB)
        self.assertEqual(m["allocation.all.current"], 1)
        alloc.free(p, MiB, 0, None)
        m = ct.memory_stats(device=0)
        self.assertEqual(m["allocated_bytes.all.current"], 0)
        self.assertEqual(m["allocated_bytes.all.peak"], MiB)

    @isolated(fake_env(FAKE_TORCH_CUDA_INITIALIZED="1"))
    def test_refused_after_cuda_init(self):
        import ckalloc.torch as ct

        with self.assertRaises(RuntimeError) as cm:
            ct.use("backend=host")
        self.assertIn("already initialised", str(cm.exception))

    @isolated(fake_env(PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True,backend:cudaMallocAsync"))
    def test_refused_with_another_backend(self):
        import ckalloc.torch as ct

        with self.assertRaises(RuntimeError) as cm:
            ct.use("backend=host")
        self.assertIn("backend:cudaMallocAsync", str(cm.exception))
        self.assertIsNone(os.environ.get("CKALLOC_CONF"))  # nothing changed

    @isolated(fake_env(PYTORCH_CUDA_ALLOC_CONF="backend:native,expandable_segments:False"))
    def test_native_backend_is_fine(self):
        import ckalloc.torch as ct

        require_preload_path(self)
        self.assertIsNotNone(ct.use("backend=host"))

    @isolated(fake_env(CKALLOC_CONF="backend=host"))
    def test_refused_when_loaded_with_another_conf(self):
        import ckalloc
        import ckalloc.torch as ct

        require_preload(self)
        ckalloc.version()  # loads the library with CKALLOC_CONF=backend=host
        with self.assertRaises(RuntimeError) as cm:
            ct.use("backend=host,budget=1G")
        msg = str(cm.exception)
        self.assertIn("already loaded", msg)
        self.assertIn("backend=host,budget=1G", msg)
        # The same conf, or None (keep what is there), is fine.
        self.assertIsNotNone(ct.use("backend=host"))
        self.assertIsNotNone(ct.use(None))

    @isolated(fake_env())
    def test_library_argument(self):
        import ckalloc
        import ckalloc.torch as ct

        lib = require_preload_path(self)
        tmp = tempfile.mkdtemp(prefix="ckalloc-pytest-")
        try:
            copy = os.path.join(tmp, "libckalloc_preload.so")
            shutil.copy(lib, copy)
            os.environ.pop("CKALLOC_LIBRARY", None)
            alloc = ct.use("backend=host", library=copy)
            self.assertEqual(alloc.path, copy)
            self.assertEqual(ckalloc.library_path(), copy)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @isolated(fake_env())
    def test_plain_library_is_refused(self):
        import ckalloc.torch as ct

        plain = os.environ.get("CKALLOC_PLAIN_LIBRARY")
        if not plain:
            self.skipTest("CKALLOC_PLAIN_LIBRARY not set (run through ctest)")
        os.environ.pop("CKALLOC_LIBRARY", None)
        with self.assertRaises(RuntimeError) as cm:
            ct.use("backend=host", library=plain)
        self.assertIn("ckalloc_torch_malloc", str(cm.exception))

    @isolated()
    def test_without_torch(self):
        import ckalloc.torch as ct

        sys.modules["torch"] = None  # `import torch` now raises ImportError
        with self.assertRaises(RuntimeError) as cm:
            ct.use("backend=host")
        self.assertIn("needs PyTorch", str(cm.exception))

    @isolated(fake_env())
    def test_import_does_not_import_torch(self):
        import ckalloc.torch  # noqa: F401

        self.assertNotIn("torch", sys.modules)


if __name__ == "__main__":
    unittest.main()
