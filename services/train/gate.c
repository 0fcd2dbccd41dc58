/* gate.c — the no-forgetting gate (gate.h). */
#include "gate.h"

#include <stdarg.h>
#include <stdio.h>

static void add(char *why, size_t n, size_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(char *why, size_t n, size_t *at, const char *fmt, ...)
{
    if (!why || *at >= n) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(why + *at, n - *at, fmt, ap);
    va_end(ap);
    if (k > 0) *at += (size_t)k;
}

int gate_decide(const gate_domain_t *d, int n, double margin_pts, double min_gain_pts, char *why,
                size_t why_n)
{
    size_t at = 0;
    if (why && why_n) why[0] = 0;
    int pass = 1, have_trained = 0;
    for (int i = 0; i < n; i++) {
        const gate_domain_t *g = &d[i];
        add(why, why_n, &at, "%s%s", i ? "; " : "", g->name);
        if (g->trained) {
            have_trained = 1;
            if (g->n < 1) {
                pass = 0;
                add(why, why_n, &at, " (trained): REFUSED, no holdout labels to verify it on");
                continue;
            }
            double ref = g->ref_iou < 0 ? 0 : g->ref_iou;
            double gain = 100 * (g->cand_iou - ref);
            int ok = gain > min_gain_pts;
            pass &= ok;
            add(why, why_n, &at, " (trained, %d holdout): %.2f -> %.2f IoU vs %s, %+.2f pts %s %.2f: %s",
                g->n, 100 * ref, 100 * g->cand_iou, g->ref_zeroshot ? "zero-shot SAM" : "active",
                gain, ok ? ">" : "<=", min_gain_pts, ok ? "ok" : "REFUSED (does not beat it)");
        } else if (g->n < 1 || g->ref_iou < 0) {
            add(why, why_n, &at, ": skipped (%s)", g->n < 1 ? "no holdout labels" : "no reference");
        } else {
            double drop = 100 * (g->ref_iou - g->cand_iou);
            int ok = drop <= margin_pts;
            pass &= ok;
            add(why, why_n, &at, " (%d holdout): %.2f -> %.2f IoU, %+.2f pts (margin %.2f): %s", g->n,
                100 * g->ref_iou, 100 * g->cand_iou, -drop, margin_pts, ok ? "ok" : "REFUSED (forgetting)");
        }
    }
    if (!have_trained) {
        pass = 0;
        add(why, why_n, &at, "%sno trained domain: REFUSED", n ? "; " : "");
    }
    return pass;
}
