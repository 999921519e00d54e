#!/usr/bin/env python3
"""A small transformer language model trained for a few steps on synthetic,
deterministic data, to compare PyTorch's own allocator with ckalloc.

    torch_train.py --mode plain       PyTorch's caching allocator
    torch_train.py --mode preload     run under LD_PRELOAD=.../libckalloc_preload.so
                                      PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync
    torch_train.py --mode pluggable   ckalloc.torch.use() (CUDAPluggableAllocator)
    torch_train.py --mode all --lib build/libckalloc_preload.so [--stat-tool ckalloc-stat]
        runs the three in subprocesses (preload with the environment above),
        runs `ckalloc-stat -p PID` on the preload run while it trains, and
        checks that the final losses match plain within --rtol.

Every run prints one JSON line: mode, per-step losses, final loss, peak
memory (plain: torch.cuda.max_memory_reserved; preload/pluggable: ckalloc's
reserved_bytes and physical_bytes peaks, read through the ckalloc package),
wall time. --mode all prints one line per run, the ckalloc-stat line and a
comparison line. Exit 0 pass, 1 fail, 2 bad usage, 77 skipped (no torch or no
CUDA device).

CKALLOC_TRAIN_PAUSE=SECONDS makes a run print {"event": "pause", "pid": ...}
on stderr half-way and sleep that long (for ckalloc-stat).
"""

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SKIP = 77


def log(msg):
    print("torch_train: " + msg, file=sys.stderr, flush=True)


def emit(obj):
    print(json.dumps(obj), flush=True)


def skip(mode, why):
    emit({"test": "torch_train", "mode": mode, "skipped": why})
    log("skipped: " + why)
    sys.exit(SKIP)


def import_ckalloc():
    try:
        import ckalloc  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(ROOT, "tools", "python"))
    import ckalloc
    import ckalloc.torch  # noqa: F401

    return ckalloc


def alloc_conf_backend():
    for item in os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "").split(","):
        k, sep, v = item.partition(":")
        if sep and k.strip() == "backend":
            return v.strip()
    return "native"


# --------------------------------------------------------------- one run --


