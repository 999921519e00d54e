/* ckalloc-stat --html: one self-contained page for a snapshot. Everything is
 * inline (CSS, the data as JSON, the script that draws the SVG timeline), so
 * the page opens offline and can be mailed around. The headline numbers and
 * the tables are plain HTML; only the timeline needs the script. */
#include "ratios.h"
#include "stat.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

static void put_esc(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static const char *fmt_bytes(uint64_t b, char *buf, size_t n) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (b < 1024) {
        snprintf(buf, n, "%" PRIu64 " B", b);
        return buf;
    }
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 6) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, "%.2f %s", v, units[u]);
    return buf;
}

static uint64_t pos(int64_t v) { return v < 0 ? 0 : (uint64_t)v; }

static void card(FILE *f, const char *label, const char *value, const char *sub) {
    fputs("<div class=\"card\"><div class=\"label\">", f);
    put_esc(f, label);
    fputs("</div><div class=\"value\">", f);
    put_esc(f, value);
    fputs("</div>", f);
    if (sub && *sub) {
        fputs("<div class=\"sub\">", f);
        put_esc(f, sub);
        fputs("</div>", f);
    }
    fputs("</div>\n", f);
}

static void headline(FILE *f, const ckstat_pool *p) {
    const ck_stats *s = &p->stats;
    char a[32], b[48], sub[96];
    uint64_t live = pos(s->allocated_bytes.current), reserved = pos(s->reserved_bytes.current);
    fputs("<div class=\"cards\">\n", f);
    snprintf(sub, sizeof sub, "peak %s", fmt_bytes(pos(s->allocated_bytes.peak), b, sizeof b));
    card(f, "live", fmt_bytes(live, a, sizeof a), sub);
    snprintf(sub, sizeof sub, "reserved %s", fmt_bytes(reserved, b, sizeof b));
    card(f, "cached", fmt_bytes(reserved > live ? reserved - live : 0, a, sizeof a), sub);
    snprintf(sub, sizeof sub, "peak %s", fmt_bytes(pos(s->physical_bytes.peak), b, sizeof b));
    card(f, "physical", fmt_bytes(pos(s->physical_bytes.current), a, sizeof a), sub);
    card(f, "budget", fmt_bytes(s->budget, a, sizeof a), "");
    /* The two ratios, as everywhere else (alloc/ratios.h). */
    snprintf(a, sizeof a, "%.3f", ck__fragmentation(live, reserved));
    card(f, "fragmentation", a, "1 - allocated / reserved, now");
    snprintf(a, sizeof a, "%.3f",
             ck__peak_overhead(pos(s->physical_bytes.peak), pos(s->requested_bytes.peak)));
    card(f, "peak_overhead", a, "peak physical / peak requested");
    snprintf(a, sizeof a, "%" PRId64, s->allocation.current);
    snprintf(sub, sizeof sub, "peak %" PRId64, s->allocation.peak);
    card(f, "allocations", a, sub);
    snprintf(a, sizeof a, "%" PRIu64, s->num_ooms);
    snprintf(sub, sizeof sub, "%" PRIu64 " retries", s->num_alloc_retries);
    card(f, "out of memory", a, sub);
    snprintf(a, sizeof a, "%" PRIu64, p->nsegments);
    snprintf(sub, sizeof sub, "%" PRIu64 " maps, %" PRIu64 " unmaps", s->num_map_calls,
             s->num_unmap_calls);
    card(f, "segments", a, sub);
    if (s->num_stashes || s->offloaded_bytes.peak || s->dropped_bytes.peak || s->host_bytes.peak) {
        /* The tier engine's memory (ckalloc/tier.h). */
        snprintf(sub, sizeof sub, "peak %s", fmt_bytes(pos(s->offloaded_bytes.peak), b, sizeof b));
        card(f, "offloaded", fmt_bytes(pos(s->offloaded_bytes.current), a, sizeof a), sub);
        snprintf(sub, sizeof sub, "peak %s", fmt_bytes(pos(s->dropped_bytes.peak), b, sizeof b));
        card(f, "dropped", fmt_bytes(pos(s->dropped_bytes.current), a, sizeof a), sub);
        snprintf(sub, sizeof sub, "peak %s", fmt_bytes(pos(s->host_bytes.peak), b, sizeof b));
        card(f, "pinned host", fmt_bytes(pos(s->host_bytes.current), a, sizeof a), sub);
        snprintf(a, sizeof a, "%" PRIu64 " / %" PRIu64, s->num_stashes, s->num_fetches);
        snprintf(sub, sizeof sub, "%" PRIu64 " prefetch hits, %" PRIu64 " misses, %" PRIu64 " evictions",
                 s->prefetch_hits, s->prefetch_misses, s->num_evictions);
        card(f, "stashes / fetches", a, sub);
        snprintf(a, sizeof a, "%.3f ms", (double)s->fetch_wait_ns / 1e6);
        snprintf(sub, sizeof sub, "of which replays %.3f ms", (double)s->replay_ns / 1e6);
        card(f, "fetch wait", a, sub);
    }
    fputs("</div>\n", f);
}

