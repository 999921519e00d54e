#!/usr/bin/env python3
"""The MLP activation chain, gate/up -> swiglu -> cast to bf16, as PyTorch
eager calls against one ck_replay (one fused kernel launch), called through
ctypes on torch tensors' data pointers on torch's current stream (a cuda
pool: pointers outside it are taken as given). Also a plain copy of the same
bytes, for the ratio to copy bandwidth.

Two eager forms are timed:
  eager_same_math  (silu(g.float()) * u.float()).to(bf16): the chain's own
                   arithmetic (fp32 in between, one rounding), 5 kernels;
                   its result is compared with ck's (within one bf16 ulp);
  eager_bf16       silu(g) * u in bf16, 2 kernels: what a model usually runs
                   (rounds twice, so its values differ slightly).

Prints one JSON line: {"bench": "replay_torch", ...} with, per size, the
milliseconds, speed-ups and GB/s (bytes read + written / time) and the ratio
to the copy's GB/s. Exits 77 without torch or a CUDA device.

    bench_replay_torch.py [--lib build/libckalloc.so] [--sizes-mib 16,64,256,1024]
"""
import argparse
import ctypes
import json
import os
import sys

CK_MAX_DIMS, CK_MAX_INPUTS, CK_MAX_STEPS = 4, 8, 8
CK_DTYPE_F32, CK_DTYPE_BF16 = 0, 2


def skip(why):
    print(json.dumps({"bench": "replay_torch", "skipped": why}))
    sys.exit(77)


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_int64 * CK_MAX_DIMS)]


class Step(ctypes.Structure):
    _fields_ = [("op", ctypes.c_int), ("dtype", ctypes.c_int), ("in_", ctypes.c_int * 3),
                ("eps", ctypes.c_float), ("alpha", ctypes.c_float), ("base", ctypes.c_float),
                ("p", ctypes.c_float), ("seed", ctypes.c_uint64), ("offset", ctypes.c_uint64)]


class Recipe(ctypes.Structure):
    _fields_ = [("n_inputs", ctypes.c_int), ("inputs", Tensor * CK_MAX_INPUTS),
                ("n_steps", ctypes.c_int), ("steps", Step * CK_MAX_STEPS)]


def load_lib(path):
    lib = ctypes.CDLL(path)
    lib.ck_pool_create_conf.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
    lib.ck_pool_destroy.argtypes = [ctypes.c_void_p]
    lib.ck_last_error.restype = ctypes.c_char_p
    lib.ck_op_find.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    lib.ck_recipe_init.argtypes = [ctypes.POINTER(Recipe)]
    lib.ck_recipe_init.restype = None
    lib.ck_replay.argtypes = [ctypes.c_void_p, ctypes.POINTER(Recipe), ctypes.c_void_p,
                              ctypes.c_size_t, ctypes.c_void_p]
    lib.ck_recipe_cost.argtypes = [ctypes.POINTER(Recipe), ctypes.POINTER(ctypes.c_double),
                                   ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)]
    return lib


def op_id(lib, name):
    v = ctypes.c_int()
    if lib.ck_op_find(name.encode(), ctypes.byref(v)) != 0:
        raise RuntimeError(lib.ck_last_error().decode())
    return v.value


def step(op, dtype, ins):
    s = Step()
    s.op, s.dtype = op, dtype
    for i in range(3):
        s.in_[i] = ins[i] if i < len(ins) else -1
    s.eps, s.alpha, s.base, s.p = 1e-6, 1.0, 10000.0, 0.0
    return s


def chain_recipe(lib, g, u):
    """swiglu(gate, up) in f32, then cast to bf16: one launch."""
    r = Recipe()
    lib.ck_recipe_init(ctypes.byref(r))
    for i, t in enumerate((g, u)):
        r.inputs[i].data = t.data_ptr()
        r.inputs[i].dtype = CK_DTYPE_BF16
        r.inputs[i].ndim = t.dim()
        for d in range(t.dim()):
            r.inputs[i].shape[d] = t.shape[d]
    r.n_inputs = 2
    r.steps[0] = step(op_id(lib, "swiglu"), CK_DTYPE_F32, [0, 1])
    r.steps[1] = step(op_id(lib, "cast"), CK_DTYPE_BF16, [-1])
    r.n_steps = 2
    return r