def train(args):
    mode = args.mode
    # Deterministic cuBLAS needs this before cuBLAS starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    ck = None
    if mode == "preload":
        ck = import_ckalloc()
        if not ck._loaded_in_process():
            log("--mode preload must run under LD_PRELOAD=.../libckalloc_preload.so")
            sys.exit(2)
        if alloc_conf_backend() != "cudaMallocAsync":
            log("--mode preload needs PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync")
            sys.exit(2)
    elif mode == "plain" and "ckalloc" in os.environ.get("LD_PRELOAD", ""):
        log("--mode plain must not run under LD_PRELOAD=libckalloc_preload.so")
        sys.exit(2)
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError as e:
        skip(mode, "torch cannot be imported (%s)" % e)
    on_cpu = args.device == "cpu"
    if on_cpu and mode != "plain":
        log("--device cpu is for --mode plain only (a check of this script without a GPU)")
        sys.exit(2)
    if not on_cpu and not torch.cuda.is_available():
        skip(mode, "no CUDA device (torch.cuda.is_available() is False)")
    if mode == "pluggable":
        ck = import_ckalloc()
        ck.torch.use(conf=args.conf, library=args.lib)

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # The math attention kernel: deterministic forward and backward.
    for name in ("enable_flash_sdp", "enable_mem_efficient_sdp", "enable_cudnn_sdp"):
        if hasattr(torch.backends.cuda, name):
            getattr(torch.backends.cuda, name)(False)
    if hasattr(torch.backends.cuda, "enable_math_sdp"):
        torch.backends.cuda.enable_math_sdp(True)

    class LM(nn.Module):
        def __init__(self, vocab, d, layers, heads, seq):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(seq, d)
            layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True,
                                               norm_first=True)
            self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab)
            mask = torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1)
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, x):
            t = x.shape[1]
            h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
            h = self.enc(h, mask=self.mask[:t, :t])
            return self.head(self.norm(h))

    dev = torch.device("cpu") if on_cpu else torch.device("cuda", torch.cuda.current_device())
    sync = (lambda: None) if on_cpu else torch.cuda.synchronize
    model = LM(args.vocab, args.d_model, args.layers, args.heads, args.seq).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 1)
    # Learnable synthetic data: each sequence walks the vocabulary from a
    # random start with a random stride (1..7), with 5% random tokens mixed
    # in, so the loss has somewhere to go.
    shape = (args.steps, args.batch)
    start = torch.randint(0, args.vocab, shape + (1,), generator=gen)
    stride = torch.randint(1, 8, shape + (1,), generator=gen)
    data = (start + stride * torch.arange(args.seq + 1)) % args.vocab
    noise = torch.rand(data.shape, generator=gen) < 0.05
    data = torch.where(noise, torch.randint(0, args.vocab, data.shape, generator=gen), data)

    pause = float(os.environ.get("CKALLOC_TRAIN_PAUSE", "0") or 0)
    losses, step_s, paused = [], [], 0.0
    sync()
    t0 = time.perf_counter()
    for step in range(args.steps):
        ts = time.perf_counter()
        x = data[step].to(dev)
        inp, tgt = x[:, :-1], x[:, 1:]
        logits = model(inp)
        loss = F.cross_entropy(logits.reshape(-1, args.vocab), tgt.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())  # synchronises
        step_s.append(time.perf_counter() - ts)
        if pause > 0 and step == args.steps // 2:
            print(json.dumps({"event": "pause", "pid": os.getpid(), "step": step, "seconds": pause}),
                  file=sys.stderr, flush=True)
            tp = time.perf_counter()
            time.sleep(pause)
            paused += time.perf_counter() - tp
    sync()
    wall = time.perf_counter() - t0 - paused

    out = {
        "test": "torch_train",
        "mode": mode,
        # No NaN, and it learned something.
        "ok": all(v == v for v in losses) and losses[-1] < losses[0],
        "device": "cpu" if on_cpu else torch.cuda.get_device_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "alloc_backend": alloc_conf_backend() if mode != "pluggable" else "pluggable",
        "steps": args.steps,
        "shape": {"layers": args.layers, "d_model": args.d_model, "vocab": args.vocab,
                  "seq": args.seq, "batch": args.batch},
        "params": sum(p.numel() for p in model.parameters()),
        "losses": losses,
        "final_loss": losses[-1],
        "wall_s": round(wall, 4),
        "step_ms_median": round(1000 * statistics.median(step_s[1:] or step_s), 3),
    }
    if on_cpu:
        out["peak_reserved_bytes"] = out["peak_allocated_bytes"] = out["peak_physical_bytes"] = None
    elif mode == "plain":
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(dev)
        out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(dev)
        out["peak_physical_bytes"] = None
    else:
        s = ck.stats(device=dev.index)
        out["peak_reserved_bytes"] = s["reserved_bytes"]["peak"]
        out["peak_allocated_bytes"] = s["allocated_bytes"]["peak"]
        out["peak_physical_bytes"] = s["physical_bytes"]["peak"]
        out["ck"] = {
            "library": ck.library_path(),
            "conf": ck.loaded_conf(),
            "backend": s["backend"],
            "budget": s["budget"],
            "allocations": s["allocation"]["allocated"],
            "num_ooms": s["num_ooms"],
            "num_alloc_retries": s["num_alloc_retries"],
            "num_map_calls": s["num_map_calls"],
            "fragmentation": s["fragmentation"],
            "peak_overhead": s["peak_overhead"],
        }
        out["ok"] = out["ok"] and s["allocation"]["allocated"] > 0
        if mode == "preload":
            # PyTorch's own view through the cudaMallocAsync backend.
            try:
                out["torch_max_memory_reserved"] = torch.cuda.max_memory_reserved(dev)
            except Exception as e:  # noqa: BLE001
                out["torch_max_memory_reserved"] = "unavailable: %s" % e
    emit(out)
    return 0 if out["ok"] else 1


# ------------------------------------------------------------ --mode all --


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def child_cmd(args, mode):
    cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode]
    for k in ("steps", "seed", "layers", "d_model", "heads", "vocab", "seq", "batch", "lr"):
        cmd += ["--" + k.replace("_", "-"), str(getattr(args, k))]
    if mode == "pluggable":
        cmd += ["--lib", args.lib]
        if args.conf is not None:
            cmd += ["--conf", args.conf]
    return cmd


def child_env(mode, args):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    env.pop("CKALLOC_TRAIN_PAUSE", None)
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    pp = os.path.join(ROOT, "tools", "python")
    env["PYTHONPATH"] = pp + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if mode == "preload":
        env["LD_PRELOAD"] = os.path.abspath(args.lib)
        env["PYTORCH_CUDA_ALLOC_CONF"] = "backend:cudaMallocAsync"
        env["CKALLOC_CONF"] = args.conf if args.conf is not None else ""
        if args.stat_tool:
            env["CKALLOC_TRAIN_PAUSE"] = str(args.pause)
    else:
        env.pop("CKALLOC_CONF", None)
    return env


