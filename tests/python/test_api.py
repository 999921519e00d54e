"""The module-level calls beyond stats: ckalloc.trim / empty_cache,
ckalloc.snapshot, format_stats, ckalloc.torch.reset_peak_memory_stats and
empty_cache, memory_stats()'s missing small_pool/large_pool keys, and
stats() without a CUDA driver (an exception, nothing on stdout/stderr).
Host backend; each test runs in a fresh interpreter (@isolated)."""

import ctypes
import glob
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import unittest

from ckalloc_testutil import (byte_at, child_env, isolated, require_preload,
                              require_preload_path, round512)

HOST = {"CKALLOC_CONF": "backend=host"}
MiB = 1 << 20


def ckalloc_stat():
    """Path of the built ckalloc-stat, or None."""
    build = os.environ.get("CKALLOC_BUILD_DIR")
    if not build:
        return None
    for p in [os.path.join(build, "tools", "ckalloc-stat")] + glob.glob(
            os.path.join(build, "**", "ckalloc-stat"), recursive=True):
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


class TierTest(unittest.TestCase):
    """The tier engine through Pool: tag, stash, fetch, tensor_info, steps;
    an offload round trip with the data intact, and errors as ckalloc.Error
    with the library's sentence."""

    @isolated(HOST)
    def test_offload_round_trip(self):
        import ckalloc
        with ckalloc.Pool("backend=host,chunk_align=4M,live=0") as p:
            n = 8 * MiB
            x = p.malloc(n)
            ctypes.memset(x, 0x5A, n)
            p.tag(x, "layers.0.act", "offload")
            info = p.tensor_info(x)
            self.assertEqual((info["name"], info["tier"], info["applied"]), ("layers.0.act", "offload", "auto"))
            p.step_begin()
            p.stash(x)
            p.trim()  # the copy out finishes and the memory goes back
            info = p.tensor_info(x)
            self.assertEqual((info["state"], info["stashed"], info["device_bytes"]), ("offloaded", True, 0))
            st = p.stats()
            self.assertEqual(st["offloaded_bytes"]["current"], n)
            p.fetch(x)
            p.synchronize()
            p.step_end()
            self.assertEqual(ctypes.string_at(x, 16), b"\x5a" * 16)
            self.assertEqual(ctypes.string_at(x + n - 16, 16), b"\x5a" * 16)
            self.assertEqual(p.tensor_info(x)["state"], "resident")
            with self.assertRaises(ckalloc.Error) as e:
                p.fetch(x)
            self.assertEqual(e.exception.name, "CK_ERR_INVALID")
            self.assertIn("not stashed", str(e.exception))
            with self.assertRaises(ckalloc.Error):
                p.tag(x, "y", "sometimes")
            p.untag(x)
            p.free(x)
            self.assertEqual(p.stats()["num_stashes"], 1)


class PolicyTest(unittest.TestCase):
    """A policy file through Pool: its rules for tag names, and a mistake
    raised with FILE:LINE:COLUMN."""

    @isolated(HOST)
    def test_load_policy(self):
        import ckalloc
        import tempfile
        with tempfile.TemporaryDirectory() as d, ckalloc.Pool("backend=host,live=0") as p:
            path = os.path.join(d, "p.yaml")
            with open(path, "w") as f:
                f.write('version: 1\nrules:\n  - {match: "layers.*.mlp.act", tier: recompute}\n')
            self.assertEqual(p.policy_tier("layers.0.mlp.act"), "auto")
            p.load_policy(path)
            self.assertEqual(p.policy_tier("layers.0.mlp.act"), "recompute")
            self.assertEqual(p.policy_tier("embed"), "auto")
            with open(path, "w") as f:
                f.write("version: 1\nrules: [{match: x, tier: fast}]\n")
            with self.assertRaises(ckalloc.Error) as e:
                p.load_policy(path)
            self.assertIn("p.yaml:2:", str(e.exception))
            self.assertIn("unknown tier 'fast'", str(e.exception))
            self.assertEqual(p.policy_tier("layers.0.mlp.act"), "recompute")


