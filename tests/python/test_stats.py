"""ckalloc.stats / print_stats / reset_peak_stats / Error on the host backend,
allocating through ckalloc_torch_malloc (what PyTorch's pluggable allocator
calls) with ctypes. Each test runs in a fresh interpreter (@isolated)."""

import contextlib
import ctypes
import io
import json
import os
import sys
import unittest

from ckalloc_testutil import byte_at, isolated, require_preload, round512, run_py

HOST = {"CKALLOC_CONF": "backend=host"}
MiB = 1 << 20


def stats():
    import ckalloc

    return ckalloc.stats()


class StatsTest(unittest.TestCase):
    @isolated(HOST)
    def test_torch_malloc_counts(self):
        import ckalloc

        lib = require_preload(self)
        self.assertEqual(ckalloc.preload_pool(0).backend, "host")
        p = lib.ckalloc_torch_malloc(MiB, 0, None)
        self.assertTrue(p, ckalloc.library().ck_last_error())
        ctypes.memset(p, 0xAB, MiB)  # host backend: process memory
        self.assertEqual(byte_at(p, MiB - 1), 0xAB)
        s = stats()
        self.assertEqual(s["allocation"]["current"], 1)
        self.assertEqual(s["allocated_bytes"]["current"], MiB)
        self.assertEqual(s["requested_bytes"]["current"], MiB)
        self.assertEqual(s["backend"], "host")

        q = lib.ckalloc_torch_malloc(1000, 0, None)
        self.assertTrue(q)
        ctypes.memset(q, 0x5A, 1000)
        self.assertEqual(byte_at(q, 999), 0x5A)
        self.assertEqual(byte_at(p, 0), 0xAB)
        s = stats()
        self.assertEqual(s["allocation"]["current"], 2)
        self.assertEqual(s["allocated_bytes"]["current"], MiB + 1024)  # 1000 -> 1024
        self.assertEqual(s["requested_bytes"]["current"], MiB + 1000)
        self.assertGreaterEqual(s["reserved_bytes"]["current"], MiB + 1024)
        self.assertGreaterEqual(s["physical_bytes"]["current"], s["reserved_bytes"]["current"])
        self.assertEqual(s, ckalloc.stats(device=0) | {k: s[k] for k in ("fragmentation", "peak_overhead")})

        lib.ckalloc_torch_free(p, MiB, 0, None)
        lib.ckalloc_torch_free(q, 1000, 0, None)
        s = stats()
        self.assertEqual(s["allocation"]["current"], 0)
        self.assertEqual(s["allocation"]["peak"], 2)
        self.assertEqual(s["allocation"]["allocated"], 2)
        self.assertEqual(s["allocation"]["freed"], 2)
        self.assertEqual(s["allocated_bytes"]["current"], 0)
        self.assertEqual(s["allocated_bytes"]["peak"], MiB + 1024)
        self.assertEqual(s["allocated_bytes"]["freed"], MiB + 1024)
        self.assertEqual(s["requested_bytes"]["peak"], MiB + 1000)
        self.assertGreaterEqual(s["physical_bytes"]["peak"], MiB + 1024)
        self.assertEqual(s["num_ooms"], 0)

    @isolated(HOST)
    def test_sizes_round_to_512(self):
        lib = require_preload(self)
        sizes = [1, 511, 512, 513, 4097, 3 * MiB + 1]
        ptrs = [lib.ckalloc_torch_malloc(n, 0, None) for n in sizes]
        self.assertTrue(all(ptrs))
        s = stats()
        self.assertEqual(s["allocated_bytes"]["current"], sum(round512(n) for n in sizes))
        self.assertEqual(s["requested_bytes"]["current"], sum(sizes))
        self.assertEqual(s["allocation"]["current"], len(sizes))
        for p, n in zip(ptrs, sizes):
            lib.ckalloc_torch_free(p, n, 0, None)
        self.assertEqual(stats()["allocated_bytes"]["current"], 0)

    @isolated(HOST)
    def test_print_stats_json_parses(self):
        import ckalloc

        lib = require_preload(self)
        p = lib.ckalloc_torch_malloc(3 * MiB, 0, None)
        self.assertTrue(p)
        buf = io.StringIO()
        ckalloc.print_stats(json=True, file=buf)
        text = buf.getvalue()
        self.assertEqual(text.count("\n"), 1, text)
        j = json.loads(text)
        s = ckalloc.stats()
        # the two ratios (README "Stats"): the C and Python sides agree
        r = s["reserved_bytes"]["current"]
        self.assertAlmostEqual(s["fragmentation"], 1 - s["allocated_bytes"]["current"] / r)
        self.assertGreater(s["fragmentation"], 0)  # 3 MiB in a larger mapping
        self.assertAlmostEqual(s["peak_overhead"],
                               s["physical_bytes"]["peak"] / s["requested_bytes"]["peak"])
        for k in ("fragmentation", "peak_overhead"):
            self.assertAlmostEqual(j.pop(k), s.pop(k), places=4)
        self.assertEqual(j, s)
        self.assertEqual(j["allocated_bytes"]["current"], 3 * MiB)
        self.assertEqual(j["version"], ckalloc.version())
        # Default file: sys.stdout (the Python object, so redirect works).
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            ckalloc.print_stats(device=0, json=True)
        self.assertEqual(json.loads(out.getvalue())["allocation"]["current"], 1)
        lib.ckalloc_torch_free(p, 3 * MiB, 0, None)

    @isolated(HOST)
    def test_print_stats_table(self):
        import ckalloc

        require_preload(self)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            ckalloc.print_stats()
        text = out.getvalue()
        self.assertIn("backend host", text)
        for key in ("allocated_bytes", "reserved_bytes", "physical_bytes", "num_ooms"):
            self.assertRegex(text, r"(?m)^%s\s" % key)

    @isolated(HOST)
    def test_reset_peak_stats(self):
        import ckalloc

        lib = require_preload(self)
        p = lib.ckalloc_torch_malloc(4 * MiB, 0, None)
        q = lib.ckalloc_torch_malloc(MiB, 0, None)
        lib.ckalloc_torch_free(p, 4 * MiB, 0, None)
        s = stats()
        self.assertEqual(s["allocated_bytes"]["peak"], 5 * MiB)
        self.assertEqual(s["allocated_bytes"]["current"], MiB)
        ckalloc.reset_peak_stats()
        s = stats()
        self.assertEqual(s["allocated_bytes"]["peak"], MiB)
        self.assertEqual(s["allocation"]["peak"], 1)
        self.assertEqual(s["allocated_bytes"]["allocated"], 5 * MiB)  # totals stay
        for k in ckalloc.STAT_NAMES:
            self.assertEqual(s[k]["peak"], s[k]["current"], k)
        lib.ckalloc_torch_free(q, MiB, 0, None)
        ckalloc.reset_peak_stats(device=0)
        self.assertEqual(stats()["allocated_bytes"]["peak"], 0)

    @isolated(HOST)
    def test_memory_stats_torch_names(self):
        import ckalloc
        import ckalloc.torch as ct

        self.assertNotIn("torch", sys.modules)  # importing ckalloc.torch does not import torch
        lib = require_preload(self)
        p = lib.ckalloc_torch_malloc(2 * MiB + 5, 0, None)
        self.assertTrue(p)
        m = ct.memory_stats()
        s = ckalloc.stats()
        for name in ("allocated_bytes", "reserved_bytes", "active_bytes", "inactive_split_bytes",
                     "requested_bytes", "allocation", "segment", "active", "inactive_split"):
            for f in ("current", "peak", "allocated", "freed"):
                self.assertEqual(m["%s.all.%s" % (name, f)], s[name][f], (name, f))
        for name in ("mapped_bytes", "physical_bytes"):
            for f in ("current", "peak", "allocated", "freed"):
                self.assertEqual(m["ckalloc.%s.%s" % (name, f)], s[name][f], (name, f))
        self.assertEqual(m["num_alloc_retries"], s["num_alloc_retries"])
        self.assertEqual(m["num_ooms"], s["num_ooms"])
        self.assertEqual(m["ckalloc.budget"], s["budget"])
        self.assertEqual(m["ckalloc.largest_free"], s["largest_free"])
        self.assertEqual(m["ckalloc.num_map_calls"], s["num_map_calls"])
        self.assertEqual(m["allocated_bytes.all.current"], round512(2 * MiB + 5))
        self.assertEqual(m["requested_bytes.all.current"], 2 * MiB + 5)
        self.assertEqual(list(m), sorted(m))
        self.assertTrue(all(isinstance(v, (int, float)) for v in m.values()))
        self.assertEqual(ct.memory_stats(0),
                         m | {k: m[k] for k in ("ckalloc.fragmentation", "ckalloc.peak_overhead")})
        lib.ckalloc_torch_free(p, 2 * MiB + 5, 0, None)

    @isolated(HOST)
    def test_error_carries_status_and_sentence(self):
        import ckalloc

        require_preload(self)
        pool = ckalloc.preload_pool(0)
        foreign = ctypes.create_string_buffer(4096)
        with self.assertRaises(ckalloc.Error) as cm:
            pool.free(ctypes.addressof(foreign))
        e = cm.exception
        self.assertEqual(e.name, "CK_ERR_NOT_OWNED")
        self.assertEqual(e.status, 3)
        self.assertIn("was not allocated by this pool", e.message)
        self.assertIn("CK_ERR_NOT_OWNED", str(e))
        self.assertIn("was not allocated by this pool", str(e))

        with self.assertRaises(ckalloc.Error) as cm:
            pool.malloc(0)
        self.assertEqual(cm.exception.name, "CK_ERR_INVALID")
        self.assertTrue(cm.exception.message)

        p = pool.malloc(4096)
        pool.free(p)
        with self.assertRaises(ckalloc.Error) as cm:
            pool.free(p)
        self.assertIn(cm.exception.name, ("CK_ERR_DOUBLE_FREE", "CK_ERR_NOT_OWNED"))
        self.assertEqual(stats()["allocation"]["current"], 0)

    @isolated({"CKALLOC_CONF": "backend=host,budget=8M"})
    def test_budget_and_oom(self):
        import ckalloc
        import ckalloc.torch as ct

        lib = require_preload(self)
        self.assertFalse(lib.ckalloc_torch_malloc(16 * MiB, 0, None))  # NULL on failure
        s = stats()
        self.assertEqual(s["budget"], 8 * MiB)
        self.assertEqual(s["num_ooms"], 1)
        self.assertEqual(s["allocation"]["current"], 0)
        with self.assertRaises(ckalloc.Error) as cm:
            ckalloc.preload_pool().malloc(16 * MiB)
        self.assertEqual(cm.exception.name, "CK_ERR_NOMEM")
        self.assertTrue(cm.exception.message)
        m = ct.memory_stats()
        self.assertEqual(m["num_ooms"], 2)
        self.assertEqual(m["ckalloc.budget"], 8 * MiB)
        p = lib.ckalloc_torch_malloc(4 * MiB, 0, None)  # within the budget
        self.assertTrue(p)
        lib.ckalloc_torch_free(p, 4 * MiB, 0, None)

    def test_bad_conf_names_the_key(self):
        # libckalloc_preload.so parses CKALLOC_CONF when it is loaded and ends
        # the process (status 2) with one line naming the key.
        r = run_py("import ckalloc; print(ckalloc.version())",
                   env={"CKALLOC_CONF": "backend=host,bogus_key=1"})
        if r.returncode == 0:
            self.skipTest("the library under test does not read CKALLOC_CONF at load")
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn("bogus_key", r.stdout)
        self.assertIn("CKALLOC_CONF", r.stdout)

    @isolated({"CKALLOC_CONF": ""})
    def test_no_pool_is_an_error_with_the_sentence(self):
        # Without backend=host the preload library wants a CUDA device.
        import ckalloc

        require_preload(self)
        try:
            ckalloc.stats()
        except ckalloc.Error as e:
            self.assertTrue(e.message, str(e))
            self.assertIn("ckalloc_preload_pool(0)", str(e))
        else:
            self.skipTest("a CUDA device is present: the pool was created")

    @isolated(HOST)
    def test_version(self):
        import ckalloc

        v = ckalloc.version()
        self.assertRegex(v, r"^\d+\.\d+\.\d+$")
        want = os.environ.get("CKALLOC_EXPECT_VERSION")
        if want:
            self.assertEqual(v, want)

    @isolated(HOST)
    def test_own_pool(self):
        # Works with libckalloc.so too: a pool created from Python.
        import ckalloc

        with ckalloc.Pool("backend=host,budget=64M") as pool:
            p = pool.malloc(5000)
            ctypes.memset(p, 1, 5000)
            s = ckalloc.stats(pool=pool)
            self.assertEqual(s["allocated_bytes"]["current"], 5120)
            self.assertEqual(s["budget"], 64 * MiB)
            self.assertEqual(ckalloc.stats(pool=pool.handle)["allocation"]["current"], 1)
            self.assertGreater(len(pool.format_stats()), 0)
            pool.free(p)
            self.assertGreaterEqual(pool.trim(), 0)
            self.assertEqual(pool.stats()["allocated_bytes"]["current"], 0)
        with self.assertRaises(ckalloc.Error):
            ckalloc.Pool("backend=host,nonsense=1")


class DeviceTest(unittest.TestCase):
    def test_current_device(self):
        import types

        import ckalloc

        saved = sys.modules.get("torch")
        try:
            sys.modules.pop("torch", None)
            self.assertEqual(ckalloc.current_device(), 0)
            fake = types.ModuleType("torch")
            fake.cuda = types.SimpleNamespace(is_initialized=lambda: False, current_device=lambda: 3)
            sys.modules["torch"] = fake
            self.assertEqual(ckalloc.current_device(), 0)  # CUDA not initialised
            fake.cuda.is_initialized = lambda: True
            self.assertEqual(ckalloc.current_device(), 3)
        finally:
            if saved is not None:
                sys.modules["torch"] = saved
            else:
                sys.modules.pop("torch", None)


if __name__ == "__main__":
    unittest.main()
