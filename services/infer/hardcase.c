/* hardcase.c — token bucket and bounded ack/retry queue for hard cases (see hardcase.h). */
#include "hardcase.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int hc_limiter_init(hc_limiter_t *l, double rate, double burst, err_t *err)
{
    memset(l, 0, sizeof *l);
    if (!(rate >= 0) || !(burst >= 1))
        return err_set(err, ERR_INVALID, "hard-case rate %g must be >= 0 and burst %g >= 1", rate,
                       burst);
    l->rate = rate;
    l->burst = burst;
    return 0;
}

void hc_limiter_free(hc_limiter_t *l)
{
    free(l->b);
    memset(l, 0, sizeof *l);
}

int hc_limiter_take(hc_limiter_t *l, const char *camera, int64_t now_us)
{
    hc_bucket_t *b = NULL;
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->b[i].camera, camera)) b = &l->b[i];
    if (!b) {
        if (l->n == l->cap) {
            int cap = l->cap ? 2 * l->cap : 8;
            hc_bucket_t *nb = realloc(l->b, sizeof *nb * (size_t)cap);
            if (!nb) return 0;
            l->b = nb;
            l->cap = cap;
        }
        b = &l->b[l->n++];
        snprintf(b->camera, sizeof b->camera, "%s", camera);
        b->tokens = l->burst;
        b->last_us = now_us;
    }
    if (now_us > b->last_us) {
        b->tokens += l->rate * (double)(now_us - b->last_us) / 1e6;
        if (b->tokens > l->burst) b->tokens = l->burst;
        b->last_us = now_us;
    }
    if (b->tokens < 1.0) return 0;
    b->tokens -= 1.0;
    return 1;
}

int hc_queue_init(hc_queue_t *q, int cap, err_t *err)
{
    memset(q, 0, sizeof *q);
    if (cap < 1) return err_set(err, ERR_INVALID, "hard-case queue capacity %d must be >= 1", cap);
    q->items = calloc((size_t)cap, sizeof *q->items);
    if (!q->items) return err_set(err, ERR_NOMEM, "hard-case queue: out of memory");
    q->cap = cap;
    return 0;
}

static void item_free(hc_item_t *it)
{
    free(it->pb);
    free(it->img);
    memset(it, 0, sizeof *it);
}

void hc_queue_free(hc_queue_t *q)
{
    for (int i = 0; i < q->n; i++) item_free(&q->items[(q->head + i) % q->cap]);
    free(q->items);
    memset(q, 0, sizeof *q);
}

hc_item_t *hc_queue_at(hc_queue_t *q, int i)
{
    return (i < 0 || i >= q->n) ? NULL : &q->items[(q->head + i) % q->cap];
}

int hc_queue_push(hc_queue_t *q, const char *camera, uint64_t seq, const void *pb, size_t pb_len,
                  const void *img, size_t img_len, int64_t due_us, err_t *err)
{
    hc_item_t it = {0};
    snprintf(it.camera, sizeof it.camera, "%s", camera);
    it.seq = seq;
    it.pb = malloc(pb_len ? pb_len : 1);
    it.img = malloc(img_len ? img_len : 1);
    if (!it.pb || !it.img) {
        item_free(&it);
        return err_set(err, ERR_NOMEM, "hard-case queue: out of memory");
    }
    if (pb_len) memcpy(it.pb, pb, pb_len);
    if (img_len) memcpy(it.img, img, img_len);
    it.pb_len = pb_len;
    it.img_len = img_len;
    it.due_us = due_us;
    int dropped = 0;
    if (q->n == q->cap) {
        item_free(&q->items[q->head]);
        q->head = (q->head + 1) % q->cap;
        q->n--;
        q->dropped++;
        dropped = 1;
    }
    q->items[(q->head + q->n) % q->cap] = it;
    q->n++;
    return dropped;
}

int hc_queue_ack(hc_queue_t *q, const char *camera, uint64_t seq)
{
    for (int i = 0; i < q->n; i++) {
        hc_item_t *it = &q->items[(q->head + i) % q->cap];
        if (it->seq != seq || strcmp(it->camera, camera)) continue;
        item_free(it);
        /* close the gap: shift the newer items one slot toward the head */
        for (int j = i; j < q->n - 1; j++)
            q->items[(q->head + j) % q->cap] = q->items[(q->head + j + 1) % q->cap];
        memset(&q->items[(q->head + q->n - 1) % q->cap], 0, sizeof(hc_item_t));
        q->n--;
        return 1;
    }
    return 0;
}
