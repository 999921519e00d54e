"""ckalloc from Python: stats of the process's ckalloc pools, through ctypes.

No build step: the package loads the ckalloc shared library at first use.

    import ckalloc
    ckalloc.stats()            # {"allocated_bytes": {"current": ..., "peak": ...}, ...}
    ckalloc.print_stats(json=True)
    ckalloc.reset_peak_stats()
    ckalloc.empty_cache()      # release the cached memory (ck_trim); bytes given back
    ckalloc.snapshot("run.json")   # JSON snapshot; ckalloc-stat run.json reads it

Which library is used (the first that applies):

1. the path in the environment variable CKALLOC_LIBRARY;
2. a libckalloc_preload.so already loaded in this process (LD_PRELOAD);
3. the installed layout: this package at <prefix>/share/ckalloc/python/ckalloc
   and the library in <prefix>/lib (or lib64, lib/<multiarch>);
4. the build tree of a source checkout: tools/python/ckalloc -> build/.

libckalloc_preload.so is preferred to libckalloc.so everywhere. Without the
preload library only explicit pools (ckalloc.Pool) work. When nothing is found,
importing still works and the first call raises ckalloc.LibraryNotFound, which
says to set CKALLOC_LIBRARY.

Errors from the library raise ckalloc.Error, carrying the ck_status name
(e.g. "CK_ERR_NOT_OWNED") and ck_last_error()'s sentence.
"""

import ctypes
import glob
import os
import sys
import threading

__all__ = [
    "Error",
    "LibraryNotFound",
    "Pool",
    "library",
    "library_path",
    "loaded_conf",
    "preload_pool",
    "stats",
    "print_stats",
    "format_stats",
    "reset_peak_stats",
    "trim",
    "empty_cache",
    "snapshot",
    "version",
    "current_device",
    "STAT_NAMES",
    "COUNT_NAMES",
]

PRELOAD_NAME = "libckalloc_preload.so"
PLAIN_NAME = "libckalloc.so"

# Where this package is installed, relative to the prefix (see
# tools/python/CMakeLists.txt); the installed copy also carries _install.py
# with the library directory relative to the package.
INSTALL_SUBDIR = os.path.join("share", "ckalloc", "python", "ckalloc")

# The ck_stat members of struct ck_stats, in the order of ck_print_stats's
# JSON object, and the plain counters after them.
# The tier engine's counters (ckalloc/tier.h), last in struct ck_stats.
TIER_STAT_NAMES = ("offloaded_bytes", "dropped_bytes", "moving_bytes", "host_bytes")
TIER_COUNT_NAMES = (
    "num_stashes",
    "num_fetches",
    "bytes_to_host",
    "bytes_to_device",
    "num_replays",
    "prefetch_hits",
    "prefetch_misses",
    "num_evictions",
    "fetch_wait_ns",
    "replay_ns",
)
STAT_NAMES = (
    "allocated_bytes",
    "requested_bytes",
    "active_bytes",
    "inactive_split_bytes",
    "reserved_bytes",
    "mapped_bytes",
    "physical_bytes",
    "allocation",
    "active",
    "inactive_split",
    "segment",
) + TIER_STAT_NAMES
COUNT_NAMES = (
    "largest_free",
    "num_alloc_retries",
    "num_ooms",
    "num_map_calls",
    "num_unmap_calls",
    "num_create_calls",
    "num_release_calls",
) + TIER_COUNT_NAMES


# The tier engine (ckalloc/tier.h): tiers by name or number.
TIERS = {"auto": 0, "keep": 1, "offload": 2, "recompute": 3}
TENSOR_STATES = ("resident", "moving_out", "offloaded", "dropped", "coming_back")
CK_TAG_MAX = 64


class ck_tensor_status(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("name", ctypes.c_char * CK_TAG_MAX),
        ("tier", ctypes.c_int),
        ("applied", ctypes.c_int),
        ("state", ctypes.c_int),
        ("stashed", ctypes.c_int),
        ("has_recipe", ctypes.c_int),
        ("size", ctypes.c_size_t),
        ("device_bytes", ctypes.c_size_t),
    ]


