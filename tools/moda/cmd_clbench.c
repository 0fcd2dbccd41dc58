/* moda cl-bench — the continual-learning benchmark of ../shared/design/MODA.md.
 *
 *   moda cl-bench --data DIR --domains a,b,c [--methods zeroshot,naive,joint,moda]
 *                 [--prompts box,auto] [--epochs N] [--seed S] [--out results.json] ...
 *
 * Domains arrive in the given order. Every method sees the same encoded samples, the same
 * recipe and the same seed:
 *   zeroshot  SAM's own mask (no adapter);
 *   naive     one adapter fine-tuned on each domain in turn (it forgets);
 *   joint     one adapter trained once on the union of all train splits (upper bound: only
 *             the final row of the IoU matrix exists);
 *   moda      the MoDA engine (learn.h): one adapter per domain + the selector retrained on
 *             the replay buffers after each domain; test images are segmented by the adapter
 *             the selector picks (no domain id).
 * After step t every seen domain's test split is evaluated: a[t][i] = mean per-image IoU
 * (percent). Last = mean_i a[T-1][i]; Avg = mean_t mean_{i<=t} a[t][i]; FF = mean_{i<T-1}
 * (max_{i<=t<T-1} a[t][i] - a[T-1][i]). One training serves both prompt modes (the training
 * prompts are mixed, MODA.md point 5). Naive's first step IS MoDA's first adapter (same
 * initialisation, data, recipe and seed), so it is reused instead of trained twice.
 * Exit 0 ok, 2 bad arguments or data, 1 other failures.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "cmds.h"
#include "dataset.h"
#include "device.h"
#include "json.h"
#include "kn.h"
#include "learn.h"
#include "paths.h"
#include "sam.h"
#include "train.h"

#define CB_MAXD 16

static const char *HELP =
    "usage: moda cl-bench --data DIR --domains a,b,c [--methods zeroshot,naive,joint,moda]\n"
    "                     [--prompts box,auto] [--epochs N] [--lr X] [--seed S] [--out FILE]\n"
    "                     [--model M] [--threads T] [--max-train N] [--max-test N] [--quiet]\n"
    "                     [--device D]\n\n"
    "Run the MoDA continual-learning benchmark (../shared/design/MODA.md, docs/moda.md):\n"
    "domains arrive in order; after each one every seen domain's test split is evaluated.\n"
    "Prints a table and writes every number (IoU in percent) as JSON.\n\n"
    "  --data DIR       folder with one <domain>/{images,masks,split.txt} per domain\n"
    "  --domains LIST   comma-separated domain folders, in arrival order (2..16)\n"
    "  --methods LIST   any of zeroshot,naive,joint,moda (default: all four)\n"
    "  --prompts LIST   evaluation prompts: box (the GT box) and/or auto (no prompt) (default both)\n"
    "  --epochs N       training epochs per domain (default: the recipe's, docs/moda.md)\n"
    "  --lr X           Adam learning rate (default: the recipe's)\n"
    "  --seed S         RNG seed for every method (default 0)\n"
    "  --out FILE       JSON results (default cl-bench.json)\n"
    "  --model M        SAM weights (default: $MODA_MODEL, else .deps/models/mobile_sam.safetensors)\n"
    "  --threads T      CPU threads (default: all cores)\n"
    "  --max-train N    use only N train samples per domain, spread over the split (quick runs)\n"
    "  --max-test N     evaluate only N test samples per domain, spread over the split\n"
    "  --quiet          no per-epoch progress lines\n"
    "  --device D       where the adapter training steps run: cpu (default, bit-reproducible),\n"
    "                   cuda or auto (cuda when a device is present); the rest stays on the CPU\n";

enum { M_ZS, M_NAIVE, M_JOINT, M_MODA, M_N };
static const char *METHOD[M_N] = {"zeroshot", "naive", "joint", "moda"};
static const char *PROMPT[2] = {"box", "auto"};

typedef struct cb_res {
    int ran;
    double a[2][CB_MAXD][CB_MAXD];      /* [prompt][t][i], percent */
    double oracle[2][CB_MAXD][CB_MAXD]; /* moda: the true domain's adapter */
    double sel_acc[CB_MAXD];            /* moda: per domain at the last step */
    double sel_all;                     /* moda: over every test image at the last step */
    double seconds;
} cb_res_t;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int quiet;

