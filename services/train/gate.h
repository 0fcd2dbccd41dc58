/* gate.h — moda-train's no-forgetting gate: may a candidate bank replace the active one?
 *
 * Pure decision on numbers measured elsewhere (job.c: learn_eval_bank on each domain's
 * holdout labels, for the candidate and for the active bank). Rules (docs/train.md):
 *   - the trained domain must have holdout labels and its candidate IoU must beat the
 *     reference (the active bank's IoU, or zero-shot SAM when the active bank has no adapter
 *     for it) by more than min_gain IoU points;
 *   - every other domain with holdout labels and a reference may lose at most `margin`
 *     IoU points (reference - candidate <= margin); domains without holdout labels are
 *     skipped (and named in the explanation).
 * IoUs are fractions in [0, 1]; margin and min_gain are in points (1.0 = 0.01 IoU).
 */
#ifndef MODA_TRAIN_GATE_H
#define MODA_TRAIN_GATE_H

#include <stddef.h>

typedef struct gate_domain {
    char name[65];
    int trained;      /* 1 for the domain the job trained */
    int n;            /* holdout images evaluated (0: none) */
    double cand_iou;  /* candidate bank, adapter chosen as in production (selector) */
    double ref_iou;   /* active bank, or zero-shot SAM (ref_zeroshot); < 0: no reference */
    int ref_zeroshot; /* ref_iou is zero-shot SAM (the active bank lacks this domain) */
} gate_domain_t;

/* Returns 1 (pass) or 0 (refuse). why (may be NULL) receives one line with every domain's
 * numbers and the verdict per domain, truncated to why_n. */
int gate_decide(const gate_domain_t *d, int n, double margin_pts, double min_gain_pts, char *why,
                size_t why_n);

#endif
