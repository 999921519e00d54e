/* ckalloc-stat: memory reports of processes using ckalloc, read live from
 * their shared-memory segments without stopping them, or from snapshot
 * files. See usage() for the modes; exit 0 ok, 1 failure, 2 bad usage or
 * bad input. */
#include "stat.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* How long -p waits for the owner to answer the top-list request. */
#define TOP_WAIT_MS 200

static void usage(FILE *f) {
    fprintf(f, "usage: ckalloc-stat [--json | --prometheus] [--watch SEC [-n COUNT]]\n"
               "       ckalloc-stat -p PID [--json | --prometheus] [--watch SEC [-n COUNT]]\n"
               "       ckalloc-stat [--json | --prometheus] FILE.json\n"
               "       ckalloc-stat --html FILE.json -o OUT.html\n"
               "\n"
               "Without -p or a file: one line per process using ckalloc (PID, command, pools,\n"
               "allocated, reserved, physical, peak reserved), read from /dev/shm/ckalloc.<pid>.\n"
               "Segments left by processes that are gone, or not written by ckalloc for you,\n"
               "are ignored with one line each on stderr.\n"
               "\n"
               "  -p, --pid PID      memory report of a running process, read without stopping\n"
               "                     it: peak and current allocated / reserved / physical,\n"
               "                     fragmentation, peak_overhead, largest free range, OOM\n"
               "                     retries, budget,\n"
               "                     and the largest live allocations with their tags\n"
               "  FILE.json          the same report from a snapshot file (snapshot=PATH)\n"
               "  --html FILE.json   write the snapshot as one HTML page to -o OUT.html\n"
               "  -o, --output OUT   the HTML page to write\n"
               "  --watch SEC        refresh every SEC seconds, like top: on a terminal each\n"
               "                     report is redrawn in place, cut to the window (the\n"
               "                     headline stays on top), and q quits\n"
               "  -n, --count COUNT  stop after COUNT reports (alone: --watch 1)\n"
               "  --json             JSON, one line per report (the list: one array)\n"
               "  --prometheus       Prometheus text format: ckalloc_* metrics labelled by\n"
               "                     pid and device\n"
               "  -h, --help         this text\n"
               "\n"
               "Exit status: 0 ok, 1 failure (PID not using ckalloc, gone, or its live-stats file\n"
               "ignored), 2 bad usage or bad input.\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    fprintf(stderr, "ckalloc-stat: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see ckalloc-stat --help)\n");
    return 2;
}

/* A whole positive integer <= max, or -1. */
static long parse_pos(const char *s, long max) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v <= 0 || v > max) return -1;
    return v;
}

static void sleep_s(double s) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* One report of pid (or of the list when pid is 0) to out. Returns the exit
 * status. */
static int report(FILE *out, int pid, ckstat_fmt fmt) {
    if (pid == 0) {
        ckstat_report *r = NULL;
        size_t n = 0;
        int rc = ckstat_live_all(&r, &n, stderr);
        if (rc < 0) {
            fprintf(stderr, "ckalloc-stat: cannot read /dev/shm: %s\n", strerror(errno));
            return 1;
        }
        ckstat_print_list(out, r, n, fmt);
        for (size_t i = 0; i < n; i++) ckstat_report_free(&r[i]);
        free(r);
    } else {
        ckstat_report r;
        char err[600];
        if (ckstat_live_read(pid, TOP_WAIT_MS, &r, err, sizeof err) != 0) {
            fprintf(stderr, "ckalloc-stat: %s\n", err);
            return 1;
        }
        ckstat_print(out, &r, fmt);
        ckstat_report_free(&r);
    }
    return 0;
}

/* ---- --watch on a terminal: redraw in place, fit the window, q quits ---- */

static struct termios saved_tio;
static volatile sig_atomic_t tio_saved;

static void tty_restore(void) {
    if (tio_saved) {
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
        tio_saved = 0;
    }
}

