/* selector.c — MoDA domain selector (API and method: selector.h, docs/moda.md "Selector").
 *
 * Forward keeps, per block, the token-row activations the backward needs (T rows only:
 * input, LN1 output and stats, qkv, attention output, mid residual, LN2 output and stats,
 * fc1 output, GELU output). The block's K/V buffer [n_patch + T, 2C] is rebuilt from the
 * taps (memcpy) plus the token rows in forward and again in backward; the patch rows are
 * constants, their gradients are computed by kn_attention_bwd and dropped.
 * qkv weights are copied once into the standard layout [q (C) | k (C) | v (C)].
 */
#include "selector.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kn.h"
#include "preprocess.h"

#define LN_EPS 1e-5f

typedef struct sblk {
    int C;
    selector_block_w_t w;
    float *qkv_w, *qkv_b; /* owned, standard layout */
    /* saved token-row activations */
    float *tin, *ln1, *mu1, *rs1, *qkv, *att, *tmid, *ln2, *mu2, *rs2, *h1, *g1;
} sblk_t;

struct selector {
    selector_cfg_t cfg;
    int nblk;
    sblk_t *blk;
    size_t taps_n;
    int n_dom;
    float *p, *g, *m, *v;
    size_t np;
    size_t o_tok, o_mw, o_mb, o_kw, o_kb;
    int step, keys_only;
    /* scratch */
    float *kv, *dkv, *scr, *t, *dt, *dt0, *tmp, *tmp2, *dqkv, *min, *logits;
    size_t scr_n;
};

static void *zalloc(size_t nfloats)
{
    return calloc(nfloats ? nfloats : 1, sizeof(float));
}

void selector_destroy(selector_t **ps)
{
    if (!ps || !*ps) return;
    selector_t *s = *ps;
    if (s->blk)
        for (int b = 0; b < s->nblk; b++) {
            sblk_t *k = &s->blk[b];
            free(k->qkv_w);
            free(k->qkv_b);
            free(k->tin);
        }
    free(s->blk);
    free(s->p);
    free(s->g);
    free(s->m);
    free(s->v);
    free(s->kv);
    free(s->dkv);
    free(s->scr);
    free(s->t);
    free(s->dt);
    free(s->dt0);
    free(s->tmp);
    free(s->tmp2);
    free(s->dqkv);
    free(s->min);
    free(s->logits);
    free(s);
    *ps = NULL;
}