static void largest_table(FILE *f, const ckstat_pool *p, size_t k) {
    char a[32];
    fprintf(f,
            "<table class=\"largest\" id=\"largest-%zu\"><thead><tr><th>#</th><th>address</th>"
            "<th>size</th><th>requested</th><th>stream</th><th>tag</th></tr></thead><tbody>\n",
            k);
    for (int i = 0; i < p->ntop; i++) {
        const ckstat_top *t = &p->top[i];
        fprintf(f, "<tr class=\"block\"><td>%d</td><td class=\"mono\">0x%" PRIx64 "</td><td>%s</td>",
                i + 1, t->addr, fmt_bytes(t->size, a, sizeof a));
        fprintf(f, "<td>%s</td><td class=\"mono\">0x%" PRIx64 "</td><td>",
                fmt_bytes(t->requested, a, sizeof a), t->stream);
        put_esc(f, t->tag[0] ? t->tag : "untagged");
        fputs("</td></tr>\n", f);
    }
    if (p->ntop == 0) fputs("<tr class=\"none\"><td colspan=\"6\">no live blocks</td></tr>\n", f);
    fputs("</tbody></table>\n", f);
}

static void tag_table(FILE *f, const ckstat_pool *p, size_t k) {
    char a[32];
    fprintf(f,
            "<table class=\"tags\" id=\"tags-%zu\"><thead><tr><th>tag</th><th>live blocks</th>"
            "<th>live bytes</th></tr></thead><tbody>\n",
            k);
    for (size_t i = 0; i < p->ntags; i++) {
        fputs("<tr><td>", f);
        put_esc(f, p->tags[i].tag);
        fprintf(f, "</td><td>%" PRIu64 "</td><td>%s</td></tr>\n", p->tags[i].count,
                fmt_bytes(p->tags[i].bytes, a, sizeof a));
    }
    fputs("</tbody></table>\n", f);
}

/* The timelines as JSON for the script: per pool, the budget, the peaks, the
 * whole run ("run": history buckets, min and max per bucket) and the recent
 * ring ("recent": one point per operation), as parallel arrays. Times are
 * seconds since the pool was created. Only numbers go in, so nothing here
 * can close the <script> element. The tier engine's offloaded and dropped
 * bytes have arrays of their own (each bucket's max; MiB resolution). */
static void put_u64s(FILE *f, const char *key, const void *base, size_t n, size_t stride,
                     size_t off, int first) {
    fprintf(f, "%s\"%s\":[", first ? "" : ",", key);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%" PRIu64, i ? "," : "",
                *(const uint64_t *)((const char *)base + i * stride + off));
    fputc(']', f);
}

static void put_secs(FILE *f, const char *key, const void *base, size_t n, size_t stride,
                     size_t off, double add) {
    fprintf(f, ",\"%s\":[", key);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%.9g", i ? "," : "",
                *(const double *)((const char *)base + i * stride + off) + add);
    fputc(']', f);
}

