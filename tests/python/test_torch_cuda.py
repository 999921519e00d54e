"""ckalloc under real PyTorch on a real GPU: ckalloc.torch.use() and the
LD_PRELOAD set-up (backend:cudaMallocAsync), with memory_stats() after
allocating tensors. Every test skips without torch or a CUDA device."""

import os
import subprocess
import sys
import unittest

from ckalloc_testutil import child_env, isolated, library_under_test

MiB = 1 << 20
GiB = 1 << 30


def torch_cuda_status():
    """None when torch and a CUDA device are usable, else why not. Asked in a
    child so that this process never initialises CUDA."""
    r = subprocess.run(
        [sys.executable, "-c", "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 3)"],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    if r.returncode == 0:
        return None
    if r.returncode == 3:
        return "no CUDA device for torch"
    return "torch cannot be imported"


_status = torch_cuda_status() if not os.environ.get("CK_PYTEST_CHILD") else None


def preload_lib():
    lib = library_under_test()
    return lib if lib and os.path.basename(lib).startswith("libckalloc_preload") else None


@unittest.skipIf(_status is not None, _status or "")
class TorchCudaTest(unittest.TestCase):
    def setUp(self):
        if not preload_lib():
            self.skipTest("libckalloc_preload.so not built")

    @isolated({"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}, timeout=600)
    def test_pluggable_allocator(self):
        import torch

        import ckalloc.torch as ct

        ct.use("budget=4G")
        x = torch.empty(MiB, dtype=torch.float32, device="cuda")  # 4 MiB
        x.fill_(1.0)
        self.assertEqual(float(x.sum()), float(MiB))
        torch.cuda.synchronize()
        m = ct.memory_stats()
        self.assertEqual(m["ckalloc.budget"], 4 * GiB)
        self.assertGreaterEqual(m["allocated_bytes.all.current"], 4 * MiB)
        self.assertGreaterEqual(m["allocation.all.current"], 1)
        a = torch.randn(512, 512, device="cuda")
        b = a @ a
        torch.cuda.synchronize()
        peak = ct.memory_stats()["allocated_bytes.all.peak"]
        self.assertGreaterEqual(peak, 4 * MiB + 2 * 512 * 512 * 4)
        del x, a, b
        torch.cuda.synchronize()
        m = ct.memory_stats(torch.cuda.current_device())
        self.assertLess(m["allocated_bytes.all.current"], peak)

    @isolated(timeout=600)
    def test_refused_after_first_cuda_allocation(self):
        import torch

        import ckalloc.torch as ct

        torch.zeros(1, device="cuda")
        with self.assertRaises(RuntimeError) as cm:
            ct.use("budget=4G")
        self.assertIn("already initialised", str(cm.exception))

    def test_ld_preload_with_cuda_malloc_async(self):
        code = """
import torch, ckalloc, ckalloc.torch as ct
x = torch.empty(1 << 22, dtype=torch.float32, device="cuda")  # 16 MiB
x.fill_(2.0)
assert float(x.sum()) == 2.0 * (1 << 22)
torch.cuda.synchronize()
m = ct.memory_stats()
assert ckalloc.library_path(), "not found in /proc/self/maps"
assert m["ckalloc.budget"] == 4 << 30, m["ckalloc.budget"]
assert m["allocated_bytes.all.current"] >= 16 << 20, m
assert m["allocation.all.current"] >= 1, m
free, total = torch.cuda.mem_get_info()
assert total <= 4 << 30, total
print("ok", m["allocated_bytes.all.peak"])
"""
        env = child_env({"LD_PRELOAD": os.path.abspath(preload_lib()),
                         "PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync",
                         "CKALLOC_CONF": "budget=4G"}, unset=("CKALLOC_LIBRARY",))
        r = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("ok", r.stdout)


if __name__ == "__main__":
    unittest.main()