class Error(Exception):
    """A ckalloc call failed.

    status: the ck_status number (None when the call returns no status);
    name: its constant name ("CK_ERR_NOMEM"), or None;
    message: the library's sentence (ck_last_error());
    function: the C function that failed.
    """

    def __init__(self, function, message, status=None, name=None):
        self.function = function
        self.message = message
        self.status = status
        self.name = name
        # The library's sentences usually start with the function's name.
        text = message if message and message.startswith(function) else (
            "%s: %s" % (function, message) if message else function)
        super().__init__("%s: %s" % (name, text) if name else text)


class LibraryNotFound(Error):
    """No ckalloc shared library could be found or loaded."""

    def __init__(self, message):
        super().__init__("ckalloc", message)


# ---- the C structs ---------------------------------------------------------


class ck_stat(ctypes.Structure):
    _fields_ = [
        ("current", ctypes.c_int64),
        ("peak", ctypes.c_int64),
        ("allocated", ctypes.c_uint64),
        ("freed", ctypes.c_uint64),
    ]

    def as_dict(self):
        return {
            "current": self.current,
            "peak": self.peak,
            "allocated": self.allocated,
            "freed": self.freed,
        }


class ck_stats(ctypes.Structure):
    """struct ck_stats. struct_size is set on construction; the library fills
    only the fields this size covers, so newer libraries stay compatible."""

    _fields_ = [("struct_size", ctypes.c_size_t)]
    _fields_ += [
        (n, ck_stat)
        for n in (
            "allocation",
            "segment",
            "active",
            "inactive_split",
            "allocated_bytes",
            "reserved_bytes",
            "active_bytes",
            "inactive_split_bytes",
            "requested_bytes",
            "mapped_bytes",
            "physical_bytes",
        )
    ]
    _fields_ += [
        (n, ctypes.c_uint64)
        for n in (
            "num_alloc_retries",
            "num_ooms",
            "num_map_calls",
            "num_unmap_calls",
            "num_create_calls",
            "num_release_calls",
            "budget",
            "largest_free",
        )
    ]
    # The tier engine's (ckalloc/tier.h).
    _fields_ += [(n, ck_stat) for n in TIER_STAT_NAMES]
    _fields_ += [(n, ctypes.c_uint64) for n in TIER_COUNT_NAMES]

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.struct_size = ctypes.sizeof(ck_stats)


CK_FORMAT_TABLE = 0
CK_FORMAT_JSON = 1

# ---- finding and loading the library ---------------------------------------

_lock = threading.RLock()
_lib = None
_lib_path = None
_lib_conf = None


