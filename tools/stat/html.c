/* ckalloc-stat --html: one self-contained page for a snapshot. Everything is
 * inline (CSS, the data as JSON, the script that draws the SVG timeline), so
 * the page opens offline and can be mailed around. The headline numbers and
 * the tables are plain HTML; only the timeline needs the script. */
#include "stat.h"

#include <errno.h>
#include <inttypes.h>
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
    if (s->requested_bytes.peak > 0)
        snprintf(a, sizeof a, "%.3f",
                 (double)s->physical_bytes.peak / (double)s->requested_bytes.peak);
    else
        snprintf(a, sizeof a, "-");
    card(f, "fragmentation", a, "peak physical / peak requested");
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

/* The timelines as JSON for the script: per pool, parallel arrays. Only
 * numbers go in, so nothing here can close the <script> element. Tiers: once
 * ckstat_point carries bytes per tier, each tier gets an array here and an
 * entry in SERIES (page_js). */
static void data_json(FILE *f, const ckstat_report *r) {
    fputs("{\"pools\":[", f);
    for (size_t k = 0; k < r->npools; k++) {
        const ckstat_pool *p = &r->pools[k];
        fputs(k ? ",\n{" : "\n{", f);
        const char *keys[] = {"t", "live", "reserved", "physical"};
        for (int s = 0; s < 4; s++) {
            fprintf(f, "%s\"%s\":[", s ? ",\n" : "", keys[s]);
            for (size_t i = 0; i < p->npoints; i++) {
                const ckstat_point *pt = &p->timeline[i];
                if (i) fputc(',', f);
                if (s == 0) fprintf(f, "%.9g", pt->t_s);
                else fprintf(f, "%" PRIu64, s == 1 ? pt->live : s == 2 ? pt->reserved : pt->physical);
            }
            fputc(']', f);
        }
        fputc('}', f);
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
    ".s-cached{stroke:#7a5cc4}.s-live{stroke:#2a7de1}\n"
    ".legend{font-size:12px}.legend rect.s-physical{fill:#d9822b}.legend rect.s-cached{fill:#7a5cc4}"
    ".legend rect.s-live{fill:#2a7de1}.readout{fill:#1d2330;font-size:12px}"
    ".cursor{stroke:#9aa2b4;stroke-dasharray:3 3}\n"
    ".note{color:#5a6275;font-size:12px}\n";

/* Draws each pool's timeline into its div. Series are what the ring records
 * per operation; the x axis is time, or the operation index when every
 * record has the same time. */
static const char page_js[] =
    "(function(){'use strict';\n"
    "var data=JSON.parse(document.getElementById('ck-data').textContent);\n"
    "// The lines drawn. Tiers: once the ring records bytes per tier (offloaded,\n"
    "// host, ...), the snapshot gives one array per tier and each gets an entry here.\n"
    "var SERIES=[\n"
    " {key:'physical',label:'physical',get:function(p,i){return p.physical[i];}},\n"
    " {key:'cached',label:'cached (reserved \\u2212 live)',get:function(p,i){return "
    "Math.max(0,p.reserved[i]-p.live[i]);}},\n"
    " {key:'live',label:'live',get:function(p,i){return p.live[i];}}];\n"
    "function bytes(b){var u=['B','KiB','MiB','GiB','TiB','PiB'],k=0;while(b>=1024&&k<5){b/=1024;k++;}"
    "return (k?b.toFixed(b<10?2:1):b)+' '+u[k];}\n"
    "function secs(s){return s<1e-3?(s*1e6).toFixed(0)+' \\u00b5s':s<1?(s*1e3).toFixed(1)+' ms':"
    "s.toFixed(s<10?2:1)+' s';}\n"
    "function niceMax(v){if(v<=0)return 1;var e=Math.pow(10,Math.floor(Math.log10(v))),m=v/e;"
    "return (m<=1?1:m<=2?2:m<=5?5:10)*e;}\n"
    "data.pools.forEach(function(p,k){\n"
    " var el=document.getElementById('timeline-'+k);if(!el)return;\n"
    " var n=p.t.length;\n"
    " if(!n){el.textContent='No operations recorded.';el.setAttribute('data-rendered','empty');return;}\n"
    " var W=960,H=300,L=72,R=16,T=28,B=36,pw=W-L-R,ph=H-T-B;\n"
    " var t0=p.t[0],t1=p.t[n-1],byIndex=!(t1>t0);\n"
    " function X(i){var f=byIndex?(n>1?i/(n-1):0.5):(p.t[i]-t0)/(t1-t0);return L+f*pw;}\n"
    " var top=0;SERIES.forEach(function(s){for(var i=0;i<n;i++)top=Math.max(top,s.get(p,i));});\n"
    " top=niceMax(top);function Y(v){return T+ph-(v/top)*ph;}\n"
    " var o=['<svg viewBox=\"0 0 '+W+' '+H+'\" role=\"img\" data-pool=\"'+k+'\">'];\n"
    " for(var g=0;g<=4;g++){var v=top*g/4,y=Y(v).toFixed(1);"
    "o.push('<line class=\"grid\" x1=\"'+L+'\" x2=\"'+(W-R)+'\" y1=\"'+y+'\" y2=\"'+y+'\"/>');"
    "o.push('<text class=\"tick\" x=\"'+(L-6)+'\" y=\"'+y+'\" text-anchor=\"end\" "
    "dominant-baseline=\"middle\">'+bytes(v)+'</text>');}\n"
    " for(var g2=0;g2<=4;g2++){var x=(L+pw*g2/4).toFixed(1),lab=byIndex?'op '+Math.round((n-1)*g2/4):"
    "secs((t1-t0)*g2/4);o.push('<text class=\"tick\" x=\"'+x+'\" y=\"'+(H-B+16)+'\" "
    "text-anchor=\"'+(g2==4?'end':'middle')+'\">'+lab+'</text>');}\n"
    " o.push('<line class=\"axis\" x1=\"'+L+'\" x2=\"'+L+'\" y1=\"'+T+'\" y2=\"'+(T+ph)+'\"/>');\n"
    " o.push('<line class=\"axis\" x1=\"'+L+'\" x2=\"'+(W-R)+'\" y1=\"'+(T+ph)+'\" y2=\"'+(T+ph)+'\"/>');\n"
    " // Memory holds its value until the next operation: a step line, so each\n"
    " // record after the first adds two vertices (2n-1 in all).\n"
    " SERIES.forEach(function(s){var pts=[];for(var i=0;i<n;i++){var x=X(i).toFixed(1);"
    "if(i)pts.push(x+','+Y(s.get(p,i-1)).toFixed(1));pts.push(x+','+Y(s.get(p,i)).toFixed(1));}"
    "o.push('<polyline class=\"s-'+s.key+'\" data-series=\"'+s.key+'\" data-points=\"'+n+'\" "
    "points=\"'+pts.join(' ')+'\"/>');});\n"
    " var lx=L;o.push('<g class=\"legend\">');SERIES.forEach(function(s){"
    "o.push('<rect class=\"s-'+s.key+'\" x=\"'+lx+'\" y=\"8\" width=\"12\" height=\"12\"/>"
    "<text x=\"'+(lx+16)+'\" y=\"18\">'+s.label+'</text>');lx+=24+s.label.length*7;});o.push('</g>');\n"
    " o.push('<line class=\"cursor\" y1=\"'+T+'\" y2=\"'+(T+ph)+'\" x1=\"-10\" x2=\"-10\"/>"
    "<text class=\"readout\" x=\"'+(W-R)+'\" y=\"18\" text-anchor=\"end\"></text></svg>');\n"
    " el.innerHTML=o.join('');el.setAttribute('data-rendered','yes');\n"
    " var svg=el.querySelector('svg'),cur=svg.querySelector('.cursor'),ro=svg.querySelector('.readout');\n"
    " svg.addEventListener('mousemove',function(ev){var r=svg.getBoundingClientRect();"
    "var x=(ev.clientX-r.left)*W/r.width,best=0,bd=1e9;for(var i=0;i<n;i++){var d=Math.abs(X(i)-x);"
    "if(d<bd){bd=d;best=i;}}var cx=X(best).toFixed(1);cur.setAttribute('x1',cx);cur.setAttribute('x2',cx);"
    "ro.textContent=(byIndex?'op '+best:secs(p.t[best]-t0))+'  '+SERIES.map(function(s){"
    "return s.key+' '+bytes(s.get(p,best));}).join('  ');});\n"
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
        fputs("<h3>Memory over time</h3>\n", f);
        fprintf(f, "<div class=\"timeline\" id=\"timeline-%zu\" data-expect-points=\"%zu\">"
                   "<noscript>The timeline is drawn by JavaScript.</noscript></div>\n",
                k, p->npoints);
        fprintf(f,
                "<p class=\"note\">The pool's last %zu operations: live = allocated bytes, cached = "
                "reserved &minus; live, physical = what the budget caps.</p>\n",
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
