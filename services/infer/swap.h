/* swap.h — the active adapter bank of moda-infer, replaced atomically between two frames.
 *
 * A swap_t holds one current object (an adapter bank, or anything else: the module is generic
 * so it is unit-tested with fake banks). Workers take a reference at the start of a frame
 * (swap_acquire) and give it back at the end (swap_release); swap_publish installs a new object
 * that was fully loaded and validated BESIDE the current one. The switch is one pointer store
 * under a mutex held only for that store / a refcount change, so every frame is served by
 * exactly one complete bank: frames already running keep the old one, the next acquire gets
 * the new one. The old object is destroyed by whoever drops its last reference (the publisher
 * when no frame holds it, else the last worker to release it).
 *
 * Thread-safe: every function may be called from any thread.
 */
#ifndef MODA_INFER_SWAP_H
#define MODA_INFER_SWAP_H

#include <stdint.h>

#include "err.h"

typedef void (*swap_destroy_fn)(void *obj);

typedef struct swap_ref {
    void *obj;        /* the bank (borrowed by holders while they hold the reference) */
    uint64_t version; /* registry version of obj */
    int refs;         /* guarded by the swap's mutex: the slot's own reference + holders */
    swap_destroy_fn destroy;
} swap_ref_t;

typedef struct swap swap_t;

/* An empty swap (swap_acquire returns NULL until the first publish). Caller owns result. */
swap_t *swap_new(err_t *err);
/* Drops the slot's reference (destroys the current object once no holder has it); NULLs *s.
 * Holders must have released their references before the swap itself goes away. */
void swap_destroy(swap_t **s);

/* Installs obj (ownership passes to the swap; destroy(obj) runs when its last reference
 * goes). Returns 0 or ERR_NOMEM (then obj is NOT taken: the caller still owns it). */
int swap_publish(swap_t *s, void *obj, uint64_t version, swap_destroy_fn destroy, err_t *err);

/* A reference to the current object, or NULL when none was published. Release it with
 * swap_release exactly once. */
swap_ref_t *swap_acquire(swap_t *s);
void swap_release(swap_t *s, swap_ref_t *r);

/* Version of the current object (0 = none) and counts for Health/tests. */
uint64_t swap_version(swap_t *s);
uint64_t swap_swaps(swap_t *s);     /* successful publishes */
uint64_t swap_destroyed(swap_t *s); /* objects destroyed so far */

#endif
