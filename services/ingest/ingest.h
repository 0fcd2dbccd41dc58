/* ingest.h — moda-ingest's service logic: cameras (source + SDK connection + thread each),
 * their configuration, and their counters in the service's Health.
 *
 * Every camera runs in its own thread: open the source, read a frame every 1/fps seconds (a
 * live stream: read every frame, send one per 1/fps), hand it to moda_ingest_send (never blocks: the SDK drops the oldest queued frame when infer
 * is behind). A source that fails to open, fails a read, stalls (no data for stall_ms) or
 * ends (stream EOF) is closed and reopened after a backoff that doubles from backoff_ms up to
 * backoff_max_ms and resets after the next good frame. Cameras share nothing but the ZeroMQ
 * context, so one bad camera never stops the others. A timer on the service loop copies each
 * camera's counters into Health: frames_captured_<id>, frames_sent_<id>, frames_dropped_<id>,
 * source_reopens_<id>; the state is DEGRADED while any camera is failing.
 */
#ifndef MODA_INGEST_INGEST_H
#define MODA_INGEST_INGEST_H

#include "cfg.h"
#include "source.h"
#include "svc.h"

#define INGEST_MAX_CAMS 12 /* svc keeps 64 counters; 4 per camera */
#define INGEST_ID_MAX 31   /* "frames_captured_" + id fits svc's 47-char counter names */

typedef struct ingest_cam_cfg {
    char id[INGEST_ID_MAX + 1];
    source_spec_t src;
    double fps;    /* 0 = as fast as the source delivers */
    int queue_len; /* SDK queue, frames */
} ingest_cam_cfg_t;

typedef struct ingest_cfg {
    char connect[256];   /* infer's frame endpoint (PULL, bound by infer) */
    int sndhwm, linger_ms;
    int backoff_ms, backoff_max_ms;
    int stats_ms;        /* how often Health counters are refreshed */
    int ncams;
    ingest_cam_cfg_t cams[INGEST_MAX_CAMS];
} ingest_cfg_t;

/* The program's config schema: the service keys, the single-camera keys (camera_id, source,
 * fps, ...) and, for every `[camera.ID]` section found in the --config file named in argv,
 * the keys camera.ID.source / .fps / .queue_len. Caller owns result (ingest_schema_free).
 * NULL + err when the file cannot be read or a section name is bad. */
cfg_key_t *ingest_schema(int argc, char **argv, err_t *err);
void ingest_schema_free(cfg_key_t **schema);

/* Fill c from a cfg parsed with `schema` (from ingest_schema, borrowed). ERR_CONFIG naming
 * the key when a source spec, id or count is bad, or when no camera is configured. */
int ingest_cfg_load(ingest_cfg_t *c, const cfg_t *cfg, const cfg_key_t *schema, err_t *err);

typedef struct ingest ingest_t;

/* Connect every camera (sharing svc's ZeroMQ context), start the camera threads and the
 * counter timer. Caller owns result; destroy it before svc_destroy. NULL + err. */
ingest_t *ingest_new(svc_t *svc, const ingest_cfg_t *c, err_t *err);
/* Stop the cameras, drain each SDK queue for up to linger_ms, write the final counters to
 * the service and log one line per camera. NULL-safe; NULLs *ing. */
void ingest_destroy(ingest_t **ing);

#endif
