/* infer.h — moda-infer's service logic (docs/infer.md): frame intake and validation, the
 * worker pool (workers.c), Result publishing, hard cases (hardcase.h), bank hot swap (swap.h),
 * Health counters. main.c only parses the configuration and calls infer_new/svc_run.
 *
 * Threads: the service loop thread owns every zmq socket except the workers' inproc "done"
 * PUSH sockets; it validates frames and queues jobs (bounded, drop-oldest), workers run the
 * model and hand finished jobs back through a mutex-guarded list plus a one-byte inproc wakeup.
 */
#ifndef MODA_INFER_H
#define MODA_INFER_H

#include <stdint.h>

#include "cfg.h"
#include "device.h"
#include "err.h"
#include "image.h"
#include "svc.h"
#include "swap.h"

/* Config keys after SVC_CFG_KEYS (main.c puts both in its schema). */
#define INFER_CFG_KEYS                                                                           \
    {"frames", CFG_ENDPOINT, "ipc:///tmp/moda-infer-frames.sock", 0, 0,                         \
     "frame endpoint (PULL, bound; ingest connects PUSH)"},                                     \
    {"results", CFG_ENDPOINT, "ipc:///tmp/moda-infer-results.sock", 0, 0,                       \
     "Result endpoint (PUB, bound; topic result.<camera_id>)"},                                 \
    {"model", CFG_STRING, "", 0, 4000, "SAM weights file (empty: the default model, see paths.h)"},  \
    {"workers", CFG_INT, "1", 1, 64, "worker threads (each loads its own model object)"},      \
    {"worker_threads", CFG_INT, "0", 0, 1024, "CPU threads per worker (0: all cores, shared)"}, \
    {"queue", CFG_INT, "4", 1, 10000, "frames waiting for a worker; when full the oldest is dropped"}, \
    {"max_side", CFG_INT, "8192", 16, 32768, "largest accepted frame side, pixels"},           \
    {"registry", CFG_STRING, "", 0, 300, "registry control endpoint (REQ); empty: no bank"},    \
    {"registry_pub", CFG_STRING, "", 0, 300, "registry BankChanged endpoint (SUB bank.<alias>)"}, \
    {"alias", CFG_STRING, "active", 0, 64, "bank alias to follow"},                             \
    {"registry_timeout_ms", CFG_INT, "5000", 10, 600000, "GetAlias/GetVersion deadline"},      \
    {"label", CFG_STRING, "", 0, 300, "moda-label hard-case endpoint (DEALER); empty: off"},   \
    {"min_selector_prob", CFG_DOUBLE, "0.5", 0, 1, "below: hard case UNKNOWN_DOMAIN"},          \
    {"min_iou", CFG_DOUBLE, "0.7", 0, 1, "predicted IoU below: hard case UNSURE_MASK"},         \
    {"min_stability", CFG_DOUBLE, "0.8", 0, 1, "stability below: hard case UNSURE_MASK"},       \
    {"hc_rate", CFG_DOUBLE, "0.2", 0, 1000, "hard cases per second per camera (token refill)"}, \
    {"hc_burst", CFG_INT, "3", 1, 1000, "hard-case token bucket size per camera"},              \
    {"hc_queue", CFG_INT, "64", 1, 100000, "unacked hard cases kept; full: drop oldest"},       \
    {"hc_ack_timeout_ms", CFG_INT, "2000", 10, 600000, "resend a hard case after this"},       \
    {"health_ms", CFG_INT, "500", 10, 60000, "refresh of derived Health counters"},            \
    {"segment", CFG_ENDPOINT, "ipc:///tmp/moda-infer-segment.sock", 0, 0,                      \
     "interactive segmentation (ROUTER, bound; labeling tools send SegmentRequest)"},          \
    {"embed_cache", CFG_INT, "8", 1, 1024, "image embeddings kept for interactive requests (4 MiB each)"}, \
    {"device", CFG_STRING, "auto", 0, 16,                                                      \
     "cpu | cuda | auto: where the workers' encoder, decoder and adapters run (the selector "  \
     "stays on the CPU; auto: CUDA when a device is present; the choice and its reason are "   \
     "logged as event=device)"}

typedef struct infer infer_t;

/* Loads the model(s), binds/connects the sockets, registers handlers and timers on svc and
 * starts the workers. Caller owns result (infer_destroy BEFORE svc_destroy). NULL + err. */
infer_t *infer_new(svc_t *svc, const cfg_t *cfg, err_t *err);
/* Stops and joins the workers, frees everything (sockets belong to svc). NULLs *p. */
void infer_destroy(infer_t **p);

/* ---- internal: shared by infer.c and workers.c ---------------------------------------- */

enum { JOB_FRAME = 1, JOB_SEGMENT = 2 };

typedef struct job {
    int kind;
    char camera[64];
    uint64_t seq;
    int64_t capture_us, in_us;
    int format;       /* Moda__PixelFormat of the original bytes */
    uint8_t *raw;     /* the frame's part 0 bytes (owned; sent with a hard case) */
    size_t raw_len;
    image_t *img;     /* decoded pixels (owned); NULL for a segment job on a cached embedding */
    /* JOB_SEGMENT: the request (owned; route + id for the reply), its prompt, image hash */
    msg_t *req;
    float points[64 * 3];
    int n_points, has_box;
    float box[4];
    char emb_id[65];
    int cached;
    int mh, mw; /* mask size */
    /* filled by the worker */
    int rc;
    char errmsg[256];
    uint64_t bank_version;
    char domain[65];
    float prob, iou, stability;
    char *rle;        /* COCO counts string (owned) */
    int64_t done_us;
    struct job *next;
} job_t;

void job_free(job_t *j);

typedef struct pool pool_t;
/* Starts n workers, each with its own sam_t loaded from model_path, serving jobs from the
 * pool's bounded queue (cap) and reporting to done_ep (inproc PUSH, one byte per job).
 * threads > 0: each worker's CPU budget (kn_set_thread_local_threads), 0: the process-wide
 * count. banks: the shared swap of adapter banks (borrowed). cache_n: image embeddings kept
 * for interactive segmentation (least recently used goes first). dev: the device_select
 * result (updated: `auto` falls back to the CPU for an encoder without a GPU path; `cuda`
 * then fails with ERR_CONFIG); with CUDA each worker gets its own GPU encoder (enc_cuda.h)
 * and its bankrun decodes and runs the adapters on the GPU (bankrun_use_cuda); the selector
 * stays on the CPU. Logs the final choice (device_log). */
pool_t *pool_new(void *zctx, const char *model_path, int n, int threads, int cap,
                 const char *done_ep, swap_t *banks, int cache_n, device_choice_t *dev,
                 err_t *err);
void pool_destroy(pool_t **p);
/* Queues j (ownership taken). When the queue is full the oldest queued job is returned in
 * *dropped (caller frees and counts), else *dropped = NULL. */
void pool_push(pool_t *p, job_t *j, job_t **dropped);
/* Finished jobs, oldest first (caller frees each), or NULL. */
job_t *pool_take_done(pool_t *p);
int pool_queue_depth(pool_t *p);
/* The frozen model's content hash (bank base model check) and early channels. */
const char *pool_base_hash(pool_t *p);
int pool_early_channels(pool_t *p);

#endif