static void progress(const train_progress_t *p, void *ctx)
{
    if (quiet) return;
    printf("  [%s] epoch %d/%d  loss %.4f  lr %.0e  %.2f samples/s  ETA %.0f s\n",
           (const char *)ctx, p->epoch, p->epochs, p->loss, (double)p->lr, p->samples_per_s,
           p->eta_s);
    fflush(stdout);
}

static void note(const char *line, void *ctx)
{
    (void)ctx;
    if (!quiet) printf("  %s\n", line);
    fflush(stdout);
}

/* Splits a comma list into names (pointers into buf). Returns the count or -1. */
static int split_list(char *buf, char **out, int max)
{
    int n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max || !*tok) return -1;
        out[n++] = tok;
    }
    return n;
}

/* a[t][i] for i <= t of one adapter (NULL: zero-shot) on test sets 0..t. */
static int eval_row(sam_t *sam, train_set_t **te, int t, const adapter_t *a, int np,
                    const int *prompts, double row[2][CB_MAXD], err_t *err)
{
    for (int p = 0; p < np; p++)
        for (int i = 0; i <= t; i++) {
            double m;
            int rc = train_eval(sam, te[i], a, prompts[p], &m, NULL, err);
            if (rc) return rc;
            row[p][i] = 100 * m;
        }
    return 0;
}

static void summary(double a[CB_MAXD][CB_MAXD], int T, int full, double *last,
                    double *avg, double *ff)
{
    double s = 0;
    for (int i = 0; i < T; i++) s += a[T - 1][i];
    *last = s / T;
    if (!full) return;
    double sa = 0;
    for (int t = 0; t < T; t++) {
        double r = 0;
        for (int i = 0; i <= t; i++) r += a[t][i];
        sa += r / (t + 1);
    }
    *avg = sa / T;
    double sf = 0;
    for (int i = 0; i < T - 1; i++) {
        double mx = a[i][i];
        for (int t = i; t < T - 1; t++)
            if (a[t][i] > mx) mx = a[t][i];
        sf += mx - a[T - 1][i];
    }
    *ff = T > 1 ? sf / (T - 1) : 0;
}

static void json_matrix(json_writer_t *w, double a[CB_MAXD][CB_MAXD], int T)
{
    json_w_begin_arr(w);
    for (int t = 0; t < T; t++) {
        json_w_begin_arr(w);
        for (int i = 0; i <= t; i++) json_w_double(w, a[t][i]);
        json_w_end_arr(w);
    }
    json_w_end_arr(w);
}