selector_t *selector_new_custom(const selector_cfg_t *cfg, const selector_block_w_t *blocks,
                                err_t *err)
{
    err_t local;
    if (!err) err = &local;
    err_clear(err);
    if (!cfg || !blocks) {
        err_set(err, ERR_INVALID, "selector: NULL config or blocks");
        return NULL;
    }
    int hd = cfg->head_dim;
    if (cfg->n_patch < 1 || cfg->n_tok < 1 || hd < 1 || cfg->depth[0] < 0 || cfg->depth[1] < 0 ||
        cfg->depth[0] + cfg->depth[1] < 1 || cfg->dim[0] < hd || cfg->dim[1] < hd ||
        cfg->dim[0] % hd || cfg->dim[1] % hd) {
        err_set(err, ERR_INVALID, "selector: bad configuration (dims %d,%d head_dim %d)",
                cfg->dim[0], cfg->dim[1], hd);
        return NULL;
    }
    selector_t *s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->cfg = *cfg;
    s->nblk = cfg->depth[0] + cfg->depth[1];
    s->blk = calloc((size_t)s->nblk, sizeof *s->blk);
    if (!s->blk) goto nomem;
    int T = cfg->n_tok, Cmax = cfg->dim[0] > cfg->dim[1] ? cfg->dim[0] : cfg->dim[1];
    int Nk = cfg->n_patch + T;
    for (int b = 0; b < s->nblk; b++) {
        sblk_t *k = &s->blk[b];
        int C = cfg->dim[b < cfg->depth[0] ? 0 : 1];
        k->C = C;
        k->w = blocks[b];
        if (!k->w.ln1_w || !k->w.ln1_b || !k->w.qkv_w || !k->w.qkv_b || !k->w.proj_w ||
            !k->w.proj_b || !k->w.ln2_w || !k->w.ln2_b || !k->w.fc1_w || !k->w.fc1_b ||
            !k->w.fc2_w || !k->w.fc2_b) {
            err_set(err, ERR_INVALID, "selector: block %d has a NULL weight", b);
            selector_destroy(&s);
            return NULL;
        }
        k->qkv_w = malloc(sizeof(float) * 3 * (size_t)C * C);
        k->qkv_b = malloc(sizeof(float) * 3 * (size_t)C);
        if (!k->qkv_w || !k->qkv_b) goto nomem;
        /* per-head [q|k|v] rows -> [q (C) | k (C) | v (C)] rows */
        for (int h = 0; h < C / hd; h++)
            for (int part = 0; part < 3; part++)
                for (int j = 0; j < hd; j++) {
                    int src = h * 3 * hd + part * hd + j, dst = part * C + h * hd + j;
                    memcpy(k->qkv_w + (size_t)dst * C, k->w.qkv_w + (size_t)src * C,
                           sizeof(float) * C);
                    k->qkv_b[dst] = k->w.qkv_b[src];
                }
        /* saved activations: one block of floats carved up */
        size_t TC = (size_t)T * C;
        float *a = zalloc(TC * 17 + 4 * (size_t)T);
        if (!a) goto nomem;
        k->tin = a; a += TC;
        k->ln1 = a; a += TC;
        k->qkv = a; a += 3 * TC;
        k->att = a; a += TC;
        k->tmid = a; a += TC;
        k->ln2 = a; a += TC;
        k->h1 = a; a += 4 * TC;
        k->g1 = a; a += 4 * TC;
        k->mu1 = a; a += T;
        k->rs1 = a; a += T;
        k->mu2 = a; a += T;
        k->rs2 = a;
        s->taps_n += (size_t)cfg->n_patch * 2 * C;
    }
    size_t sa = (size_t)T * Nk, sb = kn_attention_bwd_scratch(T, Nk);
    s->scr_n = sa > sb ? sa : sb;
    size_t TCm = (size_t)T * Cmax;
    if (!(s->kv = zalloc((size_t)Nk * 2 * Cmax)) || !(s->dkv = zalloc((size_t)Nk * 2 * Cmax)) ||
        !(s->scr = zalloc(s->scr_n)) || !(s->t = zalloc(TCm)) || !(s->dt = zalloc(TCm)) ||
        !(s->dt0 = zalloc(TCm)) || !(s->tmp = zalloc(4 * TCm)) || !(s->tmp2 = zalloc(4 * TCm)) ||
        !(s->dqkv = zalloc(3 * TCm)) || !(s->min = zalloc(TCm)))
        goto nomem;
    return s;
nomem:
    selector_destroy(&s);
    err_set(err, ERR_NOMEM, "selector: out of memory");
    return NULL;
}

selector_t *selector_new(const wts_t *w, err_t *err)
{
    err_t local;
    if (!err) err = &local;
    err_clear(err);
    if (!w) {
        err_set(err, ERR_INVALID, "selector: no weights");
        return NULL;
    }
    selector_cfg_t cfg = {.n_patch = 4096, .n_tok = SELECTOR_NTOK, .head_dim = 32,
                          .dim = {160, 320}, .depth = {6, 2}};
    selector_block_w_t bw[8];
    int b = 0;
    for (int st = 0; st < 2; st++) {
        int C = cfg.dim[st];
        for (int i = 0; i < cfg.depth[st]; i++, b++) {
            char p[96], n[160];
            snprintf(p, sizeof p, "image_encoder.layers.%d.blocks.%d", st + 2, i);
#define G1(field, sfx, d0)                                                                 \
    (snprintf(n, sizeof n, "%s.%s", p, sfx), (bw[b].field = wts_f32(w, n, err, 1, d0)))
#define G2(field, sfx, d0, d1)                                                             \
    (snprintf(n, sizeof n, "%s.%s", p, sfx), (bw[b].field = wts_f32(w, n, err, 2, d0, d1)))
            if (!G1(ln1_w, "attn.norm.weight", C) || !G1(ln1_b, "attn.norm.bias", C) ||
                !G2(qkv_w, "attn.qkv.weight", 3 * C, C) || !G1(qkv_b, "attn.qkv.bias", 3 * C) ||
                !G2(proj_w, "attn.proj.weight", C, C) || !G1(proj_b, "attn.proj.bias", C) ||
                !G1(ln2_w, "mlp.norm.weight", C) || !G1(ln2_b, "mlp.norm.bias", C) ||
                !G2(fc1_w, "mlp.fc1.weight", 4 * C, C) || !G1(fc1_b, "mlp.fc1.bias", 4 * C) ||
                !G2(fc2_w, "mlp.fc2.weight", C, 4 * C) || !G1(fc2_b, "mlp.fc2.bias", C)) {
                err_wrap(err, "selector");
                return NULL;
            }
#undef G1
#undef G2
        }
    }
    return selector_new_custom(&cfg, bw, err);
}

