"""ckalloc as PyTorch's CUDA allocator, and its stats under PyTorch's names.

    import ckalloc.torch
    ckalloc.torch.use("budget=20G")      # before the first CUDA allocation
    x = torch.empty(1 << 20, device="cuda")
    ckalloc.torch.memory_stats()["allocated_bytes.all.current"]

use() installs libckalloc_preload.so through
torch.cuda.memory.CUDAPluggableAllocator. The other set-up needs no code:
LD_PRELOAD=.../libckalloc_preload.so PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync;
memory_stats() works in both.

Importing this module does not import torch; the functions that need it do.
"""

import os

import ckalloc as _ck

__all__ = ["use", "memory_stats", "reset_peak_memory_stats", "empty_cache", "TORCH_STATS"]

MALLOC_FN = "ckalloc_torch_malloc"
FREE_FN = "ckalloc_torch_free"

# ckalloc stats reported under PyTorch's names (torch.cuda.memory_stats()).
TORCH_STATS = (
    "allocation",
    "segment",
    "active",
    "inactive_split",
    "allocated_bytes",
    "reserved_bytes",
    "active_bytes",
    "inactive_split_bytes",
    "requested_bytes",
)
_FIELDS = ("current", "peak", "allocated", "freed")

_allocator = None


class MemoryStats(dict):
    """memory_stats()'s dict. ckalloc keeps its counters for the whole pool,
    not per PyTorch pool, so there are no ".small_pool." / ".large_pool."
    keys; reading one raises a KeyError that says so and names the ".all."
    key to read instead (.get() and `in` behave as for any dict)."""

    def __missing__(self, key):
        if isinstance(key, str):
            for part in (".small_pool.", ".large_pool."):
                if part in key:
                    raise KeyError(
                        "%r: ckalloc does not split its stats into PyTorch's small_pool "
                        "(blocks <= 1 MiB) and large_pool; read %r, which counts both"
                        % (key, key.replace(part, ".all.")))
        raise KeyError(key)


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise RuntimeError(
            "ckalloc.torch needs PyTorch, which cannot be imported here (%s)" % e
        ) from None
    return torch


def _alloc_conf_backend():
    """The backend PYTORCH_CUDA_ALLOC_CONF asks for, or None."""
    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    for item in conf.split(","):
        k, sep, v = item.partition(":")
        if sep and k.strip() == "backend":
            return v.strip()
    return None


