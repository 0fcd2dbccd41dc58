/* moda_ingest.h — the camera SDK: send frames to moda-infer without ever blocking the camera.
 *
 * A camera program connects once per camera, then calls moda_ingest_send for every frame it
 * captures. The call copies the pixels into a small bounded queue owned by the connection and
 * returns at once; a sender thread per connection moves queued frames to infer's frame
 * endpoint (ZeroMQ PUSH → infer's PULL, Frame envelope + pixels as binary part 0, see
 * docs/protocol.md). When infer is behind (or absent) the queue fills and the OLDEST queued
 * frame is dropped to make room for the new one, and the drop is counted. So the newest frame
 * always gets through, received seqs are increasing, and at any time
 *     captured == sent + dropped + queued            (moda_ingest_stats)
 * Frames already handed to ZeroMQ (sent) are not dropped by the SDK; the PUSH socket's
 * high-water mark is kept tiny (opts.sndhwm) so few frames wait there.
 *
 * Each connection numbers its frames seq = 1, 2, 3 ... (every captured frame gets a seq,
 * dropped ones too, so infer sees a gap for every drop) and stamps Frame.instance_id with a
 * random 64-bit id drawn once per process, so infer can tell a camera-id collision (two
 * processes sending the same id) from a restart (a new instance id whose seq starts again).
 *
 * Thread-safety: moda_ingest_send / moda_ingest_stats may be called from any thread, but one
 * camera's frames should come from one thread (seq order = call order). Library code: never
 * prints, never exits.
 */
#ifndef MODA_INGEST_H
#define MODA_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct moda_ingest moda_ingest_t;

#define MODA_INGEST_ID_MAX 40 /* camera id length limit (as moda-infer checks it) */

typedef enum {
    MODA_INGEST_GRAY8 = 1, /* raw, w*h bytes */
    MODA_INGEST_RGB8 = 2,  /* raw, w*h*3 bytes, row-major, interleaved */
    MODA_INGEST_JPEG = 3,  /* encoded file bytes (moda_ingest_send_encoded) */
    MODA_INGEST_PNG = 4,   /* encoded file bytes (moda_ingest_send_encoded) */
} moda_ingest_fmt_t;

typedef struct moda_ingest_opts {
    int queue_len;        /* frames waiting in the SDK queue before the oldest drops (2; 1..1024) */
    int sndhwm;           /* ZMQ_SNDHWM of the PUSH socket, messages (1) */
    int linger_ms;        /* moda_ingest_close: time to drain the queue to infer (0 = drop) (0) */
    int reconnect_ivl_ms; /* ZMQ_RECONNECT_IVL (100) */
    int reconnect_ivl_max_ms; /* ZMQ_RECONNECT_IVL_MAX (2000) */
    size_t max_frame_bytes;   /* bigger frames are refused with ERR_RANGE (64 MiB) */
    void *zmq_ctx;        /* borrowed ZeroMQ context to share; NULL = the connection owns one */
    uint64_t instance_id; /* 0 = the process-wide random id (moda_ingest_instance_id) */
} moda_ingest_opts_t;

typedef struct moda_ingest_stats {
    uint64_t captured; /* moda_ingest_send calls that were accepted (= last seq) */
    uint64_t sent;     /* frames handed to ZeroMQ */
    uint64_t dropped;  /* frames dropped from the head of the queue (oldest first) */
    uint64_t queued;   /* frames waiting in the queue now */
    uint64_t send_errors; /* frames lost to a ZeroMQ error (counted in dropped too) */
    uint64_t last_seq; /* seq of the newest captured frame (0 before the first) */
} moda_ingest_stats_t;

/* Defaults as documented in moda_ingest_opts_t. */
void moda_ingest_opts_default(moda_ingest_opts_t *o);

/* The random 64-bit instance id of this process (drawn once, never 0). */
uint64_t moda_ingest_instance_id(void);

/* Connect camera `camera_id` (1..MODA_INGEST_ID_MAX chars of [A-Za-z0-9_.-]) to infer's
 * frame endpoint ("tcp://host:port", "ipc:///path"); opts NULL = defaults. Returns at once:
 * ZeroMQ connects and reconnects in the background, frames queue (and the oldest drop) until
 * infer is there.
 * Caller owns result (moda_ingest_close). NULL + err (ERR_INVALID bad id/endpoint/options,
 * ERR_MSG socket error, ERR_NOMEM). */
moda_ingest_t *moda_ingest_connect(const char *endpoint, const char *camera_id,
                                   const moda_ingest_opts_t *opts, err_t *err);

/* Queue one raw frame (fmt GRAY8 or RGB8; `pixels` borrowed, w*h*channels bytes, copied).
 * capture_time_us: when the camera took it (µs since the Unix epoch; 0 = now). Never blocks
 * on the network: when the queue is full its oldest frame is dropped and counted. Returns 0,
 * ERR_INVALID (bad size/format/NULL), ERR_RANGE (more than max_frame_bytes), ERR_STATE
 * (connection closing). A refused frame gets no seq and is not counted as captured. */
int moda_ingest_send(moda_ingest_t *cam, const void *pixels, int w, int h, moda_ingest_fmt_t fmt,
                     int64_t capture_time_us, err_t *err);

/* As moda_ingest_send for an encoded image (fmt JPEG or PNG, `size` bytes; w, h its size). */
int moda_ingest_send_encoded(moda_ingest_t *cam, const void *data, size_t size, int w, int h,
                             moda_ingest_fmt_t fmt, int64_t capture_time_us, err_t *err);

/* Snapshot of the counters (consistent: captured == sent + dropped + queued). */
void moda_ingest_stats(moda_ingest_t *cam, moda_ingest_stats_t *out);

/* The camera id (borrowed, valid until close). */
const char *moda_ingest_camera_id(const moda_ingest_t *cam);

/* Wait up to timeout_ms until the queue is empty (every captured frame sent or dropped).
 * Returns 0, or ERR_TIMEOUT with frames still queued. */
int moda_ingest_flush(moda_ingest_t *cam, int timeout_ms, err_t *err);

/* Drain for up to opts.linger_ms, stop the sender thread, close the socket (and the context
 * if owned); frames still queued are dropped (and counted; `final` gets the last stats when
 * not NULL). NULL-safe; NULLs *cam. */
void moda_ingest_close(moda_ingest_t **cam, moda_ingest_stats_t *final);

#endif
