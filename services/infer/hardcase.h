/* hardcase.h — moda-infer's hard-case bookkeeping: per-camera token bucket and the bounded
 * retry queue of unacknowledged hard cases (pure logic, no sockets; infer.c sends).
 *
 * Token bucket: each camera gets `burst` tokens, refilled at `rate` per second; a hard case
 * is sent only when a token is available (else counted as rate-limited and skipped).
 * Retry queue: every sent hard case stays queued until label's HardCaseAck for its
 * (camera, seq) arrives; an item whose ack did not come within `timeout_us` is due again
 * (hcq_due). Capacity is fixed: pushing into a full queue drops the OLDEST item and counts it.
 * Items own a copy of the packed HardCase protobuf and the image bytes.
 * Not thread-safe (used from the service loop's thread only).
 */
#ifndef MODA_INFER_HARDCASE_H
#define MODA_INFER_HARDCASE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define HC_CAMERA_MAX 64 /* bytes of a camera id, including the NUL */

typedef struct hc_bucket {
    char camera[HC_CAMERA_MAX];
    double tokens;
    int64_t last_us;
} hc_bucket_t;

typedef struct hc_limiter {
    double rate, burst;
    int n, cap;
    hc_bucket_t *b; /* owned */
} hc_limiter_t;

/* rate: tokens/s (>= 0), burst >= 1. 0 or ERR_NOMEM / ERR_INVALID. */
int hc_limiter_init(hc_limiter_t *l, double rate, double burst, err_t *err);
void hc_limiter_free(hc_limiter_t *l);
/* 1 when `camera` may send now (a token is taken), 0 when rate-limited. A camera table that
 * cannot grow (ERR_NOMEM) answers 0. */
int hc_limiter_take(hc_limiter_t *l, const char *camera, int64_t now_us);

typedef struct hc_item {
    char camera[HC_CAMERA_MAX];
    uint64_t seq;
    uint8_t *pb;   /* packed HardCase (owned) */
    size_t pb_len;
    uint8_t *img;  /* image bytes, part 0 (owned) */
    size_t img_len;
    int64_t due_us; /* next (re)send time */
    int sends;      /* how many times it was sent */
} hc_item_t;

typedef struct hc_queue {
    int cap, n, head; /* ring: items[(head + i) % cap], oldest first */
    hc_item_t *items;
    uint64_t dropped; /* oldest items dropped because the queue was full */
} hc_queue_t;

int hc_queue_init(hc_queue_t *q, int cap, err_t *err);
void hc_queue_free(hc_queue_t *q);
/* Copies pb and img into a new item due at due_us. Full queue: the oldest item is dropped
 * (q->dropped++). Returns 0, 1 when an item was dropped, or ERR_NOMEM (nothing queued). */
int hc_queue_push(hc_queue_t *q, const char *camera, uint64_t seq, const void *pb, size_t pb_len,
                  const void *img, size_t img_len, int64_t due_us, err_t *err);
/* Removes the item (camera, seq); 1 when found, 0 when not (late or duplicate ack). */
int hc_queue_ack(hc_queue_t *q, const char *camera, uint64_t seq);
/* The i-th oldest item (0 <= i < n), borrowed until the next push/ack. */
hc_item_t *hc_queue_at(hc_queue_t *q, int i);

#endif
