/* test_api_fuzz — moda-label's request handler (services/label/api.h) on hostile input:
 * valid requests of every kind, then thousands of deterministic mutations of them (byte flips,
 * truncation, random binary parts). Every decodable request must get a reply with a body and
 * a Status that packs as protobuf; nothing may crash (run under ASan+UBSan in CI); afterwards
 * the store's indexes must still agree (queue and label counts). Usage: test_label_api_fuzz DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/t_check.h"
#include "api.h"
#include "image.h"
#include "rle.h"

#define W 8
#define H 6
#define ITER 20000

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

typedef struct seed {
    uint8_t *buf;
    size_t len;
    int nparts;
} seed_t;

static seed_t seeds[16];
static int nseeds;
static uint8_t img[W * H];
static unsigned char png[4096];
static size_t pnglen;

static void add_seed(Moda__Envelope *env, int nparts)
{
    Moda__Header h = MODA__HEADER__INIT;
    h.schema_version = MSG_SCHEMA_VERSION;
    env->header = &h;
    seeds[nseeds].len = moda__envelope__get_packed_size(env);
    seeds[nseeds].buf = malloc(seeds[nseeds].len);
    moda__envelope__pack(env, seeds[nseeds].buf);
    seeds[nseeds].nparts = nparts;
    nseeds++;
    env->header = NULL;
}

/* A reply must have a body whose Status is set, and must pack. */
static int reply_ok(const api_reply_t *r)
{
    const Moda__Envelope *e = &r->env;
    const Moda__Status *st = NULL;
    switch (e->body_case) {
    case MODA__ENVELOPE__BODY_ERROR: st = e->error->status; break;
    case MODA__ENVELOPE__BODY_HARD_CASE_ACK: st = e->hard_case_ack->status; break;
    case MODA__ENVELOPE__BODY_LIST_QUEUE_REPLY: st = e->list_queue_reply->status; break;
    case MODA__ENVELOPE__BODY_GET_SAMPLE_REPLY: st = e->get_sample_reply->status; break;
    case MODA__ENVELOPE__BODY_SUBMIT_LABEL_REPLY: st = e->submit_label_reply->status; break;
    case MODA__ENVELOPE__BODY_REJECT_SAMPLE_REPLY: st = e->reject_sample_reply->status; break;
    case MODA__ENVELOPE__BODY_LABELS_SINCE_REPLY: st = e->labels_since_reply->status; break;
    case MODA__ENVELOPE__BODY_IMPORT_SAMPLE_REPLY: st = e->import_sample_reply->status; break;
    case MODA__ENVELOPE__BODY_LIST_DOMAINS_REPLY: st = e->list_domains_reply->status; break;
    default: return 0;
    }
    if (!st || (st->code == 0) != (r->status == 0)) return 0;
    size_t n = moda__envelope__get_packed_size(e);
    uint8_t *b = malloc(n ? n : 1);
    moda__envelope__pack(e, b);
    Moda__Envelope *back = moda__envelope__unpack(NULL, n, b);
    int ok = back && back->body_case == e->body_case;
    if (back) moda__envelope__free_unpacked(back, NULL);
    free(b);
    return ok;
}