static void data_json(FILE *f, const ckstat_report *r) {
    fputs("{\"pools\":[", f);
    for (size_t k = 0; k < r->npools; k++) {
        const ckstat_pool *p = &r->pools[k];
        const ck_stats *s = &p->stats;
        fprintf(f,
                "%s{\"budget\":%" PRIu64 ",\"peak\":{\"live\":%" PRIu64 ",\"reserved\":%" PRIu64
                ",\"physical\":%" PRIu64 "}",
                k ? ",\n" : "\n", s->budget, pos(s->allocated_bytes.peak),
                pos(s->reserved_bytes.peak), pos(s->physical_bytes.peak));
        if (p->history) {
            const ckstat_bucket *b = p->history;
            size_t n = p->nhistory, z = sizeof *b;
            fprintf(f,
                    ",\n\"run\":{\"timed\":%d,\"end\":%.9g,\"span\":%" PRIu64 ",\"total\":%" PRIu64
                    ",",
                    p->history_timed, p->history_end_s, p->history_span, p->history_total);
            put_u64s(f, "records", b, n, z, offsetof(ckstat_bucket, records), 1);
            put_secs(f, "t0", b, n, z, offsetof(ckstat_bucket, t0_s), 0);
            put_secs(f, "t1", b, n, z, offsetof(ckstat_bucket, t1_s), 0);
            size_t lo = offsetof(ckstat_bucket, lo), hi = offsetof(ckstat_bucket, hi);
            put_u64s(f, "live_lo", b, n, z, lo + offsetof(ckstat_point, live), 0);
            put_u64s(f, "live", b, n, z, hi + offsetof(ckstat_point, live), 0);
            put_u64s(f, "reserved_lo", b, n, z, lo + offsetof(ckstat_point, reserved), 0);
            put_u64s(f, "reserved", b, n, z, hi + offsetof(ckstat_point, reserved), 0);
            put_u64s(f, "physical_lo", b, n, z, lo + offsetof(ckstat_point, physical), 0);
            put_u64s(f, "physical", b, n, z, hi + offsetof(ckstat_point, physical), 0);
            put_u64s(f, "offloaded", b, n, z, hi + offsetof(ckstat_point, offloaded), 0);
            put_u64s(f, "dropped", b, n, z, hi + offsetof(ckstat_point, dropped), 0);
            fputc('}', f);
        }
        const ckstat_point *pt = p->timeline;
        size_t n = p->timeline ? p->npoints : 0, z = sizeof *pt;
        uint64_t total = p->history ? p->history_total : n;
        fprintf(f, ",\n\"recent\":{\"first\":%" PRIu64 ",",
                total > n ? total - n : 0);
        put_u64s(f, "live", pt, n, z, offsetof(ckstat_point, live), 1);
        put_u64s(f, "reserved", pt, n, z, offsetof(ckstat_point, reserved), 0);
        put_u64s(f, "physical", pt, n, z, offsetof(ckstat_point, physical), 0);
        put_u64s(f, "offloaded", pt, n, z, offsetof(ckstat_point, offloaded), 0);
        put_u64s(f, "dropped", pt, n, z, offsetof(ckstat_point, dropped), 0);
        put_secs(f, "t", pt, n, z, offsetof(ckstat_point, t_s), p->ring_t0_s);
        fputs("}}", f);
    }
    fputs("]}", f);
}

