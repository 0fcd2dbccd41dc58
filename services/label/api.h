/* api.h — moda-label's request handler: one decoded request in, one reply out.
 *
 * Between the service loop (main.c: sockets) and the store (store.h). It never touches a
 * socket, so tests can call it directly. Handles HardCase (-> HardCaseAck, sent by main only
 * after this returned, i.e. after the store committed), ListQueue, GetSample, SubmitLabel,
 * RejectSample, LabelsSince, ImportSample and ListDomains (protocol: docs/label.md). Every
 * reply carries a Status; bad input gives an error status and never stops the service.
 * Single-threaded.
 */
#ifndef MODA_LABEL_API_H
#define MODA_LABEL_API_H

#include <stddef.h>

#include "msg.h"
#include "store.h"

#define API_QUEUE_LIMIT 50          /* ListQueue default page */
#define API_QUEUE_MAX 1000
#define API_LABELS_LIMIT 100        /* LabelsSince default */
#define API_LABELS_MAX 1000
#define API_LABELS_BYTES ((size_t)32 << 20) /* images per LabelsSince reply (after the first) */

/* A reply under construction. Zero-initialise; api_reply_clear after sending. */
typedef struct api_reply {
    Moda__Envelope env;
    msg_part_t parts[MSG_MAX_PARTS];
    int nparts;
    int status;          /* ERR_* code the reply reports (0 = OK) */
    const char *event;   /* counter name for what happened ("hard_case_stored", ...), literal */
    void **owned;        /* freed by api_reply_clear */
    int nowned, capowned;
    lstore_item_t *items; /* LabelsSince results (images are the parts) */
    size_t nitems;
    Moda__SampleInfo **infos;
    size_t ninfos;
} api_reply_t;

/* Handles one request (env and parts borrowed; env must have a body). Always fills *out;
 * returns the reply's status code. */
int api_handle(lstore_t *st, const Moda__Envelope *env, const msg_part_t *parts, int nparts, api_reply_t *out);
void api_reply_clear(api_reply_t *r);

/* Checks image bytes against the declared format and size: raw formats by byte count,
 * JPEG/PNG by decoding. 0 or ERR_INVALID/ERR_FORMAT naming the problem. */
int api_image_check(Moda__PixelFormat fmt, uint32_t w, uint32_t h, const void *data, size_t len, err_t *err);

#endif
