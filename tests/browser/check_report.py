#!/usr/bin/env python3
"""Checks the DOM of a ckalloc-stat --html page as headless Chromium left it
(--dump-dom):

- the script ran and drew both timelines: the whole run (div#timeline-0,
  one step per history bucket) and the recent ring (div#recent-0, one step
  per recorded operation);
- what the whole-run chart draws reaches the snapshot's peaks: its maximum
  (data-max-*, and read back from the live area's vertices) equals the
  reported peak allocated, reserved and physical bytes;
- the y ticks are round binary values (0, then a power-of-two step, labels
  whole numbers of one unit), the top tick is the first above the data;
- a budget line sits at the budget when the budget is on the scale;
- the whole-run time axis starts at the pool's creation (0) and ends when
  the snapshot was taken;
- the largest-blocks table lists the largest live blocks of the snapshot.

    check_report.py DOM.html SNAPSHOT.json EXPECTED_RECENT_POINTS

Exit 0 when every check passes; prints each check."""
import json
import sys
from html.parser import HTMLParser

UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
VOID = ("polyline", "polygon", "line", "rect", "meta", "br", "img", "input", "link")


class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack = []  # open elements: (tag, attrs)
        self.divs = {}  # id -> attrs, for div#timeline-0 and div#recent-0
        self.svg = {}  # div id -> svg attrs
        self.shapes = {}  # div id -> [(tag, attrs)] of polygons, polylines, lines
        self.ticks = {}  # div id -> [(attrs, text)] of text.tick
        self.text = None
        self.rows = []  # cells of tr.block rows in table#largest-0
        self.cell = None

    def chart(self):
        for t, a in reversed(self.stack):
            if t == "div" and a.get("id") in self.divs:
                return a["id"]
        return None

    def inside(self, tag, id_):
        return any(t == tag and a.get("id") == id_ for t, a in self.stack)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("id") in ("timeline-0", "recent-0"):
            self.divs[a["id"]] = a
        c = self.chart()
        if c:
            if tag == "svg":
                self.svg[c] = a
            if tag in ("polygon", "polyline", "line"):
                self.shapes.setdefault(c, []).append((tag, a))
            if tag == "text" and "tick" in a.get("class", "").split():
                self.text = [a, ""]
        if self.inside("table", "largest-0"):
            if tag == "tr" and "block" in a.get("class", "").split():
                self.rows.append([])
            if tag == "td" and self.rows and any(t == "tr" for t, _ in self.stack):
                self.cell = ""
        if tag not in VOID:
            self.stack.append((tag, a))

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None and self.rows:
            self.rows[-1].append(self.cell.strip())
            self.cell = None
        if tag == "text" and self.text is not None:
            self.ticks.setdefault(self.chart(), []).append(tuple(self.text))
            self.text = None
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.text is not None:
            self.text[1] += data


def fmt_bytes(b):
    # the page's format (tools/stat/html.c fmt_bytes)
    if b < 1024:
        return "%d B" % b
    v, u = float(b), 0
    while v >= 1024 and u < 6:
        v /= 1024
        u += 1
    return "%.2f %s" % (v, UNITS[u])


def pairs(points):
    return [tuple(float(c) for c in xy.split(",")) for xy in points.split()]