class TrimTest(unittest.TestCase):
    @isolated(HOST)
    def test_trim_releases_the_cache_and_keeps_live_blocks(self):
        import ckalloc

        lib = require_preload(self)
        keep = lib.ckalloc_torch_malloc(4 * MiB, 0, None)
        self.assertTrue(keep)
        ctypes.memset(keep, 0x3C, 4 * MiB)
        big = lib.ckalloc_torch_malloc(16 * MiB, 0, None)
        self.assertTrue(big)
        ctypes.memset(big, 1, 16 * MiB)
        lib.ckalloc_torch_free(big, 16 * MiB, 0, None)
        before = ckalloc.stats()
        cached = before["physical_bytes"]["current"] - before["allocated_bytes"]["current"]
        self.assertGreaterEqual(cached, 16 * MiB)  # the freed block stays cached

        released = ckalloc.trim()
        after = ckalloc.stats()
        self.assertIsInstance(released, int)
        self.assertGreaterEqual(released, 16 * MiB)
        self.assertEqual(released,
                         before["physical_bytes"]["current"] - after["physical_bytes"]["current"])
        self.assertEqual(after["allocated_bytes"]["current"], 4 * MiB)
        self.assertEqual(byte_at(keep, 0), 0x3C)
        self.assertEqual(byte_at(keep, 4 * MiB - 1), 0x3C)
        self.assertEqual(ckalloc.trim(device=0), 0)  # nothing left to give back
        lib.ckalloc_torch_free(keep, 4 * MiB, 0, None)

    @isolated(HOST)
    def test_empty_cache_is_trim(self):
        import ckalloc
        import ckalloc.torch as ct

        self.assertNotIn("torch", sys.modules)
        lib = require_preload(self)
        for call in (ckalloc.empty_cache, ct.empty_cache):
            p = lib.ckalloc_torch_malloc(8 * MiB, 0, None)
            self.assertTrue(p)
            lib.ckalloc_torch_free(p, 8 * MiB, 0, None)
            phys = ckalloc.stats()["physical_bytes"]["current"]
            self.assertGreaterEqual(phys, 8 * MiB)
            n = call()
            self.assertEqual(n, phys - ckalloc.stats()["physical_bytes"]["current"], call)
            self.assertGreaterEqual(n, 8 * MiB, call)
        self.assertNotIn("torch", sys.modules)  # empty_cache needs no torch

    @isolated(HOST)
    def test_trim_own_pool(self):
        import ckalloc

        with ckalloc.Pool("backend=host") as pool:
            p = pool.malloc(6 * MiB)
            pool.free(p)
            phys = pool.stats()["physical_bytes"]["current"]
            self.assertGreaterEqual(phys, 6 * MiB)
            self.assertEqual(ckalloc.empty_cache(pool=pool), phys)
            self.assertEqual(pool.stats()["physical_bytes"]["current"], 0)
            self.assertEqual(ckalloc.trim(pool=pool.handle), 0)


