/* source.h — frame sources of moda-ingest: an image folder, a video file or network stream
 * (FFmpeg), and a synthetic generator. One source belongs to one camera thread.
 *
 * A source is described by a spec string:
 *   folder:DIR        PNG/JPEG files of DIR in sorted (strcmp) name order, looping if `loop`
 *   video:FILE        a video file decoded with FFmpeg to RGB8, looping if `loop`
 *   rtsp://... http://... https://... rtmp://... udp://...   a stream decoded with FFmpeg
 *   synthetic:WxH     generated RGB8 frames of moving shapes (deterministic per frame index)
 * source_read returns one frame at a time; pixels are borrowed, valid until the next
 * source_read or source_close. A read that waits longer than stall_ms (network streams) fails
 * with ERR_TIMEOUT so the camera can reopen the source.
 */
#ifndef MODA_INGEST_SOURCE_H
#define MODA_INGEST_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "moda_ingest.h"

typedef enum { SOURCE_FOLDER = 1, SOURCE_VIDEO, SOURCE_STREAM, SOURCE_SYNTHETIC } source_kind_t;

typedef struct source_spec {
    source_kind_t kind;
    char path[1024];   /* folder, file or URL */
    int width, height; /* synthetic only */
    int loop;          /* folder/video: start again at the end (else source_read says END) */
    int stall_ms;      /* stream/video: a read or open waiting longer fails (ERR_TIMEOUT) */
} source_spec_t;

/* Returned by source_read at the end of a non-looping folder/video or a stream's EOF. */
#define SOURCE_END 1

typedef struct source_frame {
    const uint8_t *data; /* borrowed: valid until the next source_read / source_close */
    size_t size;
    int w, h;
    moda_ingest_fmt_t fmt; /* GRAY8 or RGB8 */
} source_frame_t;

typedef struct source source_t;

/* Parse a spec string ("folder:DIR", "synthetic:640x480", "rtsp://..."). Fills kind, path,
 * width/height; leaves loop and stall_ms alone. 0 or ERR_INVALID naming the problem. */
int source_spec_parse(source_spec_t *s, const char *text, err_t *err);

/* Open the source. Caller owns result (source_close). NULL + err: ERR_NOTFOUND (missing
 * folder/file, empty folder), ERR_IO / ERR_FORMAT (FFmpeg could not open or decode),
 * ERR_TIMEOUT (stream did not answer within stall_ms). `stop` (borrowed, may be NULL) aborts
 * blocking FFmpeg calls as soon as it becomes nonzero. */
source_t *source_open(const source_spec_t *s, const volatile int *stop, err_t *err);
/* Next frame: 0 (out filled), SOURCE_END, or a negative ERR_* (read/decode error, stall). */
int source_read(source_t *src, source_frame_t *out, err_t *err);
void source_close(source_t **src);

/* Per-kind implementations (source.c dispatches). */
source_t *source_folder_open(const source_spec_t *s, err_t *err);
source_t *source_synth_open(const source_spec_t *s, err_t *err);
source_t *source_av_open(const source_spec_t *s, const volatile int *stop, err_t *err);

#endif