static void on_fatal_signal(int sig) {
    tty_restore(); /* tcsetattr is async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Keys without Enter and without echo, when stdin is a terminal and this
 * process is in its foreground (a background job that set the terminal's
 * mode or read it would be stopped by SIGTTOU/SIGTTIN). Returns whether
 * keys can be read. */
static int tty_keys_on(void) {
    if (!isatty(STDIN_FILENO)) return 0;
    pid_t fg = tcgetpgrp(STDIN_FILENO); /* -1: not our controlling terminal */
    if (fg != -1 && fg != getpgrp()) return 0;
    if (tcgetattr(STDIN_FILENO, &saved_tio) != 0) return 0;
    struct termios t = saved_tio;
    t.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) != 0) return 0;
    tio_saved = 1;
    atexit(tty_restore);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGHUP, on_fatal_signal);
    return 1;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits s seconds; returns 1 early when q (or Q) is pressed. */
static int wait_or_quit(double s, int keys) {
    if (!keys) {
        sleep_s(s);
        return 0;
    }
    double end = mono_s() + s;
    for (;;) {
        double left = end - mono_s();
        if (left <= 0) return 0;
        struct pollfd pf = {STDIN_FILENO, POLLIN, 0};
        int n = poll(&pf, 1, (int)(left * 1000) + 1);
        if (n > 0) {
            char buf[64];
            ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
            for (ssize_t i = 0; i < got; i++)
                if (buf[i] == 'q' || buf[i] == 'Q') return 1;
            if (got <= 0) sleep_s(0.01); /* the terminal hung up: no busy loop */
        }
    }
}

/* Draws frame (a report) from the top of the window: at most rows - 1 of its
 * lines, each cut to the window's width, then a status line. Nothing scrolls,
 * so the headline stays on top. */
static void draw(const char *frame, double every, int keys) {
    struct winsize ws;
    int rows = 24, cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 1 && ws.ws_col > 10) {
        rows = ws.ws_row;
        cols = ws.ws_col;
    }
    fputs("\033[H", stdout);
    int line = 0, hidden = 0;
    const char *p = frame;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (line < rows - 1) {
            /* Cut at cols characters (UTF-8 continuation bytes take no column). */
            size_t i = 0;
            int w = 0;
            while (i < len && (w < cols || ((unsigned char)p[i] & 0xC0) == 0x80)) {
                if (((unsigned char)p[i] & 0xC0) != 0x80) w++;
                i++;
            }
            fwrite(p, 1, i, stdout);
            fputs("\033[K\n", stdout);
            line++;
        } else {
            hidden++;
        }
        p += len + (nl ? 1 : 0);
    }
    char status[160];
    int n = snprintf(status, sizeof status, "every %gs%s", every, keys ? ", q quits" : "");
    if (hidden && n > 0 && (size_t)n < sizeof status)
        snprintf(status + n, sizeof status - (size_t)n, ", %d more line%s below the window",
                 hidden, hidden == 1 ? "" : "s");
    /* The status line ends the window: no newline, so nothing scrolls. */
    fprintf(stdout, "\033[7m%.*s\033[0m\033[K\033[J", cols, status);
    fflush(stdout);
}

/* --watch: reports every `every` seconds, count of them (0 = until q or
 * an error). */
static int watch_loop(int pid, ckstat_fmt fmt, double every, long count) {
    int screen = fmt == CKSTAT_TABLE && isatty(STDOUT_FILENO);
    int keys = tty_keys_on();
    if (screen) fputs("\033[2J", stdout);
    int rc = 0;
    for (long i = 0; count == 0 || i < count; i++) {
        if (i && wait_or_quit(every, keys)) break;
        if (screen) {
            char *buf = NULL;
            size_t len = 0;
            FILE *m = open_memstream(&buf, &len);
            if (!m) {
                fprintf(stderr, "ckalloc-stat: out of memory\n");
                rc = 1;
                break;
            }
            rc = report(m, pid, fmt);
            fclose(m);
            if (rc == 0) draw(buf, every, keys);
            free(buf);
        } else {
            rc = report(stdout, pid, fmt);
            if (rc == 0 && fmt == CKSTAT_TABLE) fputc('\n', stdout);
            fflush(stdout);
            if (rc == 0 && ferror(stdout)) rc = 1;
        }
        if (rc != 0) break;
    }
    if (screen) fputc('\n', stdout); /* below the status line */
    fflush(stdout);
    tty_restore();
    return rc;
}