class SnapshotTest(unittest.TestCase):
    @isolated(HOST)
    def test_snapshot_is_what_ckalloc_stat_reads(self):
        import ckalloc

        lib = require_preload(self)
        n = 3 * MiB + 5
        p = lib.ckalloc_torch_malloc(n, 0, None)
        self.assertTrue(p)
        with tempfile.TemporaryDirectory() as d:
            ckalloc.snapshot(os.path.join(d, "snap-%p.json"))
            path = os.path.join(d, "snap-%d.json" % os.getpid())
            self.assertEqual(os.listdir(d), [os.path.basename(path)])  # no temporary left
            with open(path) as f:
                j = json.load(f)
            self.assertEqual(j["format"], "ckalloc-snapshot")
            self.assertEqual(j["version"], 1)
            self.assertEqual(j["pid"], os.getpid())
            self.assertEqual(j["reason"], "api")
            self.assertEqual(len(j["pools"]), 1)
            pool = j["pools"][0]
            self.assertEqual(pool["device"], 0)
            self.assertEqual(pool["backend"], "host")
            self.assertEqual(pool["stats"]["allocated_bytes"]["current"], round512(n))
            live = [b for b in pool["blocks"] if b["state"] == "live"]
            self.assertEqual([(int(b["addr"], 16), b["requested"]) for b in live], [(p, n)])

            # A pathlib path, for an explicit pool.
            own = pathlib.Path(d) / "own.json"
            ckalloc.preload_pool(0).snapshot(own)
            self.assertEqual(json.loads(own.read_text())["pools"][0]["stats"]["allocation"]["current"], 1)

            tool = ckalloc_stat()
            if tool is None:
                self.skipTest("ckalloc-stat is not built (CKALLOC_BUILD_DIR unset)")
            r = subprocess.run([tool, "--json", path], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            rep = json.loads(r.stdout)
            self.assertEqual(rep["pid"], os.getpid())
            self.assertEqual(rep["pools"][0]["allocated_bytes"]["current"], round512(n))
            self.assertEqual(rep["pools"][0]["requested_bytes"]["current"], n)
        lib.ckalloc_torch_free(p, n, 0, None)

    @isolated(HOST)
    def test_snapshot_errors_say_why(self):
        import ckalloc

        require_preload(self)
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "no-such-dir", "s.json")
            with self.assertRaises(ckalloc.Error) as cm:
                ckalloc.snapshot(bad)
            self.assertEqual(cm.exception.name, "CK_ERR_IO")
            self.assertIn("no-such-dir", str(cm.exception))
            self.assertEqual(os.listdir(d), [])
            # No path, and the pool was created without snapshot=.
            with self.assertRaises(ckalloc.Error) as cm:
                ckalloc.snapshot()
            self.assertEqual(cm.exception.name, "CK_ERR_INVALID")
            self.assertIn("snapshot", cm.exception.message)
            with self.assertRaises(ValueError):
                ckalloc.snapshot("")

    def test_snapshot_without_path_writes_the_configured_file(self):
        require_preload_path(self)
        with tempfile.TemporaryDirectory() as d:
            want = os.path.join(d, "conf.json")
            code = ("import ckalloc; lib = ckalloc.library(); "
                    "p = lib.ckalloc_torch_malloc(5000, 0, None); assert p; "
                    "ckalloc.snapshot(); import os, json; "
                    "j = json.load(open(%r)); "
                    "print(j['reason'], j['pools'][0]['stats']['allocation']['current']); "
                    "os._exit(0)" % want)  # _exit: no snapshot at exit over ours
            r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=60,
                               env=child_env({"CKALLOC_CONF": "backend=host,snapshot=" + want}))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, "api 1\n")
            self.assertEqual(r.stderr, "")


class TorchNamesTest(unittest.TestCase):
    @isolated(HOST)
    def test_small_and_large_pool_keys_are_absent_and_say_why(self):
        import ckalloc.torch as ct

        lib = require_preload(self)
        p = lib.ckalloc_torch_malloc(MiB, 0, None)
        m = ct.memory_stats()
        self.assertEqual(m["allocated_bytes.all.current"], MiB)
        self.assertFalse([k for k in m if "small_pool" in k or "large_pool" in k])
        for key in ("allocated_bytes.small_pool.peak", "reserved_bytes.large_pool.current"):
            self.assertNotIn(key, m)
            self.assertIsNone(m.get(key))
            with self.assertRaises(KeyError) as cm:
                m[key]
            text = str(cm.exception)
            self.assertIn(key, text)
            self.assertIn(key.replace(".small_pool.", ".all.").replace(".large_pool.", ".all."), text)
            self.assertIn("does not split", text)
        with self.assertRaises(KeyError) as cm:
            m["no.such.key"]
        self.assertEqual(cm.exception.args, ("no.such.key",))
        self.assertEqual(json.loads(json.dumps(m)), dict(m))
        lib.ckalloc_torch_free(p, MiB, 0, None)

    @isolated(HOST)
    def test_reset_peak_memory_stats_and_format_stats(self):
        import ckalloc
        import ckalloc.torch as ct

        lib = require_preload(self)
        p = lib.ckalloc_torch_malloc(4 * MiB, 0, None)
        q = lib.ckalloc_torch_malloc(MiB, 0, None)
        lib.ckalloc_torch_free(p, 4 * MiB, 0, None)
        self.assertEqual(ct.memory_stats()["allocated_bytes.all.peak"], 5 * MiB)
        self.assertIsNone(ct.reset_peak_memory_stats())
        m = ct.memory_stats()
        self.assertEqual(m["allocated_bytes.all.peak"], MiB)
        self.assertEqual(m["allocation.all.peak"], 1)
        self.assertEqual(m["allocated_bytes.all.allocated"], 5 * MiB)

        text = ckalloc.format_stats(json=True)
        self.assertIsInstance(text, str)
        self.assertEqual(text.count("\n"), 1)
        self.assertTrue(text.endswith("\n"))
        self.assertEqual(json.loads(text)["allocated_bytes"]["peak"], MiB)
        buf = io.StringIO()
        ckalloc.print_stats(json=True, file=buf)
        self.assertEqual(json.loads(buf.getvalue())["allocated_bytes"], json.loads(text)["allocated_bytes"])
        table = ckalloc.format_stats()
        self.assertRegex(table, r"(?m)^allocated_bytes\s")
        self.assertIn("backend host", table)
        lib.ckalloc_torch_free(q, MiB, 0, None)

    def test_exported_names_exist(self):
        import ckalloc
        import ckalloc.torch as ct

        for mod in (ckalloc, ct):
            for name in mod.__all__:
                self.assertTrue(hasattr(mod, name), "%s.%s" % (mod.__name__, name))
        for name in ("trim", "empty_cache", "snapshot", "format_stats"):
            self.assertIn(name, ckalloc.__all__)
        for name in ("empty_cache", "reset_peak_memory_stats"):
            self.assertIn(name, ct.__all__)