def _package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def _loaded_in_process():
    """Path of a libckalloc_preload.so mapped into this process, or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    if os.path.basename(path).startswith(PRELOAD_NAME):
                        return path
    except OSError:
        pass
    return None


def _initial_env(name):
    """The value of an environment variable when the process started (what a
    library loaded with LD_PRELOAD saw), or None."""
    try:
        with open("/proc/self/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                k, sep, v = item.partition(b"=")
                if sep and k.decode(errors="replace") == name:
                    return v.decode(errors="replace")
    except OSError:
        pass
    return None


def _first_existing(dirs):
    for name in (PRELOAD_NAME, PLAIN_NAME):
        for d in dirs:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return p
    return None


def _installed_candidates():
    """Library directories of an installed layout around this package."""
    pkg = _package_dir()
    dirs = []
    try:
        from . import _install  # written by `cmake --install`

        dirs.append(os.path.normpath(os.path.join(pkg, _install.LIBDIR_FROM_PACKAGE)))
    except ImportError:
        pass
    if pkg.endswith(os.sep + INSTALL_SUBDIR):
        prefix = pkg[: -len(INSTALL_SUBDIR) - 1]
        multiarch = getattr(sys.implementation, "_multiarch", None)
        dirs.append(os.path.join(prefix, "lib"))
        dirs.append(os.path.join(prefix, "lib64"))
        if multiarch:
            dirs.append(os.path.join(prefix, "lib", multiarch))
        dirs.extend(sorted(glob.glob(os.path.join(prefix, "lib", "*-linux-gnu*"))))
    return dirs


def _build_tree_candidates():
    """tools/python/ckalloc -> <checkout>/build (and build/preload)."""
    root = os.path.normpath(os.path.join(_package_dir(), "..", "..", ".."))
    if not os.path.isfile(os.path.join(root, "include", "ckalloc", "ckalloc.h")):
        return []
    build = os.path.join(root, "build")
    return [build, os.path.join(build, "preload")]


def find_library():
    """(path, how) of the library ckalloc would load, without loading it.
    path is None when the library is linked into the executable itself.
    Raises LibraryNotFound."""
    env = os.environ.get("CKALLOC_LIBRARY")
    if env:
        if not os.path.isfile(env):
            raise LibraryNotFound(
                "CKALLOC_LIBRARY is set to '%s', which is not a file; point it at "
                "libckalloc_preload.so (or libckalloc.so)" % env
            )
        return env, "CKALLOC_LIBRARY"
    p = _loaded_in_process()
    if p:
        return p, "loaded"
    try:
        if hasattr(ctypes.CDLL(None), "ckalloc_preload_pool"):
            return None, "executable"
    except OSError:
        pass
    p = _first_existing(_installed_candidates())
    if p:
        return p, "installed"
    p = _first_existing(_build_tree_candidates())
    if p:
        return p, "build tree"
    raise LibraryNotFound(
        "no ckalloc library found (not loaded with LD_PRELOAD, not installed next "
        "to this package at %s, no build tree); set CKALLOC_LIBRARY to the path of "
        "libckalloc_preload.so" % _package_dir()
    )


def _declare(lib):
    vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    sigs = {
        "ck_version": (ctypes.c_char_p, []),
        "ck_status_str": (ctypes.c_char_p, [i]),
        "ck_last_error": (ctypes.c_char_p, []),
        "ck_pool_create_conf": (i, [ctypes.POINTER(vp), ctypes.c_char_p]),
        "ck_pool_destroy": (i, [vp]),
        "ck_pool_backend": (ctypes.c_char_p, [vp]),
        "ck_malloc": (i, [vp, ctypes.POINTER(vp), sz, vp]),
        "ck_free": (i, [vp, vp, vp]),
        "ck_record_stream": (i, [vp, vp, vp]),
        "ck_trim": (i, [vp, ctypes.POINTER(sz)]),
        "ck_snapshot_write": (i, [vp, ctypes.c_char_p]),
        "ck_get_stats": (i, [vp, ctypes.POINTER(ck_stats)]),
        "ck_reset_peak_stats": (i, [vp]),
        "ck_print_stats": (i, [vp, vp, i]),
        "ck_stream_synchronize": (i, [vp, vp]),
        "ck_tag": (i, [vp, vp, ctypes.c_char_p, i]),
        "ck_untag": (i, [vp, vp]),
        "ck_stash": (i, [vp, vp, vp]),
        "ck_fetch": (i, [vp, vp, vp]),
        "ck_step_begin": (i, [vp]),
        "ck_step_end": (i, [vp]),
        "ck_tensor_info": (i, [vp, vp, ctypes.POINTER(ck_tensor_status)]),
        "ck_policy_load": (i, [vp, ctypes.c_char_p]),
        "ck_policy_tier": (i, [vp, ctypes.c_char_p, ctypes.POINTER(i)]),
        "ckalloc_preload_pool": (vp, [i]),
        "ckalloc_torch_malloc": (vp, [ctypes.c_ssize_t, i, vp]),
        "ckalloc_torch_free": (None, [vp, ctypes.c_ssize_t, i, vp]),
    }
    for name, (res, args) in sigs.items():
        if hasattr(lib, name):
            f = getattr(lib, name)
            f.restype = res
            f.argtypes = args
    if not hasattr(lib, "ck_get_stats"):
        raise LibraryNotFound("%s does not export the ckalloc API (ck_get_stats)" % (lib._name,))


def _load(path=None):
    """Load (once) and return the library; path overrides the finder."""
    global _lib, _lib_path, _lib_conf
    with _lock:
        if _lib is not None:
            if path and os.path.realpath(path) != os.path.realpath(_lib_path or ""):
                raise RuntimeError(
                    "ckalloc: %s is already loaded; cannot switch to %s" % (_lib_path, path)
                )
            return _lib
        how = "argument"
        if not path:
            path, how = find_library()
        try:
            lib = ctypes.CDLL(path) if path else ctypes.CDLL(None)
        except OSError as e:
            raise LibraryNotFound(
                "cannot load %s (%s): %s; set CKALLOC_LIBRARY to the path of "
                "libckalloc_preload.so" % (path, how, e)
            )
        _declare(lib)
        if how in ("loaded", "executable"):
            conf = _initial_env("CKALLOC_CONF")  # what the preloaded library read
        else:
            conf = os.environ.get("CKALLOC_CONF")
        _lib, _lib_path, _lib_conf = lib, path, conf
        return lib


def library():
    """The loaded ctypes.CDLL (loading it on first use)."""
    return _load()


def library_path():
    """Path of the library in use (loading it on first use); None when it is
    linked into the executable."""
    _load()
    return _lib_path


def is_loaded():
    """True once this package has loaded the library."""
    return _lib is not None


def loaded_conf():
    """The CKALLOC_CONF the loaded library read (None if unset or not loaded)."""
    return _lib_conf


def _check(lib, fn, status):
    if status != 0:
        name = lib.ck_status_str(status).decode()
        raise Error(fn, lib.ck_last_error().decode(errors="replace"), status, name)


# ---- pools -----------------------------------------------------------------


def _as_ptr(p):
    if p is None:
        return None
    if isinstance(p, ctypes.c_void_p):
        return p.value
    return int(p)


class Pool:
    """A ck_pool. Pool(conf) creates a pool of its own (closed by close() or
    a with-block); preload_pool(device) wraps the process's pool (never
    destroyed from Python). Pointers and streams are ints (or None).
    Methods: malloc, free, record_stream, synchronize, trim, snapshot,
    stats, raw_stats, format_stats, print_stats, reset_peak_stats, close;
    the tier engine's tag, untag, stash, fetch, step_begin, step_end,
    tensor_info."""

    def __init__(self, conf=None, *, _handle=None, _owned=True, _device=None):
        self._lib = _load()
        self.device = _device
        if _handle is not None:
            self._h = ctypes.c_void_p(_handle)
            self._owned = _owned
            return
        h = ctypes.c_void_p()
        c = conf.encode() if isinstance(conf, str) else conf
        _check(self._lib, "ck_pool_create_conf", self._lib.ck_pool_create_conf(ctypes.byref(h), c))
        self._h, self._owned = h, True

    @property
    def handle(self):
        """The ck_pool * as an int."""
        if self._h is None:
            raise Error("ckalloc.Pool", "the pool is closed")
        return self._h.value

    @property
    def backend(self):
        return self._lib.ck_pool_backend(self.handle).decode()

    def malloc(self, size, stream=None):
        p = ctypes.c_void_p()
        _check(self._lib, "ck_malloc", self._lib.ck_malloc(self.handle, ctypes.byref(p), size, _as_ptr(stream)))
        return p.value

    def free(self, ptr, stream=None):
        _check(self._lib, "ck_free", self._lib.ck_free(self.handle, _as_ptr(ptr), _as_ptr(stream)))

    def record_stream(self, ptr, stream):
        _check(self._lib, "ck_record_stream",
               self._lib.ck_record_stream(self.handle, _as_ptr(ptr), _as_ptr(stream)))

    def synchronize(self, stream=None):
        """Wait for the work queued on stream (None: the default stream)."""
        _check(self._lib, "ck_stream_synchronize",
               self._lib.ck_stream_synchronize(self.handle, _as_ptr(stream)))

    # ---- the tier engine (ckalloc/tier.h) ----

    def tag(self, ptr, name, tier="auto"):
        """Name the allocation at ptr and give its tier: "auto", "keep",
        "offload", "recompute" (or 0..3)."""
        t = TIERS.get(tier, tier) if isinstance(tier, str) else int(tier)
        if isinstance(tier, str) and tier not in TIERS:
            raise Error("ck_tag", "tier %r is not one of %s" % (tier, ", ".join(TIERS)))
        _check(self._lib, "ck_tag", self._lib.ck_tag(self.handle, _as_ptr(ptr), name.encode(), t))

    def untag(self, ptr):
        _check(self._lib, "ck_untag", self._lib.ck_untag(self.handle, _as_ptr(ptr)))

    def stash(self, ptr, stream=None):
        """Forward is done with ptr: its tier applies (no waiting)."""
        _check(self._lib, "ck_stash", self._lib.ck_stash(self.handle, _as_ptr(ptr), _as_ptr(stream)))

    def fetch(self, ptr, stream=None):
        """Backward needs ptr on stream: it is back for work queued there."""
        _check(self._lib, "ck_fetch", self._lib.ck_fetch(self.handle, _as_ptr(ptr), _as_ptr(stream)))

    def step_begin(self):
        _check(self._lib, "ck_step_begin", self._lib.ck_step_begin(self.handle))

    def step_end(self):
        _check(self._lib, "ck_step_end", self._lib.ck_step_end(self.handle))

    def load_policy(self, path):
        """Put the policy file at path in force (ckalloc/policy.h): AUTO tags
        follow its rules. A mistake raises Error with FILE:LINE:COLUMN."""
        _check(self._lib, "ck_policy_load", self._lib.ck_policy_load(self.handle, os.fsencode(path)))

    def policy_tier(self, tag):
        """The tier the policy in force gives a tag name ("auto": no rule)."""
        t = ctypes.c_int(0)
        _check(self._lib, "ck_policy_tier",
               self._lib.ck_policy_tier(self.handle, tag.encode(), ctypes.byref(t)))
        return {v: k for k, v in TIERS.items()}.get(t.value, t.value)

    def tensor_info(self, ptr):
        """What the tier engine knows of the tagged tensor at ptr, as a dict:
        name, tier, applied, state, stashed, has_recipe, size, device_bytes."""
        s = ck_tensor_status()
        s.struct_size = ctypes.sizeof(ck_tensor_status)
        _check(self._lib, "ck_tensor_info",
               self._lib.ck_tensor_info(self.handle, _as_ptr(ptr), ctypes.byref(s)))
        names = {v: k for k, v in TIERS.items()}
        return {
            "name": s.name.decode(errors="replace"),
            "tier": names.get(s.tier, s.tier),
            "applied": names.get(s.applied, s.applied),
            "state": TENSOR_STATES[s.state] if 0 <= s.state < len(TENSOR_STATES) else s.state,
            "stashed": bool(s.stashed),
            "has_recipe": bool(s.has_recipe),
            "size": s.size,
            "device_bytes": s.device_bytes,
        }

    def trim(self):
        """Release every whole free chunk; returns the bytes given back."""
        n = ctypes.c_size_t()
        _check(self._lib, "ck_trim", self._lib.ck_trim(self.handle, ctypes.byref(n)))
        return n.value

    def snapshot(self, path=None):
        """Write the pool's JSON snapshot (ck_snapshot_write: format
        "ckalloc-snapshot", what ckalloc-stat FILE reads) to path, a str or
        os.PathLike; "%p" in it becomes the pid, "%d" the device, "%%" a '%'.
        path None writes the pool's own snapshot file (config key snapshot).
        Raises Error (CK_ERR_IO, saying why) when the file cannot be written."""
        c = None if path is None else os.fsencode(path)
        if c is not None and not c:
            raise ValueError("ckalloc snapshot: path is empty")
        _check(self._lib, "ck_snapshot_write", self._lib.ck_snapshot_write(self.handle, c))

    def raw_stats(self):
        """The struct ck_stats as filled by ck_get_stats."""
        s = ck_stats()
        _check(self._lib, "ck_get_stats", self._lib.ck_get_stats(self.handle, ctypes.byref(s)))
        return s

    def stats(self):
        """Nested dict with the keys of ck_print_stats's JSON object."""
        s = self.raw_stats()
        d = {"version": version(), "backend": self.backend, "budget": s.budget}
        for n in STAT_NAMES:
            d[n] = getattr(s, n).as_dict()
        for n in COUNT_NAMES:
            d[n] = getattr(s, n)
        # The two ratios, one definition each (README "Stats", alloc/ratios.h).
        a, r = max(0, s.allocated_bytes.current), max(0, s.reserved_bytes.current)
        d["fragmentation"] = 1.0 - a / r if 0 < r and a < r else 0.0
        req = s.requested_bytes.peak
        d["peak_overhead"] = s.physical_bytes.peak / req if req > 0 else 0.0
        return d

    def reset_peak_stats(self):
        _check(self._lib, "ck_reset_peak_stats", self._lib.ck_reset_peak_stats(self.handle))

    def format_stats(self, json=False):
        """ck_print_stats's output as a string (table, or one JSON line)."""
        return _format_stats(self._lib, self.handle, json)

    def print_stats(self, json=False, file=None):
        text = self.format_stats(json)
        (file or sys.stdout).write(text)

    def close(self):
        if self._h is not None and self._owned:
            h, self._h = self._h, None
            _check(self._lib, "ck_pool_destroy", self._lib.ck_pool_destroy(h))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        what = "device %s" % self.device if self.device is not None else "own"
        return "<ckalloc.Pool %s %#x>" % (what, self._h.value or 0) if self._h else "<ckalloc.Pool closed>"


