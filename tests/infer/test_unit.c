/* test_unit.c — moda-infer's pure modules: swap.c (bank hot swap) and hardcase.c.
 *
 * Swap: two fake banks carry a magic value that the destroy function poisons; worker threads
 * run "frames" that acquire the current bank, check its magic several times while the main
 * thread publishes a new bank, and record which version served them. Checks: each frame saw
 * one consistent bank from start to end, the old bank was destroyed exactly once and only
 * after its last frame released it, frames started after the publish get the new bank.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../unit/t_check.h"
#include "hardcase.h"
#include "swap.h"

#define MAGIC 0x5a5a1234u

typedef struct fake_bank {
    unsigned magic;
    uint64_t version;
    int *destroyed; /* bumped by destroy */
} fake_bank_t;

static void fake_destroy(void *obj)
{
    fake_bank_t *b = obj;
    T(b->magic == MAGIC); /* destroyed once */
    b->magic = 0xdeadu;
    (*b->destroyed)++;
    free(b);
}

static fake_bank_t *fake_new(uint64_t v, int *destroyed)
{
    fake_bank_t *b = calloc(1, sizeof *b);
    b->magic = MAGIC;
    b->version = v;
    b->destroyed = destroyed;
    return b;
}

typedef struct frame_ctx {
    swap_t *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, go;
    uint64_t served; /* version that served this frame */
    int consistent;
} frame_ctx_t;

/* A frame in flight: acquire, signal "started", wait until the main thread swapped, use the
 * bank again, release. */
static void *frame_thread(void *arg)
{
    frame_ctx_t *f = arg;
    swap_ref_t *r = swap_acquire(f->s);
    fake_bank_t *b = r ? r->obj : NULL;
    uint64_t v0 = b ? b->version : 0;
    pthread_mutex_lock(&f->mu);
    f->started = 1;
    pthread_cond_broadcast(&f->cv);
    while (!f->go) pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    f->consistent = b && b->magic == MAGIC && b->version == v0 && r->version == v0;
    f->served = v0;
    swap_release(f->s, r);
    return NULL;
}

static void test_swap(void)
{
    err_t err = {0};
    swap_t *s = swap_new(&err);
    T(s != NULL);
    T(swap_acquire(s) == NULL); /* nothing published: zero-shot */
    T(swap_version(s) == 0);
    int d1 = 0, d2 = 0;
    T(swap_publish(s, fake_new(1, &d1), 1, fake_destroy, &err) == 0);
    T(swap_version(s) == 1);

    enum { NF = 4 };
    frame_ctx_t f[NF];
    pthread_t th[NF];
    for (int i = 0; i < NF; i++) {
        memset(&f[i], 0, sizeof f[i]);
        f[i].s = s;
        pthread_mutex_init(&f[i].mu, NULL);
        pthread_cond_init(&f[i].cv, NULL);
        pthread_create(&th[i], NULL, frame_thread, &f[i]);
        pthread_mutex_lock(&f[i].mu);
        while (!f[i].started) pthread_cond_wait(&f[i].cv, &f[i].mu);
        pthread_mutex_unlock(&f[i].mu);
    }
    /* all NF frames hold bank 1; swap to bank 2 now */
    T(swap_publish(s, fake_new(2, &d2), 2, fake_destroy, &err) == 0);
    T(swap_version(s) == 2);
    T(d1 == 0); /* still in use by the frames in flight */
    swap_ref_t *r = swap_acquire(s); /* a frame that starts after the swap */
    T(r && r->version == 2 && ((fake_bank_t *)r->obj)->magic == MAGIC);
    for (int i = 0; i < NF; i++) {
        pthread_mutex_lock(&f[i].mu);
        f[i].go = 1;
        pthread_cond_broadcast(&f[i].cv);
        pthread_mutex_unlock(&f[i].mu);
        pthread_join(th[i], NULL);
        T(f[i].consistent);
        T(f[i].served == 1);
        T(d1 == (i == NF - 1 ? 1 : 0)); /* freed by the last frame that held it */
    }
    swap_release(s, r);
    T(d1 == 1 && d2 == 0);
    T(swap_swaps(s) == 2 && swap_destroyed(s) == 1);

    /* stress: publishers and users at once; every acquired bank is intact while held */
    int d3 = 0;
    for (int k = 0; k < 2000; k++) {
        swap_ref_t *a = swap_acquire(s);
        T(a && ((fake_bank_t *)a->obj)->magic == MAGIC);
        T(swap_publish(s, fake_new(3 + (uint64_t)k, &d3), 3 + (uint64_t)k, fake_destroy, &err) == 0);
        T(((fake_bank_t *)a->obj)->magic == MAGIC);
        swap_release(s, a);
    }
    T(d2 == 1 && d3 == 1999);
    swap_destroy(&s);
    T(s == NULL && d3 == 2000);
    for (int i = 0; i < NF; i++) {
        pthread_mutex_destroy(&f[i].mu);
        pthread_cond_destroy(&f[i].cv);
    }
}