class ReadmeTest(unittest.TestCase):
    def test_every_call_in_the_python_section_exists(self):
        import ckalloc
        import ckalloc.torch

        from ckalloc_testutil import SRC

        with open(os.path.join(SRC, "README.md")) as f:
            text = f.read()
        start = text.index("\n## Python\n")
        section = text[start:text.index("\n## ", start + 1)]
        calls = set(re.findall(r"\bckalloc\.((?:torch\.)?\w+)\(", section))
        # The calls the issue asked to document are there, and each is real.
        for want in ("format_stats", "reset_peak_stats", "empty_cache", "trim", "snapshot",
                     "torch.reset_peak_memory_stats", "torch.empty_cache", "torch.memory_stats"):
            self.assertIn(want, calls)
        for name in sorted(calls):
            obj = ckalloc
            for part in name.split("."):
                self.assertTrue(hasattr(obj, part), "README calls ckalloc.%s, which does not exist" % name)
                obj = getattr(obj, part)
            self.assertTrue(callable(obj), name)


class NoDriverTest(unittest.TestCase):
    """Without backend=host the preload library wants libcuda.so.1; this
    machine may have none. stats() must then raise with the reason and write
    nothing to fd 1 or 2; an allocation (which falls back to the driver)
    still warns once."""

    def run_child(self, code):
        lib = require_preload_path(self)
        env = child_env({"CKALLOC_CONF": "", "CKALLOC_LIBRARY": lib})
        return subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60, env=env)

    def test_stats_without_a_driver_prints_nothing(self):
        with tempfile.TemporaryDirectory() as d:
            msg = os.path.join(d, "msg")
            code = (
                "import ckalloc\n"
                "try:\n"
                "    ckalloc.stats()\n"
                "except ckalloc.Error as e:\n"
                "    open(%r, 'w').write(str(e))\n"
                "for call in (ckalloc.stats, ckalloc.trim, ckalloc.format_stats):\n"
                "    try:\n"
                "        call()\n"
                "    except ckalloc.Error:\n"
                "        pass\n" % msg)
            r = self.run_child(code)
            self.assertEqual(r.returncode, 0, r.stderr)
            if not os.path.exists(msg):
                self.skipTest("a CUDA driver and device are present: the pool was created")
            self.assertEqual(r.stdout, "")
            self.assertEqual(r.stderr, "")
            with open(msg) as f:
                text = f.read()
            self.assertIn("ckalloc_preload_pool(0)", text)
            self.assertGreater(len(text), len("ckalloc_preload_pool(0): "))
            self.assertNotIn("\n", text)

    def test_an_allocation_without_a_driver_still_warns_once(self):
        code = (
            "import ckalloc, sys\n"
            "try:\n"
            "    ckalloc.stats()\n"
            "except ckalloc.Error:\n"
            "    pass\n"
            "else:\n"
            "    print('pool'); sys.exit(0)\n"
            "lib = ckalloc.library()\n"
            "assert not lib.ckalloc_torch_malloc(4096, 0, None)\n"
            "assert not lib.ckalloc_torch_malloc(4096, 0, None)\n")
        r = self.run_child(code)
        self.assertEqual(r.returncode, 0, r.stderr)
        if r.stdout == "pool\n":
            self.skipTest("a CUDA driver and device are present: the pool was created")
        self.assertEqual(r.stdout, "")
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        # The pluggable allocator's calls never reach the driver: the line
        # says what PyTorch sees instead.
        self.assertRegex(lines[0], r"^ckalloc: no pool for device 0 \(.+\); ckalloc_torch_malloc "
                                   r"returns NULL, which PyTorch reports as out of memory$")


if __name__ == "__main__":
    unittest.main()