const selector_cfg_t *selector_config(const selector_t *s)
{
    return s ? &s->cfg : NULL;
}

size_t selector_taps_floats(const selector_t *s)
{
    return s ? s->taps_n : 0;
}

void selector_set_keys_only(selector_t *s, int keys_only)
{
    if (s) s->keys_only = keys_only != 0;
}

int selector_n_domains(const selector_t *s)
{
    return s ? s->n_dom : 0;
}

/* Allocates parameter/grad/Adam buffers for n_dom domains (contents zero). */
static int alloc_params(selector_t *s, int n_dom, err_t *err)
{
    int T = s->cfg.n_tok, C0 = s->cfg.dim[0], C1 = s->cfg.dim[1];
    if (s->cfg.depth[0] == 0) C0 = C1; /* no stage 0: tokens live in C1, merge unused */
    free(s->p);
    free(s->g);
    free(s->m);
    free(s->v);
    free(s->logits);
    s->p = s->g = s->m = s->v = s->logits = NULL;
    s->n_dom = 0;
    s->o_tok = 0;
    s->o_mw = s->o_tok + (size_t)T * C0;
    s->o_mb = s->o_mw + (size_t)C1 * C0;
    s->o_kw = s->o_mb + (size_t)C1;
    s->o_kb = s->o_kw + (size_t)n_dom * C1;
    s->np = s->o_kb + (size_t)n_dom;
    if (!(s->p = zalloc(s->np)) || !(s->g = zalloc(s->np)) || !(s->m = zalloc(s->np)) ||
        !(s->v = zalloc(s->np)) || !(s->logits = zalloc((size_t)n_dom)))
        return err_set(err, ERR_NOMEM, "selector: out of memory");
    s->n_dom = n_dom;
    s->step = 0;
    return 0;
}

