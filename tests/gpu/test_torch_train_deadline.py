#!/usr/bin/env python3
"""torch_train.py's child runner keeps one deadline for a whole run, pause
wait included, whatever the child prints (no torch, no GPU needed): a child
that goes silent is killed at the deadline, a child that ends without
pausing is not waited on, and a child that pauses gets ckalloc-stat run on
it. Exit 0 pass, 1 fail."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_train  # noqa: E402

PY = sys.executable
bad = 0


def check(what, cond, detail=""):
    global bad
    print(("ok: " if cond else "FAIL: ") + what + ("" if cond else " (%s)" % detail))
    bad += not cond


def args(stat_tool):
    return argparse.Namespace(lib=os.devnull, conf=None, stat_tool=stat_tool, pause=0.5)


def timed(mode, a, timeout, code):
    t0 = time.monotonic()
    torch_train.child_cmd = lambda _args, _mode: [PY, "-c", code]
    rc, res, stat = torch_train.run_child(a, mode, timeout)
    return time.monotonic() - t0, rc, res, stat


silent = "import time; time.sleep(60)"
for mode, a in (("preload", args(PY)), ("plain", args(None))):
    s, rc, res, stat = timed(mode, a, 2, silent)
    check("%s: a silent child is killed at the 2 s deadline (%.1f s)" % (mode, s), s < 8, s)
    check("%s: killed child: rc -9, result says so" % mode,
          rc == -9 and res and res.get("ok") is False and "deadline" in res.get("error", ""),
          (rc, res))

# Ends at once without pausing: not waited on until the deadline.
s, rc, res, stat = timed("preload", args(PY), 30,
                         "import json; print(json.dumps({'mode': 'preload', 'ok': True}))")
check("a child that never pauses is not waited on (%.1f s)" % s, s < 8, s)
check("its result is read", rc == 0 and res == {"mode": "preload", "ok": True} and stat is None,
      (rc, res, stat))

# Pauses: the stat tool (here python -c, printing a line) runs on it.
pause = ("import json, os, sys, time; "
         "print(json.dumps({'event': 'pause', 'pid': os.getpid()}), file=sys.stderr, flush=True); "
         "time.sleep(1); print(json.dumps({'mode': 'preload', 'ok': True}))")
s, rc, res, stat = timed("preload", args(PY), 30, pause)
check("a pausing child gets the stat tool and finishes (%.1f s)" % s,
      rc == 0 and res and res.get("ok") and stat is not None and stat.get("pid"), (rc, res, stat))
sys.exit(1 if bad else 0)
