/* test_store — moda-label's LMDB store (services/label/store.h) without sockets: dedup by
 * (camera, seq), queue order by score, per-domain cursor pulls (paged, restartable, holdout
 * filter, relabel), reject, deterministic holdout assignment (independent of arrival order
 * and store), map growth from a 64 KiB map, reopen. Usage: test_label_store DIR (scratch). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/t_check.h"
#include "rle.h"
#include "store.h"

#define N 300

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static char *mask_str(uint32_t h, uint32_t w, int seed)
{
    uint8_t *m = calloc((size_t)h * w, 1);
    for (uint32_t i = 0; i < h * w; i++) m[i] = (uint8_t)(((i * 7 + (uint32_t)seed) % 11) < 4);
    char *s = NULL;
    rle_encode_string(m, h, w, &s, NULL);
    free(m);
    return s;
}

static int add_hc(lstore_t *s, const char *cam, uint64_t seq, float score, size_t img_len, uint64_t *id, int *dup)
{
    Moda__SampleInfo si = MODA__SAMPLE_INFO__INIT;
    si.camera_id = (char *)cam;
    si.seq = seq;
    si.width = 8;
    si.height = 6;
    si.format = MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8;
    si.score = score;
    si.source = "hard_case";
    si.predicted_domain = seq % 2 ? "odd" : "even";
    unsigned char *img = malloc(img_len);
    for (size_t i = 0; i < img_len; i++) img[i] = (unsigned char)(seq + i);
    err_t err = {0};
    int rc = lstore_add(s, &si, img, img_len, 0, id, dup, NULL, &err);
    if (rc) fprintf(stderr, "add: %s\n", err.msg);
    free(img);
    return rc;
}

int main(int argc, char **argv)
{
    t_watchdog(120);
    if (argc != 2) return 2;
    char dir[1024], dir2[1100];
    snprintf(dir, sizeof dir, "%s/a", argv[1]);
    snprintf(dir2, sizeof dir2, "%s/b", argv[1]);
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' && mkdir -p '%s'", dir, dir2, argv[1]);
    if (system(cmd)) return 1;

    err_t err = {0};
    lstore_opts_t o = {64 << 10, 1, 0.2};
    lstore_t *s = lstore_open(dir, &o, &err);
    T(s != NULL);
    if (!s) return t_done("test_label_store");

    /* hard cases with random scores; images big enough to outgrow the 64 KiB map */
    float score[N + 1];
    uint64_t ids[N + 1];
    for (int i = 1; i <= N; i++) {
        score[i] = (float)(rnd() % 1000) / 1000.0f;
        int dup = -1;
        T(add_hc(s, "cam-1", (uint64_t)i, score[i], 3000, &ids[i], &dup) == 0 && dup == 0);
    }
    lstore_stats_t st;
    T(!lstore_stats(s, &st, NULL) && st.samples == N && st.queued == N);
    T(st.map_grows > 0 && st.map_size > (64 << 10));
    printf("map grew %llu times to %llu KiB for %d samples\n", (unsigned long long)st.map_grows,
           (unsigned long long)st.map_size >> 10, N);

    /* dedup: same (camera, seq) is not stored twice; same seq, other camera is new */
    uint64_t id = 0;
    int dup = 0;
    T(add_hc(s, "cam-1", 17, 0.99f, 100, &id, &dup) == 0 && dup == 1 && id == ids[17]);
    T(add_hc(s, "cam-2", 17, NAN, 100, &id, &dup) == 0 && dup == 0 && id == N + 1);
    T(!lstore_stats(s, &st, NULL) && st.samples == N + 1 && st.queued == N + 1);

    /* queue order: score descending, ties by id; paging matches one big page */
    Moda__SampleInfo **q = NULL;
    size_t n = 0;
    uint64_t total = 0;
    T(!lstore_queue(s, "", 0, 1000, &q, &n, &total, &err) && n == N + 1 && total == N + 1);
    int ordered = 1;
    for (size_t i = 1; i < n; i++)
        if (q[i]->score > q[i - 1]->score || (q[i]->score == q[i - 1]->score && q[i]->sample_id < q[i - 1]->sample_id))
            ordered = 0;
    T(ordered);
    T(q[n - 1]->camera_id && !strcmp(q[n - 1]->camera_id, "cam-2")); /* NaN stored as 0 */
    Moda__SampleInfo **p = NULL;
    size_t pn = 0;
    T(!lstore_queue(s, "", 50, 10, &p, &pn, &total, &err) && pn == 10 && total == N + 1 &&
      p[0]->sample_id == q[50]->sample_id && p[9]->sample_id == q[59]->sample_id);
    lstore_infos_free(p, pn);
    T(!lstore_queue(s, "", N - 3, 10, &p, &pn, &total, &err) && pn == 4 && total == N + 1 &&
      p[3]->sample_id == q[N]->sample_id);
    lstore_infos_free(p, pn);
    T(!lstore_queue(s, "", 100000, 10, &p, &pn, &total, &err) && pn == 0 && total == N + 1);
    lstore_infos_free(p, pn);
    T(!lstore_queue(s, "odd", 0, 1000, &p, &pn, &total, &err) && total == N / 2 + 1 && pn == total);
    lstore_infos_free(p, pn);
    T(!lstore_queue(s, "odd", 140, 1000, &p, &pn, &total, &err) && total == N / 2 + 1 && pn == total - 140 &&
      !strcmp(p[0]->predicted_domain, "odd"));
    lstore_infos_free(p, pn);
    lstore_infos_free(q, n);

    /* labels: unknown sample, wrong-size mask, bad domain */
    char *m86 = mask_str(6, 8, 1), *m99 = mask_str(9, 9, 1);
    T(lstore_label(s, 99999, "A", m86, "op", 0, NULL, NULL, &err) == ERR_NOTFOUND);
    T(lstore_label(s, ids[1], "A", m99, "op", 0, NULL, NULL, &err) == ERR_INVALID);
    T(lstore_label(s, ids[1], "A", "garbage\x01", "op", 0, NULL, NULL, &err) != 0);
    T(lstore_label(s, ids[1], "bad domain", m86, "op", 0, NULL, NULL, &err) == ERR_INVALID);

    /* label 1..200: odd seq -> A, even -> B */
    int holdout_a = 0, train_a = 0;
    for (int i = 1; i <= 200; i++) {
        Moda__SampleSplit sp = 0;
        uint64_t seq = 0;
        T(!lstore_label(s, ids[i], i % 2 ? "A" : "B", m86, "op", 1000 + i, &sp, &seq, &err));
        int want = lstore_holdout_hash("cam-1", (uint64_t)i) < 0.2 ? MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT
                                                                   : MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_TRAIN;
        T((int)sp == want);
        T(seq == (uint64_t)(i + 1) / 2);
        if (i % 2 && sp == MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT) holdout_a++;
        else if (i % 2) train_a++;
    }
    printf("domain A: %d train, %d holdout (share %.2f)\n", train_a, holdout_a, holdout_a / 100.0);
    T(holdout_a >= 8 && holdout_a <= 35);
    T(!lstore_stats(s, &st, NULL) && st.queued == N + 1 - 200 && st.labels == 200 && st.domains == 2);

    /* cursor pulls in pages of 7 == everything in order, restartable from any cursor */
    uint64_t cur = 0, got = 0, last = 0;
    int more = 1, pages = 0, in_order = 1;
    while (more && pages < 100) {
        lstore_item_t *it = NULL;
        size_t k = 0;
        T(!lstore_labels_since(s, "A", cur, 7, 1, 1 << 20, &it, &k, &cur, &more, &err));
        for (size_t i = 0; i < k; i++) {
            if (it[i].info->label_seq <= last) in_order = 0;
            last = it[i].info->label_seq;
            if (it[i].img_len != 3000 || strcmp(it[i].info->domain, "A") || !it[i].info->mask) in_order = 0;
        }
        got += k;
        lstore_items_free(it, k);
        pages++;
    }
    T(got == 100 && in_order && cur == 100);
    lstore_item_t *it = NULL;
    size_t k = 0;
    T(!lstore_labels_since(s, "A", 0, 1000, 0, 1 << 30, &it, &k, &cur, &more, &err) && k == (size_t)train_a &&
      cur == 100 && !more);
    lstore_items_free(it, k);
    T(!lstore_labels_since(s, "A", 100, 10, 1, 1 << 30, &it, &k, &cur, &more, &err) && k == 0 && cur == 100);
    lstore_items_free(it, k);
    T(!lstore_labels_since(s, "nosuch", 0, 10, 1, 1 << 30, &it, &k, &cur, &more, &err) && k == 0);
    lstore_items_free(it, k);
    /* max_bytes stops a page after the first item that reaches it */
    T(!lstore_labels_since(s, "A", 0, 50, 1, 5000, &it, &k, &cur, &more, &err) && k == 2 && more);
    lstore_items_free(it, k);

    /* relabel sample 1 (A, seq 1) into B: leaves A, gets B's next seq, keeps its split */
    Moda__SampleInfo *before = NULL, *after = NULL;
    T(!lstore_get(s, ids[1], &before, NULL, NULL, &err));
    uint64_t seq = 0;
    T(!lstore_label(s, ids[1], "B", m86, "op2", 0, NULL, &seq, &err) && seq == 101);
    T(!lstore_get(s, ids[1], &after, NULL, NULL, &err) && after->split == before->split &&
      !strcmp(after->domain, "B") && !strcmp(after->actor, "op2") && after->label_seq == 101);
    lstore_info_free(&before);
    lstore_info_free(&after);
    T(!lstore_labels_since(s, "B", 100, 10, 1, 1 << 30, &it, &k, &cur, &more, &err) && k == 1 &&
      it[0].info->sample_id == ids[1]);
    lstore_items_free(it, k);
    lstore_domain_t *d = NULL;
    size_t nd = 0;
    T(!lstore_domains(s, &d, &nd, &err) && nd == 2 && !strcmp(d[0].name, "A") && d[0].labels == 99 &&
      d[1].labels == 101 && d[1].last_seq == 101);
    free(d);

    /* reject: leaves the queue (and labels) */
    T(!lstore_reject(s, ids[250], "op", "blurry", &err));
    T(!lstore_reject(s, ids[2], "op", "wrong", &err)); /* a labeled one */
    T(lstore_reject(s, 424242, "op", "x", &err) == ERR_NOTFOUND);
    T(!lstore_stats(s, &st, NULL) && st.queued == N + 1 - 201 && st.labels == 199);
    T(!lstore_get(s, ids[250], &after, NULL, NULL, &err) && after->state == MODA__SAMPLE_STATE__SAMPLE_STATE_REJECTED &&
      !strcmp(after->reject_reason, "blurry"));
    lstore_info_free(&after);

    /* reopen: everything is still there */
    lstore_close(&s);
    s = lstore_open(dir, &o, &err);
    T(s && !lstore_stats(s, &st, NULL) && st.samples == N + 1 && st.labels == 199);
    void *img = NULL;
    size_t il = 0;
    T(s && !lstore_get(s, ids[7], &after, &img, &il, &err) && il == 3000 && ((unsigned char *)img)[5] == 12);
    free(img);
    lstore_info_free(&after);
    lstore_close(&s);

    /* holdout determinism: the same (camera, seq) in a fresh store, other order and ids */
    lstore_t *s2 = lstore_open(dir2, &o, &err);
    T(s2 != NULL);
    int same = 1;
    for (int i = 200; i >= 1 && s2; i -= 3) {
        Moda__SampleInfo si = MODA__SAMPLE_INFO__INIT;
        Moda__RleMask rm = MODA__RLE_MASK__INIT;
        rm.height = 6;
        rm.width = 8;
        rm.counts = m86;
        si.camera_id = "cam-1";
        si.seq = (uint64_t)i;
        si.width = 8;
        si.height = 6;
        si.format = MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8;
        si.domain = "C";
        si.mask = &rm;
        Moda__SampleSplit sp;
        uint8_t px[48] = {0};
        T(!lstore_add(s2, &si, px, 48, 1, &id, &dup, &sp, &err));
        int want = lstore_holdout_hash("cam-1", (uint64_t)i) < 0.2 ? MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT
                                                                   : MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_TRAIN;
        if ((int)sp != want) same = 0;
        /* explicit split at import is kept */
        si.seq = 100000 + (uint64_t)i;
        si.split = MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT;
        T(!lstore_add(s2, &si, px, 48, 1, &id, &dup, &sp, &err) && sp == MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT);
    }
    T(same);
    /* hash values are stable across builds: sha256("cam-1\0" be64(1)) */
    double h1 = lstore_holdout_hash("cam-1", 1);
    printf("holdout hash(cam-1, 1) = %.17g\n", h1);
    T(h1 >= 0 && h1 < 1);
    lstore_close(&s2);
    free(m86);
    free(m99);
    return t_done("test_label_store");
}
