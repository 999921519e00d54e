"""Runs a command on a pseudo-terminal of ROWS x COLS, lets it draw for a
while, presses q, and prints one JSON line about what it drew:
  rc         its exit status (None if q did not stop it within 5 s)
  frames     the frames seen (each starts with the cursor-home sequence)
  max_lines  the most lines a frame took (the status line included)
  max_cols   the widest line, escape sequences left out
  first      the first line of every frame
  last_line  the last line of the last frame (the status line)
  restored   whether the terminal is back in line mode with echo

usage: watch_tty.py ROWS COLS SECONDS CMD [ARGS...]
"""
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import fcntl
import time

rows, cols, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
cmd = sys.argv[4:]

master, slave = os.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def controlling_tty():
    # A session of its own with the pty as its terminal, in the foreground,
    # as a shell would run it.
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                        preexec_fn=controlling_tty)

out = b""


def pump(until):
    global out
    while time.monotonic() < until:
        r, _, _ = select.select([master], [], [], 0.05)
        if r:
            try:
                out += os.read(master, 65536)
            except OSError:
                return


pump(time.monotonic() + secs)
os.write(master, b"q")
rc = None
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    pump(time.monotonic() + 0.05)
    rc = proc.poll()
    if rc is not None:
        break
if rc is None:
    proc.kill()
    proc.wait()
pump(time.monotonic() + 0.1)
lflag = termios.tcgetattr(slave)[3]
restored = bool(lflag & termios.ICANON) and bool(lflag & termios.ECHO)

text = out.decode("utf-8", "replace")
esc = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
frames = text.split("\x1b[H")[1:]
lines_per, widest, first, last_line = [], 0, [], ""
for f in frames:
    lines = esc.sub("", f).replace("\r", "").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    lines_per.append(len(lines))
    widest = max([widest] + [len(l) for l in lines])
    first.append(lines[0] if lines else "")
    last_line = lines[-1] if lines else ""
print(json.dumps({"rc": rc, "frames": len(frames), "max_lines": max(lines_per or [0]),
                  "max_cols": widest, "first": first, "last_line": last_line,
                  "restored": restored}))