def run_child(args, mode, timeout):
    """Run one mode within timeout seconds in all (waiting for its pause line
    included: readers on threads, so a child that goes silent is killed at
    the deadline, not waited on); returns (rc, result dict or None, stat
    dict or None). A child killed at the deadline gives rc -9 and a result
    that says so."""
    deadline = time.monotonic() + timeout
    env = child_env(mode, args)
    p = subprocess.Popen(child_cmd(args, mode), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out_parts, err_lines, pauses = [], [], queue.Queue()

    def read_err():
        for line in p.stderr:
            err_lines.append(line)
            if line.startswith('{"event": "pause"'):
                pauses.put(line)

    readers = [threading.Thread(target=read_err, daemon=True),
               threading.Thread(target=lambda: out_parts.append(p.stdout.read()), daemon=True)]
    for t in readers:
        t.start()
    stat = None
    if mode == "preload" and args.stat_tool:
        # Wait for the pause line (or the child's end, or the deadline),
        # then look at the process from outside.
        while time.monotonic() < deadline:
            try:
                line = pauses.get(timeout=0.2)
            except queue.Empty:
                if p.poll() is not None and not readers[0].is_alive():
                    break
                continue
            stat = run_stat(args.stat_tool, json.loads(line)["pid"])
            break
    timed_out = False
    try:
        p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        timed_out = True
        p.kill()
        p.wait()
    for t in readers:
        t.join(timeout=5)
    err = "".join(err_lines)
    sys.stderr.write(err[-4000:])
    res = last_json("".join(out_parts))
    if timed_out:
        log("%s run killed at its %g s deadline" % (mode, timeout))
        res = dict(res or {"test": "torch_train", "mode": mode}, ok=False,
                   error="killed at the %g s deadline" % timeout)
    return p.returncode, res, stat


def run_stat(tool, pid):
    rec = {"test": "ckalloc_stat", "pid": pid, "tool": tool}
    for argv in ([tool, "-p", str(pid), "--json"], [tool, "-p", str(pid)]):
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            rec.update(ok=False, error=str(e))
            return rec
        rec.update(argv=argv[1:], rc=r.returncode)
        if r.returncode == 0:
            j = last_json(r.stdout) if "--json" in argv else None
            if j is not None:
                rec["report"] = j
                pools = j.get("pools") or []
                rec["ok"] = bool(pools) and any(
                    (p.get("allocated_bytes") or {}).get("current", 0) > 0 for p in pools)
            else:
                rec["output"] = r.stdout[-6000:]
                rec["ok"] = bool(r.stdout.strip())
            return rec
        rec["output"] = r.stdout[-2000:]
    rec["ok"] = False
    return rec


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def run_all(args):
    if not args.lib or not os.path.isfile(args.lib):
        log("--mode all needs --lib PATH/libckalloc_preload.so (got %r)" % args.lib)
        return 2
    results, bad = {}, 0
    for mode in ("plain", "preload", "pluggable"):
        rc, res, stat = run_child(args, mode, args.timeout)
        if rc == SKIP:
            emit(res or {"test": "torch_train", "mode": mode, "skipped": "exit 77"})
            return SKIP
        if res is None:
            res = {"test": "torch_train", "mode": mode, "ok": False}
        res["rc"] = rc
        emit(res)
        if stat is not None:
            emit(stat)
            if not stat.get("ok"):
                log("ckalloc-stat -p %s failed" % stat.get("pid"))
                bad += 1
        elif mode == "preload" and args.stat_tool:
            emit({"test": "ckalloc_stat", "ok": False, "error": "the preload run never paused"})
            bad += 1
        if rc != 0 or not res.get("ok"):
            log("%s run failed (exit %d)" % (mode, rc))
            bad += 1
        results[mode] = res
    cmp = {"test": "torch_train_compare", "rtol": args.rtol}
    base = results.get("plain", {}).get("final_loss")
    ok = base is not None
    for mode in ("preload", "pluggable"):
        r = results.get(mode, {})
        f = r.get("final_loss")
        cmp[mode + "_final_loss"] = f
        if f is None or base is None:
            ok = False
            continue
        cmp[mode + "_rel_diff"] = rel(f, base)
        steps = list(zip(r.get("losses", []), results["plain"].get("losses", [])))
        cmp[mode + "_max_step_rel_diff"] = max((rel(a, b) for a, b in steps), default=None)
        cmp[mode + "_peak_reserved_vs_plain"] = (
            r["peak_reserved_bytes"] / results["plain"]["peak_reserved_bytes"]
            if results["plain"].get("peak_reserved_bytes") else None)
        ok = ok and rel(f, base) <= args.rtol
    cmp["plain_final_loss"] = base
    cmp["ok"] = ok
    emit(cmp)
    if not ok:
        log("final losses differ from plain by more than %g (relative)" % args.rtol)
        bad += 1
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("plain", "preload", "pluggable", "all"), required=True)
    ap.add_argument("--lib", default=os.path.join(ROOT, "build", "libckalloc_preload.so"),
                    help="libckalloc_preload.so (pluggable and all)")
    ap.add_argument("--conf", default=None,
                    help="CKALLOC_CONF for the ckalloc runs (default: the library's defaults)")
    ap.add_argument("--stat-tool", default=None, help="ckalloc-stat, run on the preload run (all)")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds the preload run waits for ckalloc-stat")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: run --mode plain on the CPU, to check this script without a GPU")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    if args.mode == "all":
        return run_all(args)
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
