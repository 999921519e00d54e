#!/usr/bin/env python3
"""Checks the DOM of a ckalloc-stat --html page as headless Chromium left it
(--dump-dom): the script ran and drew the timeline SVG, each line has one
point per recorded operation, and the largest-blocks table lists the largest
live blocks of the snapshot.

    check_report.py DOM.html SNAPSHOT.json EXPECTED_POINTS

Exit 0 when every check passes; prints each check."""
import json
import sys
from html.parser import HTMLParser


class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack = []          # open elements: (tag, attrs)
        self.polylines = []      # attrs of polylines inside #timeline-0
        self.timeline = None     # attrs of div#timeline-0
        self.svg_in_timeline = False
        self.rows = []           # cells of tr.block rows in table#largest-0
        self.cell = None

    def inside(self, tag, id_):
        return any(t == tag and a.get("id") == id_ for t, a in self.stack)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("id") == "timeline-0":
            self.timeline = a
        if self.inside("div", "timeline-0"):
            if tag == "svg":
                self.svg_in_timeline = True
            if tag == "polyline":
                self.polylines.append(a)
        if self.inside("table", "largest-0"):
            if tag == "tr" and "block" in a.get("class", "").split():
                self.rows.append([])
            if tag == "td" and self.rows and any(t == "tr" for t, _ in self.stack):
                self.cell = ""
        if tag not in ("polyline", "line", "rect", "meta", "br", "img", "input", "link"):
            self.stack.append((tag, a))

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None and self.rows:
            self.rows[-1].append(self.cell.strip())
            self.cell = None
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def fmt_bytes(b):
    # the page's format (tools/stat/html.c fmt_bytes)
    if b < 1024:
        return "%d B" % b
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    v, u = float(b), 0
    while v >= 1024 and u < 6:
        v /= 1024
        u += 1
    return "%.2f %s" % (v, units[u])


def main():
    dom_path, snap_path, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    d = Dom()
    d.feed(open(dom_path, encoding="utf-8").read())
    snap = json.load(open(snap_path))
    pool = snap["pools"][0]
    failed = 0

    def check(ok, what):
        nonlocal failed
        print(("ok: " if ok else "FAILED: ") + what)
        failed += not ok

    check(d.timeline is not None, "the page has div#timeline-0")
    check(d.timeline is not None and d.timeline.get("data-rendered") == "yes",
          "the script ran (data-rendered=yes, got %r)" % (d.timeline or {}).get("data-rendered"))
    check(d.svg_in_timeline, "the script drew an <svg> in the timeline")
    records = len(pool["trace"]["records"])
    check(records == expected, "the snapshot holds %d operations (expected %d)" % (records, expected))
    series = sorted(p.get("data-series", "") for p in d.polylines)
    check(series == ["cached", "live", "physical"], "lines live, cached, physical (got %s)" % series)
    for p in d.polylines:
        pairs = p.get("points", "").split()
        ok_pairs = all(len(xy.split(",")) == 2 for xy in pairs)
        # a step line: one vertex for the first operation, two for each later one
        check(p.get("data-points") == str(expected) and ok_pairs and len(pairs) == 2 * expected - 1,
              "%s: data-points %s, %d coordinate pairs (expected %d points, %d pairs)"
              % (p.get("data-series"), p.get("data-points"), len(pairs), expected, 2 * expected - 1))
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