def main():
    dom_path, snap_path, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    d = Dom()
    d.feed(open(dom_path, encoding="utf-8").read())
    snap = json.load(open(snap_path))
    pool = snap["pools"][0]
    st, hist = pool["stats"], pool["history"]
    peaks = {"live": st["allocated_bytes"]["peak"], "reserved": st["reserved_bytes"]["peak"],
             "physical": st["physical_bytes"]["peak"]}
    failed = 0

    def check(ok, what):
        nonlocal failed
        print(("ok: " if ok else "FAILED: ") + what)
        failed += not ok
        return ok

    for div in ("timeline-0", "recent-0"):
        a = d.divs.get(div)
        check(a is not None and a.get("data-rendered") == "yes",
              "%s: the script drew it (data-rendered=%r)" % (div, (a or {}).get("data-rendered")))
        check(div in d.svg, "%s: an <svg> inside" % div)
    if failed:
        return 1

    # ---- the whole run ----
    svg, shapes = d.svg["timeline-0"], d.shapes.get("timeline-0", [])
    nb = len(hist["buckets"])
    check(svg.get("data-view") == "run" and svg.get("data-points") == str(nb),
          "run: one step per history bucket (%s drawn, %d in the file)" % (svg.get("data-points"), nb))
    for k in ("live", "reserved", "physical"):
        got = int(svg.get("data-max-" + k, "-1"))
        check(got == peaks[k], "run: drawn maximum of %s %d == the reported peak %d" % (k, got, peaks[k]))
    left, top_px, pw, ph = (float(v) for v in svg["data-plot"].split())
    ymax, ystep = int(svg["data-y-max"]), int(svg["data-y-step"])

    def value_at(y):
        return (top_px + ph - y) / ph * ymax

    by_series = {a.get("data-series"): (t, a) for t, a in shapes if a.get("data-series")}
    check(sorted(by_series) == ["cached", "live", "live-min", "physical"],
          "run: live and cached areas, live minimum and physical lines (got %s)" % sorted(by_series))
    tol = ymax / ph * 0.011  # vertices are written to 0.01 px
    live_pts = pairs(by_series["live"][1]["points"])
    drawn = max(value_at(y) for _, y in live_pts)
    check(abs(drawn - peaks["live"]) <= tol,
          "run: the live area's highest vertex is %.0f bytes, the peak %d (within %.0f)"
          % (drawn, peaks["live"], tol))
    check(by_series["live"][0] == "polygon" and by_series["cached"][0] == "polygon"
          and len(live_pts) == 2 * nb + 2, "run: live is an area of %d vertices (%d expected)"
          % (len(live_pts), 2 * nb + 2))
    cached_pts = pairs(by_series["cached"][1]["points"])
    # stacked: the cached area's top is reserved, its bottom is the live top
    check(abs(max(value_at(y) for _, y in cached_pts) - peaks["reserved"]) <= tol
          and sorted(cached_pts[2 * nb:]) == sorted(live_pts[1:-1]),
          "run: cached is stacked on live, its top the reserved peak")
    phys = max(value_at(y) for _, y in pairs(by_series["physical"][1]["points"]))
    check(abs(phys - peaks["physical"]) <= tol, "run: the physical line reaches the physical peak")
    check(min(x for x, _ in live_pts) >= left - 0.01, "run: nothing is drawn left of the axis")

    # y ticks: 0, step, 2 step, ... up to the first tick at or above the data
    yt = [(int(a["data-value"]), t) for a, t in d.ticks.get("timeline-0", [])
          if "ytick" in a.get("class", "")]
    vals = [v for v, _ in yt]
    budget = st["budget"]
    data_max = max(peaks.values())
    shown = [a for t, a in shapes if t == "line" and "budget" in a.get("class", "").split()]
    on_scale = budget <= 2 * data_max
    reach = max(data_max, budget) if on_scale else data_max
    check(ystep > 0 and ystep & (ystep - 1) == 0, "y: the tick step %d is a power of two" % ystep)
    check(vals == [i * ystep for i in range(len(vals))] and vals[-1] == ymax and 2 <= len(vals) <= 9,
          "y: ticks 0, %d, ... up to the axis top %d (got %d ticks)" % (ystep, ymax, len(vals)))
    check(ymax >= reach and ymax - ystep < reach,
          "y: the top tick %d is the first at or above the data (and budget) %d" % (ymax, reach))
    ok = True
    for v, label in yt:
        if v == 0:
            ok &= label == "0"
            continue
        num, unit = label.split()
        u = UNITS.index(unit) if unit in UNITS else -1
        ok &= u >= 0 and num.isdigit() and int(num) * 1024 ** u == v and ystep >= 1024 ** u
    check(ok, "y: labels are whole numbers of one binary unit (%s)" % ", ".join(t for _, t in yt))
    check(len(d.ticks.get("timeline-0", [])) > 0 and (not on_scale or len(shown) == 1),
          "budget %d: %s" % (budget, "a budget line" if on_scale else "off the scale"))
    if on_scale and shown:
        by = float(shown[0]["y1"])
        check(int(shown[0]["data-value"]) == budget and abs(value_at(by) - budget) <= tol,
              "budget: the line is drawn at %.0f bytes, the budget %d" % (value_at(by), budget))

    # x axis: from the pool's creation (0) to the snapshot; over the operation
    # index when the pool did not stamp its operations (no snapshot= path)
    timed = all(b["t0_ns"] for b in hist["buckets"])
    end, unit = ((hist["end_ns"] - hist["start_ns"]) / 1e9, "s") if timed else (hist["total"], "op")
    check(float(svg["data-x-start"]) == 0 and abs(float(svg["data-x-end"]) - end) < 1e-6
          and svg.get("data-x-unit") == unit,
          "x: the run's axis spans 0 to %s %s (got %s to %s %s)"
          % (end, unit, svg["data-x-start"], svg["data-x-end"], svg.get("data-x-unit")))
    xt = [(a, t) for a, t in d.ticks.get("timeline-0", []) if "xtick" in a.get("class", "")]
    check(xt and float(xt[0][0]["data-value"]) == 0 and abs(float(xt[0][0]["x"]) - left) < 0.01
          and xt[0][1] in ("0 s", "0 ms", "0 \u00b5s", "op 0"),
          "x: the first tick is 0 at the axis (%r)" % (xt[0][1] if xt else None))

    # ---- the recent ring ----
    records = len(pool["trace"]["records"])
    rsvg, rshapes = d.svg["recent-0"], d.shapes.get("recent-0", [])
    check(records == expected, "the snapshot holds %d operations (expected %d)" % (records, expected))
    check(rsvg.get("data-view") == "recent" and rsvg.get("data-points") == str(expected),
          "recent: one step per recorded operation (%s)" % rsvg.get("data-points"))
    rs = {a.get("data-series"): (t, a) for t, a in rshapes if a.get("data-series")}
    check(sorted(rs) == ["cached", "live", "physical"], "recent: live, cached, physical (got %s)" % sorted(rs))
    want = {"live": 2 * expected + 2, "cached": 4 * expected, "physical": 2 * expected}
    for k, n in want.items():
        got = len(pairs(rs[k][1]["points"])) if k in rs else -1
        check(got == n, "recent: %s has %d vertices (expected %d)" % (k, got, n))
    ring_max = max(r["allocated"] for r in pool["trace"]["records"])
    check(int(rsvg["data-max-live"]) == ring_max,
          "recent: drawn maximum of live %s == the ring's %d" % (rsvg["data-max-live"], ring_max))

    # ---- largest blocks ----
    live = [b for b in pool["blocks"] if b["state"] == "live"]
    top = sorted(live, key=lambda b: -b["size"])[:16]
    check(len(d.rows) == len(top) and len(top) > 0,
          "largest-blocks table has %d rows (expected %d)" % (len(d.rows), len(top)))
    got = [(r[1], r[2]) for r in d.rows if len(r) >= 3]
    want = [(b["addr"], fmt_bytes(b["size"])) for b in top]
    check(got == want, "rows are the largest live blocks, largest first")
    if got != want:
        print("  got  %s\n  want %s" % (got[:4], want[:4]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