static const char page_css[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;"
    "max-width:1040px;padding:0 16px;color:#1d2330;background:#fbfbfd}\n"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid "
    "#dde1ea;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}\n"
    ".meta{color:#5a6275;margin:0 0 8px}.mono{font-family:ui-monospace,Menlo,Consolas,monospace}\n"
    ".cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #dde1ea;"
    "border-radius:8px;padding:8px 12px;min-width:120px}\n"
    ".card .label{color:#5a6275;font-size:12px;text-transform:uppercase;letter-spacing:.04em}"
    ".card .value{font-size:20px;font-weight:600}.card .sub{color:#5a6275;font-size:12px}\n"
    "table{border-collapse:collapse;background:#fff;border:1px solid #dde1ea}th,td{padding:4px "
    "10px;text-align:right;border-bottom:1px solid #eef0f5}th{background:#f3f5f9;font-weight:600}"
    "td:first-child,th:first-child,.largest td:nth-child(2),.largest th:nth-child(2){text-align:left}\n"
    ".timeline{background:#fff;border:1px solid #dde1ea;border-radius:8px;padding:8px}\n"
    ".timeline svg{width:100%;height:auto;display:block}.axis{stroke:#9aa2b4;stroke-width:1}"
    ".grid{stroke:#eef0f5;stroke-width:1}.tick{fill:#5a6275;font-size:11px}\n"
    "polyline{fill:none;stroke-width:1.6;stroke-linejoin:round}.s-physical{stroke:#d9822b}"
    "polygon.s-live{fill:#2a7de1;fill-opacity:.8;stroke:none}polygon.s-cached{fill:#7a5cc4;"
    "fill-opacity:.45;stroke:none}.s-live-min{stroke:#13487f;stroke-width:.8}"
    ".budget{stroke:#c0392b;stroke-width:1.4;stroke-dasharray:6 4}.xgrid{stroke:#9aa2b4}\n"
    ".legend{font-size:12px}.legend rect.s-physical{fill:#d9822b}.legend rect.s-cached{fill:#7a5cc4}"
    ".legend rect.s-live{fill:#2a7de1}.s-offloaded{stroke:#1e9e6a}.s-dropped{stroke:#b8489a;"
    "stroke-dasharray:4 2}.legend rect.s-offloaded{fill:#1e9e6a}.legend rect.s-dropped{fill:#b8489a}"
    ".readout{fill:#1d2330;font-size:12px}"
    ".cursor{stroke:#9aa2b4;stroke-dasharray:3 3}\n"
    ".note{color:#5a6275;font-size:12px}\n";

/* Draws each pool's two timelines into their divs: the whole run (history
 * buckets, each drawn at its max, with the min of live as a thin line) on a
 * time axis from the pool's creation, and the recent ring (one point per
 * operation). The x axis is time, or the operation index when the pool did
 * not stamp its operations. The svg carries what it drew (data-max-*,
 * data-y-max, ticks' data-value) for tests/browser/check_report.py. */
static const char page_js[] =
    "(function(){'use strict';\n"
    "var data=JSON.parse(document.getElementById('ck-data').textContent);\n"
    "// What is drawn: live and cached stacked (cached = reserved - live, on top of\n"
    "// live), physical as a line, the budget as a dashed line; when the tier\n"
    "// engine held tensors off the device, offloaded and dropped bytes as lines\n"
    "// (live minus both is what tensors hold on the device).\n"
    "var SERIES=[\n"
    " {key:'live',label:'live',kind:'area'},\n"
    " {key:'cached',label:'cached (reserved \\u2212 live)',kind:'area'},\n"
    " {key:'physical',label:'physical',kind:'line'},\n"
    " {key:'offloaded',label:'offloaded',kind:'line',tier:1},\n"
    " {key:'dropped',label:'dropped',kind:'line',tier:1}];\n"
    "var UNITS=['B','KiB','MiB','GiB','TiB','PiB','EiB'];\n"
    "function bytes(b){var k=0;while(b>=1024&&k<6){b/=1024;k++;}return (k?b.toFixed(2):b)+' '+UNITS[k];}\n"
    "// y ticks: the step is a power of two (so every tick is a whole number of\n"
    "// KiB, MiB, GiB, ...), the smallest that needs at most 8 intervals.\n"
    "function yTicks(max){if(!(max>0))max=1;var step=1;while(max/step>8)step*=2;\n"
    " var top=Math.ceil(max/step)*step,u=0;while(u<6&&Math.pow(1024,u+1)<=step)u++;\n"
    " var U=Math.pow(1024,u),t=[];for(var v=0;v<=top;v+=step)t.push({v:v,label:v?(v/U)+' '+UNITS[u]:'0'});\n"
    " return {top:top,step:step,ticks:t};}\n"
    "// x ticks: 1, 2 or 5 times a power of ten, about 6 of them.\n"
    "function niceStep(span){if(!(span>0))return 1;var e=Math.pow(10,Math.floor(Math.log10(span/6))),m=span/6/e;\n"
    " return (m<=1?1:m<=2?2:m<=5?5:10)*e;}\n"
    "function fmtTime(v,step){if(step>=1)return (+v.toFixed(0))+' s';if(step>=1e-3)return (+(v*1e3).toFixed(Math.max(0,-Math.floor(Math.log10(step*1e3)))))+' ms';\n"
    " return (+(v*1e6).toFixed(Math.max(0,-Math.floor(Math.log10(step*1e6)))))+' \\u00b5s';}\n"
    "function fmtOp(v){return 'op '+Math.round(v);}\n"
    "function maxOf(a){var m=0;for(var i=0;i<a.length;i++)if(a[i]>m)m=a[i];return m;}\n"
    "// v: n items; item i holds from x[i] to x[i+1] (the last to x1); hi.live,\n"
    "// hi.reserved, hi.physical (and lo.* for buckets) per item; x0 the axis start.\n"
    "function draw(el,v,budget){\n"
    " var n=v.n;\n"
    " if(!n){el.textContent='No operations recorded.';el.setAttribute('data-rendered','empty');return;}\n"
    " var W=960,H=320,L=78,R=16,T=30,B=38,pw=W-L-R,ph=H-T-B;\n"
    " var mx={live:maxOf(v.hi.live),reserved:maxOf(v.hi.reserved),physical:maxOf(v.hi.physical),\n"
    "  offloaded:v.hi.offloaded?maxOf(v.hi.offloaded):0,dropped:v.hi.dropped?maxOf(v.hi.dropped):0};\n"
    " var tiers=mx.offloaded>0||mx.dropped>0;\n"
    " var dmax=Math.max(mx.live,mx.reserved,mx.physical);\n"
    " var showBudget=budget>0&&budget<=2*Math.max(dmax,1);\n"
    " var yt=yTicks(showBudget?Math.max(dmax,budget):dmax),top=yt.top;\n"
    " var x0=v.x0,x1=v.x1>v.x0?v.x1:v.x0+1;\n"
    " function X(t){return L+(t-x0)/(x1-x0)*pw;}\n"
    " function Y(b){return T+ph-(b/top)*ph;}\n"
    " function f(z){return z.toFixed(2);}\n"
    " function xs(i){return i+1<n?v.x[i+1]:x1;}\n"
    " function step(a){var p=[];for(var i=0;i<n;i++){p.push(f(X(v.x[i]))+','+f(Y(a[i])));p.push(f(X(xs(i)))+','+f(Y(a[i])));}return p;}\n"
    " var o=['<svg viewBox=\"0 0 '+W+' '+H+'\" role=\"img\" data-view=\"'+v.name+'\" data-points=\"'+n+'\"'+\n"
    "  ' data-max-live=\"'+mx.live+'\" data-max-reserved=\"'+mx.reserved+'\" data-max-physical=\"'+mx.physical+'\"'+\n"
    "  ' data-max-offloaded=\"'+mx.offloaded+'\" data-max-dropped=\"'+mx.dropped+'\"'+\n"
    "  ' data-y-max=\"'+top+'\" data-y-step=\"'+yt.step+'\" data-plot=\"'+L+' '+T+' '+pw+' '+ph+'\"'+\n"
    "  ' data-x-start=\"'+x0+'\" data-x-end=\"'+x1+'\" data-x-unit=\"'+(v.timed?'s':'op')+'\">'];\n"
    " yt.ticks.forEach(function(t){var y=f(Y(t.v));\n"
    "  o.push('<line class=\"grid\" x1=\"'+L+'\" x2=\"'+(W-R)+'\" y1=\"'+y+'\" y2=\"'+y+'\"/>');\n"
    "  o.push('<text class=\"tick ytick\" data-value=\"'+t.v+'\" x=\"'+(L-6)+'\" y=\"'+y+'\" text-anchor=\"end\" dominant-baseline=\"middle\">'+t.label+'</text>');});\n"
    " var xstep=v.timed?niceStep(x1-x0):Math.max(1,Math.round(niceStep(x1-x0)));\n"
    " for(var t=Math.ceil(x0/xstep-1e-9)*xstep;t<=x1+xstep*1e-9;t+=xstep){var tx=f(X(t));\n"
    "  o.push('<line class=\"xgrid\" x1=\"'+tx+'\" x2=\"'+tx+'\" y1=\"'+(T+ph)+'\" y2=\"'+(T+ph+4)+'\"/>');\n"
    "  o.push('<text class=\"tick xtick\" data-value=\"'+(+t.toPrecision(12))+'\" x=\"'+tx+'\" y=\"'+(H-B+18)+'\" text-anchor=\"middle\">'+(v.timed?fmtTime(t,xstep):fmtOp(t))+'</text>');}\n"
    " var live=step(v.hi.live),res=step(v.hi.reserved);\n"
    " o.push('<polygon class=\"s-live\" data-series=\"live\" data-points=\"'+n+'\" points=\"'+f(X(v.x[0]))+','+f(Y(0))+' '+live.join(' ')+' '+f(X(x1))+','+f(Y(0))+'\"/>');\n"
    " o.push('<polygon class=\"s-cached\" data-series=\"cached\" data-points=\"'+n+'\" points=\"'+res.join(' ')+' '+live.slice().reverse().join(' ')+'\"/>');\n"
    " if(v.lo)o.push('<polyline class=\"s-live-min\" data-series=\"live-min\" data-points=\"'+n+'\" points=\"'+step(v.lo.live).join(' ')+'\"/>');\n"
    " o.push('<polyline class=\"s-physical\" data-series=\"physical\" data-points=\"'+n+'\" points=\"'+step(v.hi.physical).join(' ')+'\"/>');\n"
    " if(tiers)['offloaded','dropped'].forEach(function(k){if(mx[k]>0)o.push('<polyline class=\"s-'+k+'\" data-series=\"'+k+'\" data-points=\"'+n+'\" points=\"'+step(v.hi[k]).join(' ')+'\"/>');});\n"
    " if(showBudget){var by=f(Y(budget));o.push('<line class=\"budget\" data-value=\"'+budget+'\" x1=\"'+L+'\" x2=\"'+(W-R)+'\" y1=\"'+by+'\" y2=\"'+by+'\"/>'+\n"
    "  '<text class=\"tick\" x=\"'+(W-R-4)+'\" y=\"'+(+by-4)+'\" text-anchor=\"end\">budget '+bytes(budget)+'</text>');}\n"
    " o.push('<line class=\"axis\" x1=\"'+L+'\" x2=\"'+L+'\" y1=\"'+T+'\" y2=\"'+(T+ph)+'\"/>');\n"
    " o.push('<line class=\"axis\" x1=\"'+L+'\" x2=\"'+(W-R)+'\" y1=\"'+(T+ph)+'\" y2=\"'+(T+ph)+'\"/>');\n"
    " var lx=L;o.push('<g class=\"legend\">');SERIES.forEach(function(s){if(s.tier&&!(mx[s.key]>0))return;\n"
    "  o.push('<rect class=\"s-'+s.key+'\" x=\"'+lx+'\" y=\"8\" width=\"12\" height=\"12\"/><text x=\"'+(lx+16)+'\" y=\"18\">'+s.label+'</text>');lx+=26+s.label.length*6.5;});\n"
    " if(budget>0&&!showBudget)o.push('<text x=\"'+lx+'\" y=\"18\">budget '+bytes(budget)+' (above the scale)</text>');\n"
    " o.push('</g><line class=\"cursor\" y1=\"'+T+'\" y2=\"'+(T+ph)+'\" x1=\"-10\" x2=\"-10\"/>'+\n"
    "  '<text class=\"readout\" x=\"'+(W-R)+'\" y=\"18\" text-anchor=\"end\"></text></svg>');\n"
    " el.innerHTML=o.join('');el.setAttribute('data-rendered','yes');\n"
    " var svg=el.querySelector('svg'),cur=svg.querySelector('.cursor'),ro=svg.querySelector('.readout');\n"
    " svg.addEventListener('mousemove',function(ev){var r=svg.getBoundingClientRect(),px=(ev.clientX-r.left)*W/r.width;\n"
    "  var t=x0+(px-L)/pw*(x1-x0),a=0,b=n-1;while(a<b){var m=(a+b+1)>>1;if(v.x[m]<=t)a=m;else b=m-1;}\n"
    "  var cx=f(X(v.x[a]));cur.setAttribute('x1',cx);cur.setAttribute('x2',cx);\n"
    "  function rng(k){return v.lo&&v.lo[k][a]!==v.hi[k][a]?bytes(v.lo[k][a])+'\\u2013'+bytes(v.hi[k][a]):bytes(v.hi[k][a]);}\n"
    "  ro.textContent=(v.timed?fmtTime(v.x[a],1e-6):fmtOp(v.x[a]))+'  live '+rng('live')+'  reserved '+rng('reserved')+'  physical '+rng('physical')+\n"
    "   (tiers?'  offloaded '+bytes(v.hi.offloaded[a])+'  dropped '+bytes(v.hi.dropped[a]):'');});\n"
    "}\n"
    "data.pools.forEach(function(p,k){\n"
    " var el=document.getElementById('timeline-'+k),run=p.run;\n"
    " if(el&&run){var n=run.live.length,x=[];\n"
    "  for(var i=0;i<n;i++)x.push(run.timed?run.t0[i]:i*run.span);\n"
    "  draw(el,{name:'run',n:n,x:x,x0:0,x1:run.timed?run.end:run.total,timed:run.timed,\n"
    "   hi:{live:run.live,reserved:run.reserved,physical:run.physical,offloaded:run.offloaded,dropped:run.dropped},\n"
    "   lo:{live:run.live_lo,reserved:run.reserved_lo,physical:run.physical_lo}},p.budget);}\n"
    " else if(el){el.textContent='This snapshot has no whole-run history (written by an older ckalloc).';el.setAttribute('data-rendered','empty');}\n"
    " var rc=p.recent,re=document.getElementById('recent-'+k);\n"
    " if(re){var m=rc.live.length,timed=m>0&&rc.t[m-1]>rc.t[0],xr=[];\n"
    "  for(var j=0;j<m;j++)xr.push(timed?rc.t[j]:rc.first+j);\n"
    "  draw(re,{name:'recent',n:m,x:xr,x0:m?xr[0]:0,x1:m?(timed?xr[m-1]:rc.first+m):1,timed:timed,\n"
    "   hi:{live:rc.live,reserved:rc.reserved,physical:rc.physical,offloaded:rc.offloaded,dropped:rc.dropped}},p.budget);}\n"
    "});})();\n";

int ckstat_write_html(const ckstat_report *r, const char *out_path, char *err, size_t errn) {
    FILE *f = fopen(out_path, "w");
    if (!f) {
        snprintf(err, errn, "%s: cannot write: %s", out_path, strerror(errno));
        return -1;
    }
    char when[64] = "unknown time";
    struct tm tm;
    if (r->taken_at > 0 && r->taken_at < 253402300800.0) { /* before year 10000 */
        time_t t = (time_t)r->taken_at;
        if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    }

    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n<title>ckalloc "
          "snapshot: ",
          f);
    put_esc(f, r->cmd[0] ? r->cmd : "process");
    fprintf(f, " (pid %d)</title>\n<style>\n%s</style></head><body>\n", r->pid, page_css);
    fputs("<h1>ckalloc snapshot</h1>\n<p class=\"meta\">", f);
    fprintf(f, "pid %d &middot; <span class=\"mono\">", r->pid);
    put_esc(f, r->cmd);
    fprintf(f, "</span> &middot; taken %s &middot; %zu pool%s &middot; from ", when, r->npools,
            r->npools == 1 ? "" : "s");
    put_esc(f, r->source);
    fputs("</p>\n", f);

    for (size_t k = 0; k < r->npools; k++) {
        const ckstat_pool *p = &r->pools[k];
        fprintf(f, "<section class=\"pool\" id=\"pool-%zu\">\n<h2>Pool %zu: device %d, ", k, k,
                p->device);
        put_esc(f, p->backend);
        fputs(" backend</h2>\n", f);
        headline(f, p);
        fputs("<h3>Memory over the whole run</h3>\n", f);
        fprintf(f, "<div class=\"timeline\" id=\"timeline-%zu\" data-expect-points=\"%zu\">"
                   "<noscript>The timeline is drawn by JavaScript.</noscript></div>\n",
                k, p->nhistory);
        if (p->history)
            fprintf(f,
                    "<p class=\"note\">All %" PRIu64 " operations since the pool was created, in %zu "
                    "buckets of %" PRIu64 " (each drawn at its maximum, so no peak is lost; the thin "
                    "line is the minimum of live). Live = allocated bytes, cached = reserved "
                    "&minus; live, stacked on live; physical = what the budget caps.</p>\n",
                    p->history_total, p->nhistory, p->history_span);
        fputs("<h3>Recent operations</h3>\n", f);
        fprintf(f, "<div class=\"timeline\" id=\"recent-%zu\" data-expect-points=\"%zu\">"
                   "<noscript>The timeline is drawn by JavaScript.</noscript></div>\n",
                k, p->npoints);
        fprintf(f, "<p class=\"note\">The pool's last %zu operations, one point each.</p>\n",
                p->npoints);
        fprintf(f, "<h3>Largest live blocks</h3>\n");
        largest_table(f, p, k);
        fputs("<h3>Live bytes by tag</h3>\n", f);
        tag_table(f, p, k);
        fprintf(f, "<p class=\"note\">%" PRIu64 " blocks and %" PRIu64 " segments in the snapshot.</p>\n",
                p->nblocks, p->nsegments);
        fputs("</section>\n", f);
    }
    fputs("<script type=\"application/json\" id=\"ck-data\">", f);
    data_json(f, r);
    fprintf(f, "</script>\n<script>\n%s</script>\n</body></html>\n", page_js);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        snprintf(err, errn, "%s: cannot write: %s", out_path, strerror(errno ? errno : EIO));
        return -1;
    }
    return 0;
}