static float gauss(uint64_t *rng)
{
    float u1 = kn_rng_uniform(rng), u2 = kn_rng_uniform(rng);
    if (u1 < 1e-7f) u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

int selector_init(selector_t *s, uint64_t seed, int n_domains, err_t *err)
{
    if (!s) return err_set(err, ERR_INVALID, "selector_init: NULL selector");
    if (n_domains < 1) return err_set(err, ERR_INVALID, "selector_init: n_domains %d < 1", n_domains);
    if (alloc_params(s, n_domains, err)) return err->code;
    uint64_t rng = seed;
    int C0 = s->cfg.depth[0] ? s->cfg.dim[0] : s->cfg.dim[1], C1 = s->cfg.dim[1];
    for (size_t i = s->o_tok; i < s->o_mw; i++) s->p[i] = gauss(&rng);
    float a = 1.0f / sqrtf((float)C0);
    for (size_t i = s->o_mw; i < s->o_mb; i++) s->p[i] = a * (2.0f * kn_rng_uniform(&rng) - 1.0f);
    a = 1.0f / sqrtf((float)C1);
    for (size_t i = s->o_kw; i < s->o_kb; i++) s->p[i] = a * (2.0f * kn_rng_uniform(&rng) - 1.0f);
    return 0;
}

/* K/V buffer of block k: patch rows from its taps, then the token rows' k and v. */
static void build_kv(selector_t *s, const sblk_t *k, const float *tap)
{
    int C = k->C, T = s->cfg.n_tok, P = s->cfg.n_patch;
    memcpy(s->kv, tap, sizeof(float) * (size_t)P * 2 * C);
    for (int i = 0; i < T; i++)
        memcpy(s->kv + (size_t)(P + i) * 2 * C, k->qkv + (size_t)i * 3 * C + C,
               sizeof(float) * 2 * C);
}

static void block_fwd(selector_t *s, sblk_t *k, const float *tap)
{
    int C = k->C, T = s->cfg.n_tok, hd = s->cfg.head_dim, Nk = s->cfg.n_patch + T;
    size_t TC = (size_t)T * C;
    float *t = s->t;
    memcpy(k->tin, t, sizeof(float) * TC);
    kn_layernorm_fwd(k->ln1, k->mu1, k->rs1, t, k->w.ln1_w, k->w.ln1_b, T, C, LN_EPS);
    kn_linear_fwd(k->qkv, k->ln1, k->qkv_w, k->qkv_b, T, C, 3 * C);
    build_kv(s, k, tap);
    kn_attention_fwd(k->att, k->qkv, 3 * C, s->kv, 2 * C, s->kv + C, 2 * C, NULL, C / hd, T, Nk,
                     hd, 1.0f / sqrtf((float)hd), s->scr);
    kn_linear_fwd(s->tmp, k->att, k->w.proj_w, k->w.proj_b, T, C, C);
    kn_add(t, t, s->tmp, TC);
    memcpy(k->tmid, t, sizeof(float) * TC);
    kn_layernorm_fwd(k->ln2, k->mu2, k->rs2, t, k->w.ln2_w, k->w.ln2_b, T, C, LN_EPS);
    kn_linear_fwd(k->h1, k->ln2, k->w.fc1_w, k->w.fc1_b, T, C, 4 * C);
    kn_gelu_fwd(k->g1, k->h1, 4 * TC);
    kn_linear_fwd(s->tmp, k->g1, k->w.fc2_w, k->w.fc2_b, T, 4 * C, C);
    kn_add(t, t, s->tmp, TC);
}

/* s->dt [T, C]: d loss / d block output -> d loss / d block input (in place). */
static void block_bwd(selector_t *s, sblk_t *k, const float *tap)
{
    int C = k->C, T = s->cfg.n_tok, hd = s->cfg.head_dim, P = s->cfg.n_patch, Nk = P + T;
    size_t TC = (size_t)T * C;
    float *dt = s->dt, *a = s->tmp, *b = s->tmp2;
    /* MLP branch */
    kn_linear_bwd(a, NULL, NULL, dt, k->g1, k->w.fc2_w, T, 4 * C, C);
    kn_gelu_bwd(b, a, k->h1, 4 * TC);
    kn_linear_bwd(a, NULL, NULL, b, k->ln2, k->w.fc1_w, T, C, 4 * C);
    kn_layernorm_bwd(b, NULL, NULL, a, k->tmid, k->mu2, k->rs2, k->w.ln2_w, T, C);
    kn_add(dt, dt, b, TC);
    /* attention branch */
    kn_linear_bwd(a, NULL, NULL, dt, k->att, k->w.proj_w, T, C, C);
    build_kv(s, k, tap);
    kn_attention_bwd(s->dqkv, s->dkv, s->dkv + C, a, k->qkv, 3 * C, s->kv, 2 * C, s->kv + C,
                     2 * C, NULL, C / hd, T, Nk, hd, 1.0f / sqrtf((float)hd), s->scr);
    for (int i = 0; i < T; i++)
        memcpy(s->dqkv + (size_t)i * 3 * C + C, s->dkv + (size_t)(P + i) * 2 * C,
               sizeof(float) * 2 * C);
    kn_linear_bwd(a, NULL, NULL, s->dqkv, k->ln1, k->qkv_w, T, C, 3 * C);
    kn_layernorm_bwd(b, NULL, NULL, a, k->tin, k->mu1, k->rs1, k->w.ln1_w, T, C);
    kn_add(dt, dt, b, TC);
}

static const float *block_tap(const selector_t *s, const float *taps, int b)
{
    size_t off = 0;
    for (int i = 0; i < b; i++) off += (size_t)s->cfg.n_patch * 2 * s->blk[i].C;
    return taps + off;
}

/* Forward to s->logits; keeps activations. Runs its kn_* ops on one thread: the token
 * ops are tiny (10 rows), and a thread team per op costs more than the op (measured on
 * the 2-core dev machine: forward 883 ms on 2 threads vs 29 ms on 1). */
static void forward_ops(selector_t *s, const float *taps);
static void forward(selector_t *s, const float *taps)
{
    int old = kn_set_thread_local_threads(1); /* this thread only: workers run concurrently */
    forward_ops(s, taps);
    kn_set_thread_local_threads(old);
}

static void forward_ops(selector_t *s, const float *taps)
{
    int T = s->cfg.n_tok, D0 = s->cfg.depth[0], C1 = s->cfg.dim[1];
    int C0 = D0 ? s->cfg.dim[0] : C1;
    memcpy(s->t, s->p + s->o_tok, sizeof(float) * (size_t)T * C0);
    for (int b = 0; b < s->nblk; b++) {
        if (b == D0 && D0) { /* merge 160 -> 320 */
            memcpy(s->min, s->t, sizeof(float) * (size_t)T * C0);
            kn_linear_fwd(s->t, s->min, s->p + s->o_mw, s->p + s->o_mb, T, C0, C1);
        }
        block_fwd(s, &s->blk[b], block_tap(s, taps, b));
    }
    if (D0 && s->nblk == D0) { /* no stage-1 blocks: still map to C1 */
        memcpy(s->min, s->t, sizeof(float) * (size_t)T * C0);
        kn_linear_fwd(s->t, s->min, s->p + s->o_mw, s->p + s->o_mb, T, C0, C1);
    }
    kn_linear_fwd(s->logits, s->t, s->p + s->o_kw, s->p + s->o_kb, 1, C1, s->n_dom);
}

static int check_ready(const selector_t *s, const float *taps, err_t *err, const char *what)
{
    if (!s || !taps) return err_set(err, ERR_INVALID, "%s: NULL argument", what);
    if (s->n_dom < 1)
        return err_set(err, ERR_STATE, "%s: selector has no parameters (init or load first)",
                       what);
    return 0;
}

int selector_forward(selector_t *s, const float *taps, float *probs, err_t *err)
{
    if (check_ready(s, taps, err, "selector_forward")) return err->code;
    if (!probs) return err_set(err, ERR_INVALID, "selector_forward: NULL probs");
    forward(s, taps);
    kn_softmax_fwd(probs, s->logits, 1, s->n_dom);
    return 0;
}

int selector_predict(selector_t *s, const float *taps, int *domain, float *p_top, err_t *err)
{
    if (check_ready(s, taps, err, "selector_predict")) return err->code;
    float *pr = malloc(sizeof(float) * (size_t)s->n_dom);
    if (!pr) return err_set(err, ERR_NOMEM, "selector: out of memory");
    forward(s, taps);
    kn_softmax_fwd(pr, s->logits, 1, s->n_dom);
    int best = 0;
    for (int i = 1; i < s->n_dom; i++)
        if (pr[i] > pr[best]) best = i;
    if (domain) *domain = best;
    if (p_top) *p_top = pr[best];
    free(pr);
    return 0;
}

float *selector_params(selector_t *s, size_t *n)
{
    if (n) *n = s ? s->np : 0;
    return s ? s->p : NULL;
}

float *selector_grads(selector_t *s, size_t *n)
{
    if (n) *n = s ? s->np : 0;
    return s ? s->g : NULL;
}

void selector_zero_grad(selector_t *s)
{
    if (s && s->g) memset(s->g, 0, sizeof(float) * s->np);
}

int selector_grad(selector_t *s, const float *taps, int label, float weight, float *loss,
                  err_t *err)
{
    if (check_ready(s, taps, err, "selector_grad")) return err->code;
    if (label < 0 || label >= s->n_dom)
        return err_set(err, ERR_RANGE, "selector_grad: label %d outside [0, %d)", label, s->n_dom);
    int T = s->cfg.n_tok, D0 = s->cfg.depth[0], C1 = s->cfg.dim[1];
    int C0 = D0 ? s->cfg.dim[0] : C1;
    forward(s, taps);
    float *dlog = s->tmp2; /* n_dom floats; free until block_bwd */
    float *dlog_own = NULL;
    if ((size_t)s->n_dom > 4 * (size_t)T * C1) {
        dlog_own = malloc(sizeof(float) * (size_t)s->n_dom);
        if (!dlog_own) return err_set(err, ERR_NOMEM, "selector: out of memory");
        dlog = dlog_own;
    }
    float l = kn_cross_entropy_loss(dlog, s->logits, s->n_dom, label, weight);
    if (loss) *loss = l;
    memset(s->dt, 0, sizeof(float) * (size_t)T * C1);
    kn_linear_bwd(s->dt, s->g + s->o_kw, s->g + s->o_kb, dlog, s->t, s->p + s->o_kw, 1, C1,
                  s->n_dom);
    free(dlog_own);
    int old = kn_set_thread_local_threads(1), merged = 0;
    if (D0 && s->nblk == D0) {
        kn_linear_bwd(s->dt0, s->g + s->o_mw, s->g + s->o_mb, s->dt, s->min, s->p + s->o_mw, T,
                      C0, C1);
        memcpy(s->dt, s->dt0, sizeof(float) * (size_t)T * C0);
        merged = 1;
    }
    for (int b = s->nblk - 1; b >= 0; b--) {
        block_bwd(s, &s->blk[b], block_tap(s, taps, b));
        if (b == D0 && D0 && !merged) {
            kn_linear_bwd(s->dt0, s->g + s->o_mw, s->g + s->o_mb, s->dt, s->min, s->p + s->o_mw,
                          T, C0, C1);
            memcpy(s->dt, s->dt0, sizeof(float) * (size_t)T * C0);
        }
    }
    kn_add(s->g + s->o_tok, s->g + s->o_tok, s->dt, (size_t)T * C0);
    kn_set_thread_local_threads(old);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int selector_train(selector_t *s, const float *const *taps, const int *labels, int n, int epochs,
                   int batch, float lr, uint64_t seed, selector_stats_t *stats, err_t *err)
{
    if (!s || !taps || !labels || n < 1 || epochs < 1 || batch < 1 || !(lr > 0))
        return err_set(err, ERR_INVALID,
                       "selector_train: bad arguments (n %d, epochs %d, batch %d)", n, epochs,
                       batch);
    if (s->n_dom < 1) return err_set(err, ERR_STATE, "selector_train: init or load first");
    for (int i = 0; i < n; i++) {
        if (!taps[i]) return err_set(err, ERR_INVALID, "selector_train: taps %d is NULL", i);
        if (labels[i] < 0 || labels[i] >= s->n_dom)
            return err_set(err, ERR_RANGE, "selector_train: label %d of sample %d outside [0, %d)",
                           labels[i], i, s->n_dom);
    }
    int *order = malloc(sizeof(int) * (size_t)n);
    if (!order) return err_set(err, ERR_NOMEM, "selector: out of memory");
    double t0 = now_s();
    memset(s->m, 0, sizeof(float) * s->np);
    memset(s->v, 0, sizeof(float) * s->np);
    s->step = 0;
    uint64_t rng = seed;
    double ce_first = 0, ce_last = 0;
    for (int ep = 0; ep < epochs; ep++) {
        for (int i = 0; i < n; i++) order[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(kn_rng_next(&rng) % (uint64_t)(i + 1));
            int tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        double sum = 0;
        for (int b0 = 0; b0 < n; b0 += batch) {
            int bn = n - b0 < batch ? n - b0 : batch;
            selector_zero_grad(s);
            for (int i = 0; i < bn; i++) {
                float l;
                int k = order[b0 + i];
                if (selector_grad(s, taps[k], labels[k], 1.0f / (float)bn, &l, err)) {
                    free(order);
                    return err->code;
                }
                sum += (double)l * bn;
            }
            if (s->keys_only) memset(s->g, 0, sizeof(float) * s->o_kw);
            kn_adam_step(s->p, s->g, s->m, s->v, s->np, lr, 0.9f, 0.999f, 1e-8f, 0.0f,
                         ++s->step);
        }
        if (ep == 0) ce_first = sum / n;
        ce_last = sum / n;
    }
    free(order);
    int ok = 0;
    for (int i = 0; i < n; i++) {
        int d;
        if (selector_predict(s, taps[i], &d, NULL, err)) return err->code;
        ok += d == labels[i];
    }
    if (stats) {
        stats->ce_first = ce_first;
        stats->ce_last = ce_last;
        stats->train_acc = (double)ok / n;
        stats->seconds = now_s() - t0;
        stats->steps = s->step;
    }
    return 0;
}

int selector_save_to_bank(const selector_t *s, abank_t *b, err_t *err)
{
    if (!s || !b) return err_set(err, ERR_INVALID, "selector_save_to_bank: NULL argument");
    if (s->n_dom < 1) return err_set(err, ERR_STATE, "selector_save_to_bank: no parameters");
    int T = s->cfg.n_tok, C1 = s->cfg.dim[1], C0 = s->cfg.depth[0] ? s->cfg.dim[0] : C1;
    struct { const char *name; int nd; int64_t sh[2]; size_t off; } t[5] = {
        {"tokens", 2, {T, C0}, s->o_tok},        {"merge.weight", 2, {C1, C0}, s->o_mw},
        {"merge.bias", 1, {C1, 0}, s->o_mb},     {"keys.weight", 2, {s->n_dom, C1}, s->o_kw},
        {"keys.bias", 1, {s->n_dom, 0}, s->o_kb}};
    for (int i = 0; i < 5; i++)
        if (abank_put_selector(b, t[i].name, t[i].nd, t[i].sh, s->p + t[i].off, err))
            return err->code;
    return 0;
}

int selector_load_from_bank(selector_t *s, const abank_t *b, err_t *err)
{
    if (!s || !b) return err_set(err, ERR_INVALID, "selector_load_from_bank: NULL argument");
    const abank_tensor_t *kw = abank_selector(b, "keys.weight");
    if (!kw) {
        if (b->n_selector == 0)
            return err_set(err, ERR_NOTFOUND, "selector: the bank has no selector tensors");
        return err_set(err, ERR_FORMAT, "selector: bank tensor selector.keys.weight missing");
    }
    int T = s->cfg.n_tok, C1 = s->cfg.dim[1], C0 = s->cfg.depth[0] ? s->cfg.dim[0] : C1;
    if (kw->ndim != 2 || kw->shape[1] != C1 || kw->shape[0] < 1 || kw->shape[0] > 1000000)
        return err_set(err, ERR_FORMAT, "selector: bank tensor selector.keys.weight misshapen");
    int D = (int)kw->shape[0];
    struct { const char *name; int nd; int64_t sh[2]; } t[5] = {
        {"tokens", 2, {T, C0}},    {"merge.weight", 2, {C1, C0}}, {"merge.bias", 1, {C1, 0}},
        {"keys.weight", 2, {D, C1}}, {"keys.bias", 1, {D, 0}}};
    const abank_tensor_t *src[5];
    for (int i = 0; i < 5; i++) {
        src[i] = abank_selector(b, t[i].name);
        if (!src[i])
            return err_set(err, ERR_FORMAT, "selector: bank tensor selector.%s missing", t[i].name);
        int bad = src[i]->ndim != t[i].nd || !src[i]->data;
        for (int d = 0; d < t[i].nd && !bad; d++) bad = src[i]->shape[d] != t[i].sh[d];
        if (bad)
            return err_set(err, ERR_FORMAT, "selector: bank tensor selector.%s misshapen",
                           t[i].name);
    }
    if (alloc_params(s, D, err)) return err->code;
    size_t off[5] = {s->o_tok, s->o_mw, s->o_mb, s->o_kw, s->o_kb};
    for (int i = 0; i < 5; i++) memcpy(s->p + off[i], src[i]->data, sizeof(float) * src[i]->n);
    return 0;
}