def time_ms(torch, fn, reps):
    fn()
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.environ.get("CKALLOC_LIB",
                                                    os.path.join(root, "build", "libckalloc.so")))
    ap.add_argument("--sizes-mib", default="16,64,256,1024",
                    help="size of one bf16 input tensor, MiB (comma-separated)")
    ap.add_argument("--hidden", type=int, default=11008, help="the MLP's intermediate size")
    args = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        skip("torch not installed")
    if not torch.cuda.is_available():
        skip("no CUDA device")
    if not os.path.exists(args.lib):
        print(f"bench_replay_torch: {args.lib} not found (build first, or --lib)", file=sys.stderr)
        return 2

    lib = load_lib(args.lib)
    torch.cuda.init()
    pool = ctypes.c_void_p()
    if lib.ck_pool_create_conf(ctypes.byref(pool), b"backend=cuda,va=1G") != 0:
        print("bench_replay_torch: " + lib.ck_last_error().decode(), file=sys.stderr)
        return 1

    results = []
    cols = args.hidden
    for mib in [int(s) for s in args.sizes_mib.split(",") if s]:
        rows = max(1, (mib << 20) // (2 * cols))
        gen = torch.Generator(device="cuda").manual_seed(1234)
        g = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16, generator=gen)
        u = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16, generator=gen)
        out = torch.empty_like(g)
        nbytes = g.numel() * g.element_size()
        reps = max(3, min(200, (4 << 30) // nbytes))
        r = chain_recipe(lib, g, u)
        rd, wr = ctypes.c_double(), ctypes.c_double()
        lib.ck_recipe_cost(ctypes.byref(r), None, ctypes.byref(rd), ctypes.byref(wr))
        moved = rd.value + wr.value

        def ck():
            s = torch.cuda.current_stream().cuda_stream
            if lib.ck_replay(pool, ctypes.byref(r), out.data_ptr(), nbytes, s) != 0:
                raise RuntimeError(lib.ck_last_error().decode())

        def eager_same():
            return (F.silu(g.float()) * u.float()).to(torch.bfloat16)

        def eager_bf16():
            return F.silu(g) * u

        def copy():
            out.copy_(g)

        ck_ms = time_ms(torch, ck, reps)
        same_ms = time_ms(torch, eager_same, reps)
        bf16_ms = time_ms(torch, eager_bf16, reps)
        copy_ms = time_ms(torch, copy, reps)

        ck()
        torch.cuda.current_stream().synchronize()
        ref = eager_same()
        diff = (out.float() - ref.float()).abs()
        ulp = torch.clamp(ref.float().abs(), min=2.0 ** -126) * 2.0 ** -7
        worst_ulps = float((diff / ulp).max())
        copy_gbps = 2 * nbytes / (copy_ms * 1e6)
        ck_gbps = moved / (ck_ms * 1e6)
        results.append({
            "mib": mib, "shape": [rows, cols], "reps": reps,
            "ck_ms": round(ck_ms, 4), "eager_same_math_ms": round(same_ms, 4),
            "eager_bf16_ms": round(bf16_ms, 4), "copy_ms": round(copy_ms, 4),
            "speedup_vs_eager_same_math": round(same_ms / ck_ms, 3),
            "speedup_vs_eager_bf16": round(bf16_ms / ck_ms, 3),
            "ck_gbps": round(ck_gbps, 1), "copy_gbps": round(copy_gbps, 1),
            "ratio_vs_copy": round(ck_gbps / copy_gbps, 3),
            "max_ulps_vs_eager_same_math": round(worst_ulps, 3),
        })
        del g, u, out, ref, diff, ulp
        torch.cuda.empty_cache()

    lib.ck_pool_destroy(pool)
    ok = all(x["max_ulps_vs_eager_same_math"] <= 1.0 for x in results)
    print(json.dumps({
        "bench": "replay_torch", "device": torch.cuda.get_device_name(),
        "torch": torch.__version__, "chain": "swiglu(gate, up) f32 -> cast bf16",
        "bytes": "read + written per call (ck_recipe_cost)", "matches_eager": ok,
        "sizes": results,
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