static void test_limiter(void)
{
    err_t err = {0};
    hc_limiter_t l;
    T(hc_limiter_init(&l, 2.0, 0.5, &err) == ERR_INVALID);
    T(hc_limiter_init(&l, 2.0, 3, &err) == 0);
    int64_t t = 1000000;
    int got = 0;
    for (int i = 0; i < 10; i++) got += hc_limiter_take(&l, "cam-a", t);
    T(got == 3); /* the burst */
    T(hc_limiter_take(&l, "cam-b", t) == 1); /* per camera */
    T(hc_limiter_take(&l, "cam-a", t + 400000) == 0); /* 0.8 token */
    T(hc_limiter_take(&l, "cam-a", t + 500000) == 1); /* 1.0 token */
    got = 0;
    for (int i = 0; i < 10; i++) got += hc_limiter_take(&l, "cam-a", t + 100000000);
    T(got == 3); /* refill capped at burst */
    for (int i = 0; i < 40; i++) { /* table growth */
        char id[16];
        snprintf(id, sizeof id, "c%d", i);
        T(hc_limiter_take(&l, id, t) == 1);
    }
    hc_limiter_free(&l);
}

static void test_queue(void)
{
    err_t err = {0};
    hc_queue_t q;
    T(hc_queue_init(&q, 0, &err) == ERR_INVALID);
    T(hc_queue_init(&q, 3, &err) == 0);
    uint8_t pb[4] = {1, 2, 3, 4}, img[5] = {9, 8, 7, 6, 5};
    for (uint64_t s = 1; s <= 3; s++) T(hc_queue_push(&q, "cam", s, pb, 4, img, 5, 0, &err) == 0);
    T(q.n == 3 && q.dropped == 0);
    T(hc_queue_push(&q, "cam", 4, pb, 4, img, 5, 0, &err) == 1); /* full: seq 1 dropped */
    T(q.n == 3 && q.dropped == 1);
    T(hc_queue_at(&q, 0)->seq == 2 && hc_queue_at(&q, 2)->seq == 4);
    T(hc_queue_ack(&q, "cam", 1) == 0); /* dropped already */
    T(hc_queue_ack(&q, "other", 3) == 0);
    T(hc_queue_ack(&q, "cam", 3) == 1); /* middle */
    T(q.n == 2 && hc_queue_at(&q, 0)->seq == 2 && hc_queue_at(&q, 1)->seq == 4);
    T(hc_queue_ack(&q, "cam", 3) == 0); /* duplicate ack */
    hc_item_t *it = hc_queue_at(&q, 1);
    T(it->pb_len == 4 && !memcmp(it->pb, pb, 4) && it->img_len == 5 && !memcmp(it->img, img, 5));
    T(hc_queue_push(&q, "cam", 5, pb, 4, img, 5, 0, &err) == 0);
    T(hc_queue_push(&q, "cam", 6, pb, 4, NULL, 0, 0, &err) == 1); /* wraps around the ring */
    T(q.n == 3 && hc_queue_at(&q, 0)->seq == 4 && hc_queue_at(&q, 2)->seq == 6);
    T(hc_queue_ack(&q, "cam", 6) == 1 && hc_queue_ack(&q, "cam", 4) == 1);
    T(q.n == 1 && hc_queue_at(&q, 0)->seq == 5 && hc_queue_at(&q, 1) == NULL);
    hc_queue_free(&q);
}

int main(void)
{
    t_watchdog(50);
    test_swap();
    test_limiter();
    test_queue();
    return t_done("infer_unit");
}