_libc = None


def _format_stats(lib, handle, as_json):
    """Run ck_print_stats into an open_memstream buffer and return the text."""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None)
        libc.open_memstream.restype = ctypes.c_void_p
        libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.free.argtypes = [ctypes.c_void_p]
        _libc = libc
    buf, size = ctypes.c_void_p(), ctypes.c_size_t()
    f = _libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    if not f:
        raise OSError(ctypes.get_errno(), "open_memstream failed")
    try:
        st = lib.ck_print_stats(handle, f, CK_FORMAT_JSON if as_json else CK_FORMAT_TABLE)
        err = lib.ck_last_error().decode(errors="replace") if st else ""
    finally:
        _libc.fclose(f)
        text = ctypes.string_at(buf.value, size.value).decode() if buf.value else ""
        _libc.free(buf)
    if st:
        raise Error("ck_print_stats", err, st, lib.ck_status_str(st).decode())
    return text


def current_device():
    """The current CUDA device when torch is imported and CUDA is initialised,
    else 0."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_initialized():
                return int(torch.cuda.current_device())
        except Exception:
            pass
    return 0


_preload_pools = {}


def preload_pool(device=None):
    """The process's pool for device (ckalloc_preload_pool), created on first
    use from CKALLOC_CONF. Needs libckalloc_preload.so."""
    lib = _load()
    dev = current_device() if device is None else int(device)
    with _lock:
        p = _preload_pools.get(dev)
        if p is not None:
            return p
        if not hasattr(lib, "ckalloc_preload_pool"):
            raise Error(
                "ckalloc_preload_pool",
                "%s is not libckalloc_preload.so (no per-device pools); set "
                "CKALLOC_LIBRARY to libckalloc_preload.so or pass pool=" % (_lib_path,),
            )
        h = lib.ckalloc_preload_pool(dev)
        if not h:
            raise Error("ckalloc_preload_pool(%d)" % dev, lib.ck_last_error().decode(errors="replace"))
        p = Pool(_handle=h, _owned=False, _device=dev)
        _preload_pools[dev] = p
        return p


def _pool(device, pool):
    if pool is None:
        return preload_pool(device)
    if isinstance(pool, Pool):
        return pool
    h = _as_ptr(pool)
    if not h:
        raise Error("ckalloc", "pool is NULL")
    return Pool(_handle=h, _owned=False)


# ---- module-level API ------------------------------------------------------


def version():
    """The loaded library's version, "MAJOR.MINOR.PATCH"."""
    return _load().ck_version().decode()