int main(int argc, char **argv)
{
    t_watchdog(120);
    if (argc != 2) return 2;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", argv[1], argv[1]);
    if (system(cmd)) return 1;
    lstore_opts_t o = {256 << 10, 1, 0.2};
    err_t err = {0};
    lstore_t *st = lstore_open(argv[1], &o, &err);
    T(st != NULL);
    if (!st) return t_done("test_label_api_fuzz");

    uint8_t m[W * H];
    for (int i = 0; i < W * H; i++) m[i] = (uint8_t)(i % 3 == 0);
    char *counts = NULL;
    rle_encode_string(m, H, W, &counts, NULL);
    image_t *pm = image_new(W, H, 1, NULL);
    for (int i = 0; i < W * H; i++) pm->data[i] = m[i] ? 255 : 0;
    char path[1100];
    snprintf(path, sizeof path, "%s/m.png", argv[1]);
    image_save_png(pm, path, NULL);
    image_destroy(&pm);
    FILE *f = fopen(path, "rb");
    pnglen = f ? fread(png, 1, sizeof png, f) : 0;
    if (f) fclose(f);

    Moda__RleMask rm = MODA__RLE_MASK__INIT;
    rm.height = H;
    rm.width = W;
    rm.counts = counts;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    Moda__HardCase hc = MODA__HARD_CASE__INIT;
    hc.camera_id = "cam";
    hc.seq = 1;
    hc.width = W;
    hc.height = H;
    hc.format = MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8;
    hc.score = 0.7f;
    hc.mask = &rm;
    hc.domain = "g";
    env.body_case = MODA__ENVELOPE__BODY_HARD_CASE;
    env.hard_case = &hc;
    add_seed(&env, 1);
    Moda__SampleInfo si = MODA__SAMPLE_INFO__INIT;
    si.camera_id = "imp";
    si.seq = 5;
    si.width = W;
    si.height = H;
    si.format = MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8;
    si.domain = "dom";
    si.mask = &rm;
    si.actor = "a";
    Moda__ImportSampleRequest is = MODA__IMPORT_SAMPLE_REQUEST__INIT;
    is.sample = &si;
    env.body_case = MODA__ENVELOPE__BODY_IMPORT_SAMPLE_REQUEST;
    env.import_sample_request = &is;
    add_seed(&env, 1);
    Moda__SubmitLabelRequest sl = MODA__SUBMIT_LABEL_REQUEST__INIT;
    sl.sample_id = 1;
    sl.domain = "dom";
    sl.mask = &rm;
    sl.actor = "op";
    env.body_case = MODA__ENVELOPE__BODY_SUBMIT_LABEL_REQUEST;
    env.submit_label_request = &sl;
    add_seed(&env, 0);
    sl.mask = NULL;
    sl.mask_png = 1;
    add_seed(&env, 2); /* part 0: PNG */
    Moda__ListQueueRequest lq = MODA__LIST_QUEUE_REQUEST__INIT;
    lq.limit = 5;
    env.body_case = MODA__ENVELOPE__BODY_LIST_QUEUE_REQUEST;
    env.list_queue_request = &lq;
    add_seed(&env, 0);
    Moda__GetSampleRequest gs = MODA__GET_SAMPLE_REQUEST__INIT;
    gs.sample_id = 1;
    gs.include_image = 1;
    env.body_case = MODA__ENVELOPE__BODY_GET_SAMPLE_REQUEST;
    env.get_sample_request = &gs;
    add_seed(&env, 0);
    Moda__RejectSampleRequest rj = MODA__REJECT_SAMPLE_REQUEST__INIT;
    rj.sample_id = 2;
    rj.reason = "r";
    env.body_case = MODA__ENVELOPE__BODY_REJECT_SAMPLE_REQUEST;
    env.reject_sample_request = &rj;
    add_seed(&env, 0);
    Moda__LabelsSinceRequest ls = MODA__LABELS_SINCE_REQUEST__INIT;
    ls.domain = "dom";
    ls.include_holdout = 1;
    env.body_case = MODA__ENVELOPE__BODY_LABELS_SINCE_REQUEST;
    env.labels_since_request = &ls;
    add_seed(&env, 0);
    Moda__ListDomainsRequest ld = MODA__LIST_DOMAINS_REQUEST__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_DOMAINS_REQUEST;
    env.list_domains_request = &ld;
    add_seed(&env, 0);
    Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &hr;
    add_seed(&env, 0);

    /* the seeds themselves: all succeed except Health (unsupported here) */
    int ok_seeds = 0;
    for (int i = 0; i < nseeds; i++) {
        Moda__Envelope *e = moda__envelope__unpack(NULL, seeds[i].len, seeds[i].buf);
        msg_part_t parts[2] = {{img, sizeof img}, {NULL, 0}};
        if (seeds[i].nparts == 2) parts[0] = (msg_part_t){png, pnglen};
        api_reply_t r;
        int rc = api_handle(st, e, parts, seeds[i].nparts ? 1 : 0, &r);
        T(reply_ok(&r));
        if (rc) fprintf(stderr, "seed %d: %s\n", i, r.env.body_case == MODA__ENVELOPE__BODY_ERROR ? r.env.error->status->message : "error status");
        ok_seeds += rc == 0;
        api_reply_clear(&r);
        moda__envelope__free_unpacked(e, NULL);
    }
    T(ok_seeds == nseeds - 1);

    int decoded = 0, answered_ok = 0, bad_reply = 0;
    uint8_t buf[4096], pbuf[512];
    for (int it = 0; it < ITER; it++) {
        const seed_t *s = &seeds[rnd() % (uint32_t)nseeds];
        size_t len = s->len;
        memcpy(buf, s->buf, len);
        int nm = rnd() % 4 ? 1 : 2 + (int)(rnd() % 3);
        for (int k = 0; k < nm; k++) {
            switch (rnd() % 4) {
            case 0: buf[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8)); break;
            case 1: buf[rnd() % len] = (uint8_t)rnd(); break;
            case 2: len = 1 + rnd() % len; break;
            default:
                if (len < sizeof buf - 8) {
                    size_t at = rnd() % len;
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t)rnd();
                    len++;
                }
            }
        }
        Moda__Envelope *e = moda__envelope__unpack(NULL, len, buf);
        if (!e) continue;
        if (e->body_case == MODA__ENVELOPE__BODY__NOT_SET) {
            moda__envelope__free_unpacked(e, NULL);
            continue;
        }
        decoded++;
        /* parts: the right ones, random bytes, or none */
        msg_part_t parts[2];
        int np = (int)(rnd() % 3);
        for (int k = 0; k < np; k++) {
            uint32_t kind = rnd() % 3;
            if (kind == 0) parts[k] = (msg_part_t){img, sizeof img};
            else if (kind == 1) parts[k] = (msg_part_t){png, pnglen - rnd() % 8};
            else {
                size_t pl = rnd() % sizeof pbuf;
                for (size_t b = 0; b < pl; b++) pbuf[b] = (uint8_t)rnd();
                parts[k] = (msg_part_t){pbuf, pl};
            }
        }
        api_reply_t r;
        int rc = api_handle(st, e, parts, np, &r);
        if (!reply_ok(&r)) bad_reply++;
        answered_ok += rc == 0;
        api_reply_clear(&r);
        moda__envelope__free_unpacked(e, NULL);
    }
    T(bad_reply == 0);
    T(decoded > ITER / 10);
    printf("mutations: %d decoded, %d answered OK, %d refused with a status\n", decoded, answered_ok,
           decoded - answered_ok);

    /* the indexes still agree */
    lstore_stats_t sx;
    T(!lstore_stats(st, &sx, NULL));
    Moda__SampleInfo **q = NULL;
    size_t n = 0;
    uint64_t total = 0;
    T(!lstore_queue(st, "", 0, 1000, &q, &n, &total, NULL) && total == sx.queued);
    lstore_infos_free(q, n);
    lstore_domain_t *d = NULL;
    size_t nd = 0;
    uint64_t labels = 0;
    T(!lstore_domains(st, &d, &nd, NULL));
    for (size_t i = 0; i < nd; i++) labels += d[i].labels;
    free(d);
    T(labels == sx.labels);
    printf("store after fuzzing: %llu samples, %llu queued, %llu labels in %zu domains\n",
           (unsigned long long)sx.samples, (unsigned long long)sx.queued, (unsigned long long)sx.labels, nd);
    for (int i = 0; i < nseeds; i++) free(seeds[i].buf);
    free(counts);
    lstore_close(&st);
    return t_done("test_label_api_fuzz");
}