int cmd_clbench(int argc, char **argv)
{
    const char *data = NULL, *model = NULL, *out = "cl-bench.json", *device = "cpu";
    char dom_buf[1024] = "", meth_buf[256] = "zeroshot,naive,joint,moda", pr_buf[64] = "box,auto";
    int epochs = -1, seed = 0, threads = 0, max_train = 0, max_test = 0;
    double lr = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v || strncmp(a, "--", 2)) {
            fprintf(stderr, "moda cl-bench: %s '%s' (see --help)\n",
                    v ? "unknown argument" : "missing value after", a);
            return 2;
        }
        i++;
        char *end;
        int *ip = !strcmp(a, "--epochs")      ? &epochs
                  : !strcmp(a, "--seed")      ? &seed
                  : !strcmp(a, "--threads")   ? &threads
                  : !strcmp(a, "--max-train") ? &max_train
                  : !strcmp(a, "--max-test")  ? &max_test
                                              : NULL;
        if (ip) {
            if (client_int_opt("cl-bench", a, v, ip == &seed ? 0 : 1, INT_MAX, ip)) return 2;
        } else if (!strcmp(a, "--lr")) {
            lr = strtod(v, &end);
            if (*end || !(lr > 0 && lr < 1)) {
                fprintf(stderr, "moda cl-bench: --lr '%s': need a number in (0, 1)\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--domains") || !strcmp(a, "--methods") || !strcmp(a, "--prompts")) {
            char *dst = a[2] == 'd' ? dom_buf : a[2] == 'm' ? meth_buf : pr_buf;
            size_t cap = a[2] == 'd' ? sizeof dom_buf : a[2] == 'm' ? sizeof meth_buf : sizeof pr_buf;
            if (strlen(v) >= cap) {
                fprintf(stderr, "moda cl-bench: %s: list too long\n", a);
                return 2;
            }
            strcpy(dst, v);
        } else {
            fprintf(stderr, "moda cl-bench: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    char *doms[CB_MAXD], *meths[M_N + 1], *prs[3];
    int T = split_list(dom_buf, doms, CB_MAXD);
    int nm = split_list(meth_buf, meths, M_N + 1), npr = split_list(pr_buf, prs, 3);
    if (!data || T < 2) {
        fprintf(stderr, "moda cl-bench: %s (see --help)\n",
                !data ? "--data is required" : "--domains needs 2..16 comma-separated names");
        return 2;
    }
    int want[M_N] = {0}, prompts[2], np = 0;
    for (int k = 0; k < nm; k++) {
        int f = -1;
        for (int m = 0; m < M_N; m++)
            if (!strcmp(meths[k], METHOD[m])) f = m;
        if (f < 0) {
            fprintf(stderr, "moda cl-bench: --methods: unknown method '%s' (zeroshot, naive, "
                            "joint, moda)\n", meths[k]);
            return 2;
        }
        want[f] = 1;
    }
    for (int k = 0; k < npr; k++) {
        if (strcmp(prs[k], "box") && strcmp(prs[k], "auto")) {
            fprintf(stderr, "moda cl-bench: --prompts: unknown prompt '%s' (box, auto)\n", prs[k]);
            return 2;
        }
        prompts[np++] = strcmp(prs[k], "box") ? TRAIN_PROMPT_AUTO : TRAIN_PROMPT_BOX;
    }
    if (nm < 1 || np < 1) {
        fprintf(stderr, "moda cl-bench: --methods and --prompts need at least one entry\n");
        return 2;
    }
    char model_buf[4096];
    if (!model) {
        if (paths_default_model(model_buf, sizeof model_buf)) {
            fprintf(stderr, "moda cl-bench: default model path too long\n");
            return 1;
        }
        model = model_buf;
    }
    if (threads) kn_set_threads((int)threads);
    err_t e = {0};
    device_choice_t dc;
    if (device_select(device, 1, &dc, &e)) {
        fprintf(stderr, "moda cl-bench: %s\n", e.msg);
        return 2;
    }
    device_log(&dc);

    double t_start = now_s();
    int rc = 0;
    dataset_t *ds[CB_MAXD] = {0};
    train_set_t *tr[CB_MAXD] = {0}, *te[CB_MAXD] = {0}, *all = NULL;
    abank_replay_t *rp[CB_MAXD] = {0};
    int nrp[CB_MAXD] = {0};
    sam_t *sam = NULL;
    abank_t *bank = NULL;
    adapter_t *naive = NULL, *joint = NULL;
    cb_res_t *res = calloc(M_N, sizeof *res);
    char *js = NULL;
    if (!res) {
        fprintf(stderr, "moda cl-bench: out of memory\n");
        return 1;
    }
    /* data first: bad folders are reported before the slow model load */
    for (int t = 0; t < T; t++) {
        char dir[DS_PATH_MAX];
        snprintf(dir, sizeof dir, "%s/%s", data, doms[t]);
        if (!(ds[t] = dataset_open(dir, &e))) {
            fprintf(stderr, "moda cl-bench: %s\n", e.msg);
            rc = 2;
            goto done;
        }
    }
    if (!(sam = sam_load(model, &e))) goto fail;
    int early_c = sam_early_channels(sam);
    learn_cfg_t lc;
    learn_cfg_default(&lc);
    if (epochs > 0) lc.train.epochs = (int)epochs;
    if (lr > 0) lc.train.lr = (float)lr;
    lc.train.seed = lc.sel_seed = (uint64_t)seed;
    lc.train.device = dc.device;
    lc.train.progress = progress;
    lc.note = note;
    printf("cl-bench: %d domains, methods", T);
    for (int m = 0; m < M_N; m++)
        if (want[m]) printf(" %s", METHOD[m]);
    printf("; recipe: %d epochs, lr %.0e, batch %d, seed %d, %d threads\n", lc.train.epochs,
           (double)lc.train.lr, lc.train.batch, seed, kn_get_threads());
    for (int t = 0; t < T && !rc; t++) {
        double t0 = now_s();
        if (!(tr[t] = train_set_new(early_c, &e)) || !(te[t] = train_set_new(early_c, &e))) goto fail;
        if (want[M_MODA]) train_set_keep_taps(te[t]);
        if ((rc = learn_load_split(sam, ds[t], DS_TRAIN, (int)max_train, tr[t], NULL, NULL, &e)) ||
            (rc = learn_load_split(sam, ds[t], DS_TEST, (int)max_test, te[t], NULL, NULL, &e)) ||
            (rc = learn_replay_from_dataset(ds[t], lc.replay, &rp[t], &nrp[t], &e))) {
            err_wrap(&e, "domain '%s'", doms[t]);
            goto fail;
        }
        printf("encoded %s: %d train, %d test images (%.0f s)\n", doms[t], tr[t]->n, te[t]->n,
               now_s() - t0);
        fflush(stdout);
    }

    if (want[M_ZS]) {
        double t0 = now_s();
        double row[2][CB_MAXD];
        if ((rc = eval_row(sam, te, T - 1, NULL, np, prompts, row, &e))) goto fail;
        for (int p = 0; p < np; p++)
            for (int t = 0; t < T; t++)
                for (int i = 0; i <= t; i++) res[M_ZS].a[p][t][i] = row[p][i];
        res[M_ZS].ran = 1;
        res[M_ZS].seconds = now_s() - t0;
    }
    if (want[M_MODA]) {
        double t0 = now_s();
        char hash[65];
        wts_content_hash(sam_weights(sam), hash);
        if (!(bank = abank_new(hash, &e))) goto fail;
        for (int t = 0; t < T; t++) {
            printf("[moda] step %d/%d: learning '%s'\n", t + 1, T, doms[t]);
            fflush(stdout);
            lc.train.ctx = "moda";
            if ((rc = learn_add_domain(sam, bank, doms[t], tr[t], rp[t], nrp[t], NULL, 0, &lc,
                                       NULL, &e)))
                goto fail;
            for (int i = 0; i <= t; i++)
                for (int p = 0; p < np; p++) {
                    learn_eval_t ev;
                    if ((rc = learn_eval_bank(sam, bank, doms[i], te[i], prompts[p], &ev, NULL,
                                              NULL, &e)))
                        goto fail;
                    res[M_MODA].a[p][t][i] = 100 * ev.iou;
                    res[M_MODA].oracle[p][t][i] = 100 * ev.oracle_iou;
                    if (t == T - 1 && p == 0) res[M_MODA].sel_acc[i] = 100 * ev.sel_acc;
                }
            printf("[moda] after '%s': box IoU", doms[t]);
            for (int i = 0; i <= t; i++) printf(" %s %.1f", doms[i], res[M_MODA].a[0][t][i]);
            printf("\n");
        }
        double s = 0;
        int n = 0;
        for (int i = 0; i < T; i++) {
            s += res[M_MODA].sel_acc[i] * te[i]->n;
            n += te[i]->n;
        }
        res[M_MODA].sel_all = s / n;
        res[M_MODA].ran = 1;
        res[M_MODA].seconds = now_s() - t0;
    }
    if (want[M_NAIVE]) {
        double t0 = now_s();
        for (int t = 0; t < T; t++) {
            printf("[naive] step %d/%d: fine-tuning the shared adapter on '%s'\n", t + 1, T,
                   doms[t]);
            fflush(stdout);
            if (t == 0 && bank) { /* the same training as MoDA's first adapter */
                printf("  (MoDA's first adapter: same start, data, recipe and seed)\n");
                if (!(naive = adapter_clone(abank_find(bank, doms[0])->adapter, &e))) goto fail;
            } else {
                if (t == 0) {
                    if (!(naive = adapter_new(early_c, &e))) goto fail;
                    if ((rc = adapter_init_from_sam(naive, sam_weights(sam), lc.train.seed, &e)))
                        goto fail;
                }
                lc.train.ctx = "naive";
                if ((rc = train_adapter(sam, tr[t], naive, &lc.train, NULL, &e))) goto fail;
            }
            double row[2][CB_MAXD];
            if ((rc = eval_row(sam, te, t, naive, np, prompts, row, &e))) goto fail;
            for (int p = 0; p < np; p++)
                for (int i = 0; i <= t; i++) res[M_NAIVE].a[p][t][i] = row[p][i];
        }
        res[M_NAIVE].ran = 1;
        res[M_NAIVE].seconds = now_s() - t0;
    }
    if (want[M_JOINT]) {
        double t0 = now_s();
        printf("[joint] training one adapter on all %d domains\n", T);
        fflush(stdout);
        /* the union set borrows the samples' buffers from tr[] (freed there) */
        if (!(all = train_set_new(early_c, &e))) goto fail;
        int n = 0;
        for (int t = 0; t < T; t++) n += tr[t]->n;
        if (!(all->s = malloc(sizeof *all->s * (size_t)n))) {
            rc = err_set(&e, ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (int t = 0; t < T; t++)
            for (int i = 0; i < tr[t]->n; i++) all->s[all->n++] = tr[t]->s[i];
        all->cap = n;
        if (!(joint = adapter_new(early_c, &e))) goto fail;
        if ((rc = adapter_init_from_sam(joint, sam_weights(sam), lc.train.seed, &e))) goto fail;
        lc.train.ctx = "joint";
        if ((rc = train_adapter(sam, all, joint, &lc.train, NULL, &e))) goto fail;
        double row[2][CB_MAXD];
        if ((rc = eval_row(sam, te, T - 1, joint, np, prompts, row, &e))) goto fail;
        for (int p = 0; p < np; p++)
            for (int i = 0; i < T; i++) res[M_JOINT].a[p][T - 1][i] = row[p][i];
        res[M_JOINT].ran = 1;
        res[M_JOINT].seconds = now_s() - t0;
    }

    /* ---- report ---- */
    double total = now_s() - t_start;
    json_writer_t w;
    json_w_init(&w);
    json_w_begin_obj(&w);
    json_w_key(&w, "domains");
    json_w_begin_arr(&w);
    for (int t = 0; t < T; t++) json_w_string(&w, doms[t]);
    json_w_end_arr(&w);
    json_w_key(&w, "recipe");
    json_w_begin_obj(&w);
    json_w_key(&w, "epochs");
    json_w_int(&w, lc.train.epochs);
    json_w_key(&w, "lr");
    json_w_double(&w, lc.train.lr);
    json_w_key(&w, "batch");
    json_w_int(&w, lc.train.batch);
    json_w_key(&w, "seed");
    json_w_int(&w, seed);
    json_w_key(&w, "threads");
    json_w_int(&w, kn_get_threads());
    json_w_key(&w, "train_images");
    json_w_begin_arr(&w);
    for (int t = 0; t < T; t++) json_w_int(&w, tr[t]->n);
    json_w_end_arr(&w);
    json_w_key(&w, "test_images");
    json_w_begin_arr(&w);
    for (int t = 0; t < T; t++) json_w_int(&w, te[t]->n);
    json_w_end_arr(&w);
    json_w_end_obj(&w);
    json_w_key(&w, "methods");
    json_w_begin_obj(&w);
    printf("\n%-9s %-5s %9s %9s %8s %8s %11s %8s\n", "method", "prompt", "Last-IoU", "Avg-IoU",
           "FF-IoU", "sel-acc", "oracle-Last", "seconds");
    for (int m = 0; m < M_N; m++) {
        cb_res_t *r = &res[m];
        if (!r->ran) continue;
        int full = m != M_JOINT;
        json_w_key(&w, METHOD[m]);
        json_w_begin_obj(&w);
        for (int p = 0; p < np; p++) {
            double last, avg = 0, ff = 0, olast = 0, d;
            summary(r->a[p], T, full, &last, &avg, &ff);
            json_w_key(&w, PROMPT[prompts[p]]);
            json_w_begin_obj(&w);
            json_w_key(&w, "last_iou");
            json_w_double(&w, last);
            if (full) {
                json_w_key(&w, "avg_iou");
                json_w_double(&w, avg);
                json_w_key(&w, "ff_iou");
                json_w_double(&w, ff);
            }
            if (m == M_MODA) {
                summary(r->oracle[p], T, 0, &olast, &d, &d);
                json_w_key(&w, "selection_accuracy");
                json_w_double(&w, r->sel_all);
                json_w_key(&w, "selection_accuracy_per_domain");
                json_w_begin_arr(&w);
                for (int i = 0; i < T; i++) json_w_double(&w, r->sel_acc[i]);
                json_w_end_arr(&w);
                json_w_key(&w, "oracle_last_iou");
                json_w_double(&w, olast);
            }
            if (full) {
                json_w_key(&w, "iou_matrix");
                json_matrix(&w, r->a[p], T);
            } else {
                json_w_key(&w, "per_domain_iou");
                json_w_begin_arr(&w);
                for (int i = 0; i < T; i++) json_w_double(&w, r->a[p][T - 1][i]);
                json_w_end_arr(&w);
            }
            json_w_end_obj(&w);
            char ffs[16] = "-", avs[16] = "-", sel[16] = "-", ors[16] = "-";
            if (full) {
                snprintf(avs, sizeof avs, "%.2f", avg);
                snprintf(ffs, sizeof ffs, "%.2f", ff);
            }
            if (m == M_MODA) {
                snprintf(sel, sizeof sel, "%.1f%%", r->sel_all);
                snprintf(ors, sizeof ors, "%.2f", olast);
            }
            printf("%-9s %-5s %9.2f %9s %8s %8s %11s %8.0f\n", METHOD[m], PROMPT[prompts[p]],
                   last, avs, ffs, sel, ors, r->seconds);
        }
        json_w_key(&w, "seconds");
        json_w_double(&w, r->seconds);
        json_w_end_obj(&w);
    }
    json_w_end_obj(&w);
    json_w_key(&w, "seconds");
    json_w_double(&w, total);
    json_w_end_obj(&w);
    /* per-domain IoU matrices (box prompts, or the first prompt mode) */
    for (int m = 0; m < M_N; m++) {
        if (!res[m].ran) continue;
        printf("\n%s, %s prompts: IoU (%%) after each step (rows) on each domain (columns)\n",
               METHOD[m], PROMPT[prompts[0]]);
        for (int t = m == M_JOINT ? T - 1 : 0; t < T; t++) {
            printf("  after %-12s", doms[t]);
            for (int i = 0; i <= t; i++) printf(" %s %.1f", doms[i], res[m].a[0][t][i]);
            printf("\n");
        }
    }
    size_t len;
    if (!(js = json_w_finish(&w, &len, &e))) goto fail;
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(js, 1, len, f) != len || fputc('\n', f) == EOF || fclose(f)) {
        if (f) fclose(f);
        rc = err_errno(&e, ERR_IO, errno, "writing %s", out);
        goto fail;
    }
    printf("\nwrote %s (total %.0f s)\n", out, total);
    goto done;
fail:
    if (!rc) rc = e.code ? e.code : ERR_INVALID;
    fprintf(stderr, "moda cl-bench: %s\n", e.msg);
done:
    free(js);
    if (all) { /* borrowed samples: only the array is ours */
        free(all->s);
        free(all);
    }
    for (int t = 0; t < T; t++) {
        train_set_destroy(&tr[t]);
        train_set_destroy(&te[t]);
        learn_replay_free(&rp[t], nrp[t]);
        dataset_close(&ds[t]);
    }
    adapter_destroy(&naive);
    adapter_destroy(&joint);
    abank_destroy(&bank);
    sam_destroy(&sam);
    free(res);
    return rc == 2 ? 2 : rc ? err_exit_status(rc) : 0;
}