static int show_snapshot(const char *path, ckstat_fmt fmt) {
    ckstat_report r;
    char err[600];
    memset(&r, 0, sizeof r);
    if (ckstat_load_snapshot(path, &r, err, sizeof err) != 0) {
        fprintf(stderr, "ckalloc-stat: %s\n", err);
        ckstat_report_free(&r);
        return 2;
    }
    ckstat_print(stdout, &r, fmt);
    ckstat_report_free(&r);
    fflush(stdout);
    return ferror(stdout) ? 1 : 0;
}

static int write_html(const char *in, const char *out) {
    ckstat_report r;
    char err[600];
    memset(&r, 0, sizeof r);
    if (ckstat_load_snapshot(in, &r, err, sizeof err) != 0) {
        fprintf(stderr, "ckalloc-stat: %s\n", err);
        ckstat_report_free(&r);
        return 2;
    }
    int rc = ckstat_write_html(&r, out, err, sizeof err);
    ckstat_report_free(&r);
    if (rc != 0) {
        fprintf(stderr, "ckalloc-stat: %s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    enum { OPT_WATCH = 256, OPT_JSON, OPT_PROM, OPT_HTML };
    static const struct option longopts[] = {
        {"pid", required_argument, NULL, 'p'},
        {"watch", required_argument, NULL, OPT_WATCH},
        {"count", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, OPT_JSON},
        {"prometheus", no_argument, NULL, OPT_PROM},
        {"html", required_argument, NULL, OPT_HTML},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int pid = 0;
    long count = 0;
    double watch = 0;
    ckstat_fmt fmt = CKSTAT_TABLE;
    int nfmt = 0;
    const char *html = NULL, *output = NULL;
    int c;
    opterr = 0; /* our own messages, with the exit status 2 */
    while ((c = getopt_long(argc, argv, ":p:n:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': {
            long v = parse_pos(optarg, INT_MAX);
            if (v < 0) return bad_usage("bad pid '%s'", optarg);
            pid = (int)v;
            break;
        }
        case 'n':
            count = parse_pos(optarg, LONG_MAX);
            if (count < 0) return bad_usage("bad count '%s' (a whole number >= 1)", optarg);
            break;
        case OPT_WATCH: {
            char *end;
            errno = 0;
            watch = strtod(optarg, &end);
            if (end == optarg || *end || errno || !isfinite(watch) || watch <= 0 || watch > 86400)
                return bad_usage("bad interval '%s' (seconds, > 0)", optarg);
            break;
        }
        case OPT_JSON:
            fmt = CKSTAT_JSON;
            nfmt++;
            break;
        case OPT_PROM:
            fmt = CKSTAT_PROMETHEUS;
            nfmt++;
            break;
        case OPT_HTML: html = optarg; break;
        case 'o': output = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':': return bad_usage("%s needs a value", argv[optind - 1]);
        default: return bad_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    const char *file = NULL;
    if (optind < argc) file = argv[optind++];
    if (optind < argc) return bad_usage("unexpected argument '%s'", argv[optind]);
    if (nfmt > 1) return bad_usage("%s", "--json and --prometheus exclude each other");

    if (html || output) {
        if (!html || !output)
            return bad_usage("%s", "--html FILE.json needs -o OUT.html (and -o needs --html)");
        if (pid || file || nfmt || watch > 0 || count)
            return bad_usage("%s", "--html takes only a snapshot file and -o");
        return write_html(html, output);
    }
    if (file) {
        if (pid) return bad_usage("%s", "-p and a snapshot file exclude each other");
        if (watch > 0 || count)
            return bad_usage("%s", "--watch and -n need a live process, not a file");
        return show_snapshot(file, fmt);
    }
    if (count && watch <= 0) watch = 1;
    if (watch <= 0) {
        int rc = report(stdout, pid, fmt);
        fflush(stdout);
        return rc ? rc : ferror(stdout) ? 1 : 0;
    }
    return watch_loop(pid, fmt, watch, count);
}
