/* swap.c — atomic bank switch with reference counts (see swap.h). */
#include "swap.h"

#include <pthread.h>
#include <stdlib.h>

struct swap {
    pthread_mutex_t mu;
    swap_ref_t *cur;
    uint64_t swaps, destroyed;
};

swap_t *swap_new(err_t *err)
{
    swap_t *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(err, ERR_NOMEM, "swap: out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

/* Drops one reference; returns the ref to destroy (outside the lock) or NULL. */
static swap_ref_t *unref_locked(swap_t *s, swap_ref_t *r)
{
    if (!r || --r->refs > 0) return NULL;
    s->destroyed++;
    return r;
}

static void finish(swap_ref_t *r)
{
    if (!r) return;
    if (r->destroy) r->destroy(r->obj);
    free(r);
}

void swap_destroy(swap_t **sp)
{
    if (!sp || !*sp) return;
    swap_t *s = *sp;
    pthread_mutex_lock(&s->mu);
    swap_ref_t *dead = unref_locked(s, s->cur);
    s->cur = NULL;
    pthread_mutex_unlock(&s->mu);
    finish(dead);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *sp = NULL;
}

int swap_publish(swap_t *s, void *obj, uint64_t version, swap_destroy_fn destroy, err_t *err)
{
    swap_ref_t *r = calloc(1, sizeof *r);
    if (!r) return err_set(err, ERR_NOMEM, "swap: out of memory");
    r->obj = obj;
    r->version = version;
    r->refs = 1; /* the slot's reference */
    r->destroy = destroy;
    pthread_mutex_lock(&s->mu);
    swap_ref_t *old = s->cur;
    s->cur = r;
    s->swaps++;
    swap_ref_t *dead = unref_locked(s, old);
    pthread_mutex_unlock(&s->mu);
    finish(dead);
    return 0;
}

swap_ref_t *swap_acquire(swap_t *s)
{
    pthread_mutex_lock(&s->mu);
    swap_ref_t *r = s->cur;
    if (r) r->refs++;
    pthread_mutex_unlock(&s->mu);
    return r;
}

void swap_release(swap_t *s, swap_ref_t *r)
{
    if (!r) return;
    pthread_mutex_lock(&s->mu);
    swap_ref_t *dead = unref_locked(s, r);
    pthread_mutex_unlock(&s->mu);
    finish(dead);
}

uint64_t swap_version(swap_t *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t v = s->cur ? s->cur->version : 0;
    pthread_mutex_unlock(&s->mu);
    return v;
}

uint64_t swap_swaps(swap_t *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t v = s->swaps;
    pthread_mutex_unlock(&s->mu);
    return v;
}

uint64_t swap_destroyed(swap_t *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t v = s->destroyed;
    pthread_mutex_unlock(&s->mu);
    return v;
}