def use(conf="budget=20G", library=None):
    """Make ckalloc PyTorch's CUDA allocator (CUDAPluggableAllocator).

    conf: the CKALLOC_CONF the library reads when it is loaded (None leaves
    the environment as it is). library: path of libckalloc_preload.so
    (default: ckalloc's finder). Must run before torch initialises CUDA.
    Returns the CUDAPluggableAllocator.
    Raises RuntimeError when torch is missing, CUDA is already initialised,
    PYTORCH_CUDA_ALLOC_CONF selects another backend, or the library was
    already loaded with a different CKALLOC_CONF. A conf the library cannot
    parse ends the process (status 2, one line naming the key) when the
    library loads, as under LD_PRELOAD."""
    global _allocator
    backend = _alloc_conf_backend()
    if backend is not None and backend != "native":
        raise RuntimeError(
            "ckalloc.torch.use(): PYTORCH_CUDA_ALLOC_CONF asks for backend:%s; the "
            "pluggable allocator replaces the backend, so remove it (or use the "
            "LD_PRELOAD set-up with backend:cudaMallocAsync instead of use())" % backend
        )
    if conf is not None and not isinstance(conf, str):
        raise TypeError("conf must be a string or None")
    loaded = _ck.is_loaded() or _ck._loaded_in_process() is not None
    if loaded:
        _ck.library()
        had = _ck.loaded_conf()
        if conf is not None and (had or "") != conf:
            raise RuntimeError(
                "ckalloc.torch.use(conf=%r): the library %s is already loaded and read "
                "CKALLOC_CONF=%r at load time; call use() before anything loads ckalloc, "
                "or pass the same conf" % (conf, _ck.library_path(), had)
            )
    torch = _import_torch()
    if torch.cuda.is_initialized():
        raise RuntimeError(
            "ckalloc.torch.use(): CUDA is already initialised in this process; PyTorch "
            "cannot change its allocator after the first CUDA allocation, so call use() "
            "first thing (before any tensor goes to the GPU)"
        )
    mem = getattr(torch.cuda, "memory", None)
    if not hasattr(mem, "CUDAPluggableAllocator") or not hasattr(mem, "change_current_allocator"):
        raise RuntimeError(
            "ckalloc.torch.use(): PyTorch %s has no torch.cuda.memory.CUDAPluggableAllocator "
            "(PyTorch 2.0 or later); use the LD_PRELOAD set-up instead"
            % getattr(torch, "__version__", "?")
        )
    if not loaded and conf is not None:
        os.environ["CKALLOC_CONF"] = conf  # read by the library when it loads, just below
    lib = _ck._load(library)
    path = _ck.library_path()
    if path is None or not hasattr(lib, MALLOC_FN) or not hasattr(lib, FREE_FN):
        raise RuntimeError(
            "ckalloc.torch.use(): %s does not export %s/%s; it must be "
            "libckalloc_preload.so (set CKALLOC_LIBRARY or pass library=)"
            % (path or "the executable", MALLOC_FN, FREE_FN)
        )
    alloc = mem.CUDAPluggableAllocator(path, MALLOC_FN, FREE_FN)
    mem.change_current_allocator(alloc)
    _allocator = alloc
    return alloc


def memory_stats(device=None, pool=None):
    """ckalloc's stats for device as a flat dict with torch.cuda.memory_stats()'s
    key names ("allocated_bytes.all.current", ..., "num_alloc_retries",
    "num_ooms"), plus ckalloc's own keys under "ckalloc." (e.g.
    "ckalloc.physical_bytes.peak", "ckalloc.budget"). Does not need torch.
    No ".small_pool." / ".large_pool." keys: ckalloc does not count them
    apart, and reading one raises a KeyError naming the ".all." key.
    device None: the current CUDA device if torch has initialised CUDA, else 0."""
    s = _ck.stats(device=device, pool=pool)
    out = {}
    for name in TORCH_STATS:
        for f in _FIELDS:
            out["%s.all.%s" % (name, f)] = s[name][f]
    out["num_alloc_retries"] = s["num_alloc_retries"]
    out["num_ooms"] = s["num_ooms"]
    # PyTorch's counts of device allocations and frees: ckalloc's maps/unmaps.
    out["num_device_alloc"] = s["num_map_calls"]
    out["num_device_free"] = s["num_unmap_calls"]
    for name in ("mapped_bytes", "physical_bytes"):
        for f in _FIELDS:
            out["ckalloc.%s.%s" % (name, f)] = s[name][f]
    for name in _ck.COUNT_NAMES:
        if name not in ("num_alloc_retries", "num_ooms"):
            out["ckalloc." + name] = s[name]
    out["ckalloc.budget"] = s["budget"]
    out["ckalloc.fragmentation"] = s["fragmentation"]
    out["ckalloc.peak_overhead"] = s["peak_overhead"]
    return MemoryStats(sorted(out.items()))


def reset_peak_memory_stats(device=None, pool=None):
    """Like torch.cuda.reset_peak_memory_stats, for ckalloc's pool: every
    peak becomes its current value. Returns None."""
    _ck.reset_peak_stats(device=device, pool=pool)


def empty_cache(device=None, pool=None):
    """ckalloc's torch.cuda.empty_cache(): releases the physical memory the
    pool caches (ckalloc.trim). torch.cuda.empty_cache() does not reach
    ckalloc's cache in either set-up. Returns the bytes given back. Does not
    need torch."""
    return _ck.trim(device=device, pool=pool)

