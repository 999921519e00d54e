#!/usr/bin/env python3
"""Checks the tier curves of a ckalloc-stat --html page as headless Chromium
left it (--dump-dom), for a snapshot of a pool whose tier engine held
tensors off the device:

- the whole-run chart (div#timeline-0) draws an "offloaded" and a "dropped"
  line, and says in data-max-offloaded / data-max-dropped that they reach
  the snapshot's peak offloaded and dropped bytes (the history keeps them
  in MiB; the example trainer's tensors are whole MiB);
- the legend names both.

    check_tiers.py DOM.html SNAPSHOT.json

Exit 0 when every check passes; prints each check."""
import json
import sys
from html.parser import HTMLParser


class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.div = None
        self.svg = {}
        self.series = {}
        self.legend = []
        self.in_legend = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("id", "").startswith(("timeline-", "recent-")):
            self.div = a["id"]
        elif tag == "svg" and self.div:
            self.svg[self.div] = a
        elif tag == "polyline" and self.div and "data-series" in a:
            self.series.setdefault(self.div, []).append(a["data-series"])
        elif tag == "g" and a.get("class") == "legend":
            self.in_legend = True

    def handle_endtag(self, tag):
        if tag == "g":
            self.in_legend = False

    def handle_data(self, data):
        if self.in_legend and self.div == "timeline-0" and data.strip():
            self.legend.append(data.strip())


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    dom = Dom()
    dom.feed(open(sys.argv[1], encoding="utf-8").read())
    stats = json.load(open(sys.argv[2]))["pools"][0]["stats"]
    fails = 0

    def check(ok, what):
        nonlocal fails
        print(("ok   " if ok else "FAIL ") + what)
        fails += not ok

    svg = dom.svg.get("timeline-0", {})
    for key in ("offloaded", "dropped"):
        peak = stats[key + "_bytes"]["peak"]
        check(peak > 0, f"the snapshot has {key} bytes (peak {peak})")
        check(key in dom.series.get("timeline-0", []), f"the whole-run chart draws {key}")
        check(int(svg.get("data-max-" + key, -1)) == peak,
              f"its {key} line reaches the peak: {svg.get('data-max-' + key)} == {peak}")
        check(key in dom.legend, f"the legend names {key}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