def stats(device=None, pool=None):
    """Stats of the pool for device (default: current_device()), or of pool
    (a Pool, or a ck_pool * as an int), as a dict nested like
    ck_print_stats's JSON: {"allocated_bytes": {"current", "peak",
    "allocated", "freed"}, ..., "num_ooms": n, "budget": n, "largest_free": n}."""
    return _pool(device, pool).stats()


def print_stats(device=None, json=False, file=None, pool=None):
    """ck_print_stats to file (default sys.stdout): a table, or one JSON line."""
    _pool(device, pool).print_stats(json=json, file=file)


def format_stats(device=None, json=False, pool=None):
    """ck_print_stats's output as a str: the aligned table (json=False), or
    one JSON object and a newline (json=True), the text print_stats writes."""
    return _pool(device, pool).format_stats(json=json)


def reset_peak_stats(device=None, pool=None):
    """Set every peak to its current value."""
    _pool(device, pool).reset_peak_stats()


def trim(device=None, pool=None):
    """Release the physical memory the pool for device (or pool) caches:
    ck_trim unmaps and frees every whole free chunk, after the streams that
    freed them have passed. Live allocations are untouched. Returns the
    bytes given back (an int, 0 when nothing was cached)."""
    return _pool(device, pool).trim()


def empty_cache(device=None, pool=None):
    """What torch.cuda.empty_cache() is under ckalloc, which that call does not
    reach (it trims PyTorch's or the driver's cache, not ckalloc's): the same
    as trim(). One device per call (default: current_device()). Returns the
    bytes given back."""
    return trim(device, pool)


def snapshot(path=None, device=None, pool=None):
    """Write a JSON snapshot of the pool for device (or pool) to path, in the
    format ck_snapshot_write writes and ckalloc-stat reads ("%p" in path
    becomes the pid, "%d" the device). path None: the pool's own snapshot file
    (config key snapshot). Raises Error naming the reason on failure."""
    _pool(device, pool).snapshot(path)
