/* source_av.c — video files and network streams (RTSP, HTTP, ...) decoded with FFmpeg's
 * libraries to RGB8 (libswscale). Every blocking FFmpeg call (open, probe, read) runs under
 * an interrupt callback with a deadline of stall_ms, renewed before each call, and the
 * camera's stop flag: a stream that stops sending fails the read with ERR_TIMEOUT instead of
 * hanging, so the camera thread can reopen it. End of a file: start again when `loop`, else
 * SOURCE_END; end of a network stream is SOURCE_END (the camera reopens it with backoff).
 * FFmpeg's own logging is silenced (library code never prints); errors carry av_strerror. */
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "source_impl.h"

typedef struct {
    source_t base;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVPacket *pkt;
    AVFrame *frame;
    struct SwsContext *sws;
    int stream, draining, loop, stall_ms, is_file;
    uint8_t *rgb;
    size_t rgb_cap;
    int64_t deadline_ns;
    const volatile int *stop;
    int timed_out;
    char path[1024];
} av_t;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int interrupt_cb(void *arg)
{
    av_t *a = arg;
    if (a->stop && *a->stop) return 1;
    if (now_ns() > a->deadline_ns) {
        a->timed_out = 1;
        return 1;
    }
    return 0;
}

static void arm(av_t *a)
{
    a->deadline_ns = now_ns() + (int64_t)a->stall_ms * 1000000LL;
    a->timed_out = 0;
}

static int av_err(av_t *a, err_t *err, int code, int averr, const char *what)
{
    char buf[128];
    if (a->timed_out)
        return err_set(err, ERR_TIMEOUT, "'%s': %s: no data for %d ms", a->path, what, a->stall_ms);
    av_strerror(averr, buf, sizeof buf);
    return err_set(err, code, "'%s': %s: %s", a->path, what, buf);
}

static void av_close(source_t *src)
{
    av_t *a = (av_t *)src;
    sws_freeContext(a->sws);
    av_frame_free(&a->frame);
    av_packet_free(&a->pkt);
    avcodec_free_context(&a->dec);
    avformat_close_input(&a->fmt);
    free(a->rgb);
    free(a);
}

static int convert(av_t *a, source_frame_t *out, err_t *err)
{
    AVFrame *f = a->frame;
    int w = f->width, h = f->height;
    if (w < 1 || h < 1 || w > 16384 || h > 16384)
        return err_set(err, ERR_FORMAT, "'%s': decoded frame of size %dx%d", a->path, w, h);
    a->sws = sws_getCachedContext(a->sws, w, h, (enum AVPixelFormat)f->format, w, h,
                                  AV_PIX_FMT_RGB24, SWS_BILINEAR, NULL, NULL, NULL);
    if (!a->sws)
        return err_set(err, ERR_UNSUPPORTED, "'%s': cannot convert pixel format %d to RGB",
                       a->path, f->format);
    size_t need = (size_t)w * (size_t)h * 3;
    if (a->rgb_cap < need) {
        uint8_t *nb = realloc(a->rgb, need + 64);
        if (!nb) return err_set(err, ERR_NOMEM, "'%s': %zu bytes for a frame", a->path, need);
        a->rgb = nb;
        a->rgb_cap = need;
    }
    uint8_t *dst[4] = {a->rgb, NULL, NULL, NULL};
    int stride[4] = {w * 3, 0, 0, 0};
    sws_scale(a->sws, (const uint8_t *const *)f->data, f->linesize, 0, h, dst, stride);
    out->data = a->rgb;
    out->size = need;
    out->w = w;
    out->h = h;
    out->fmt = MODA_INGEST_RGB8;
    return 0;
}

static int rewind_file(av_t *a, err_t *err)
{
    arm(a);
    int r = av_seek_frame(a->fmt, a->stream, 0, AVSEEK_FLAG_BACKWARD);
    if (r < 0) r = avformat_seek_file(a->fmt, -1, INT64_MIN, 0, 0, 0);
    if (r < 0) return av_err(a, err, ERR_IO, r, "seeking to the start");
    avcodec_flush_buffers(a->dec);
    a->draining = 0;
    return 0;
}

static int av_read(source_t *src, source_frame_t *out, err_t *err)
{
    av_t *a = (av_t *)src;
    int rewound = 0;
    for (;;) {
        int r = avcodec_receive_frame(a->dec, a->frame);
        if (r == 0) {
            int rc = convert(a, out, err);
            av_frame_unref(a->frame);
            return rc;
        }
        if (r == AVERROR_EOF) {
            if (!a->loop || !a->is_file || rewound) return SOURCE_END;
            int rc = rewind_file(a, err);
            if (rc) return rc;
            rewound = 1; /* a file with no decodable frame must not spin */
            continue;
        }
        if (r != AVERROR(EAGAIN)) return av_err(a, err, ERR_FORMAT, r, "decoding");
        if (a->draining) return SOURCE_END;
        arm(a);
        r = av_read_frame(a->fmt, a->pkt);
        if (r == AVERROR_EOF || (r < 0 && a->fmt->pb && avio_feof(a->fmt->pb) && !a->timed_out)) {
            a->draining = 1;
            r = avcodec_send_packet(a->dec, NULL);
            if (r < 0 && r != AVERROR_EOF) return av_err(a, err, ERR_FORMAT, r, "flushing");
            continue;
        }
        if (r < 0) return av_err(a, err, ERR_IO, r, "reading");
        if (a->pkt->stream_index == a->stream) {
            r = avcodec_send_packet(a->dec, a->pkt);
            av_packet_unref(a->pkt);
            if (r < 0 && r != AVERROR(EAGAIN)) return av_err(a, err, ERR_FORMAT, r, "decoding");
            if (r == 0) rewound = 0;
        } else {
            av_packet_unref(a->pkt);
        }
    }
}

static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;
static void quiet(void)
{
    av_log_set_level(AV_LOG_QUIET);
    avformat_network_init();
}

source_t *source_av_open(const source_spec_t *s, const volatile int *stop, err_t *err)
{
    pthread_once(&quiet_once, quiet);
    av_t *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(err, ERR_NOMEM, "'%s': out of memory", s->path);
        return NULL;
    }
    a->base.read = av_read;
    a->base.close = av_close;
    a->stop = stop;
    a->stall_ms = s->stall_ms > 0 ? s->stall_ms : 5000;
    a->loop = s->loop;
    a->is_file = s->kind == SOURCE_VIDEO;
    snprintf(a->path, sizeof a->path, "%s", s->path);
    a->fmt = avformat_alloc_context();
    a->pkt = av_packet_alloc();
    a->frame = av_frame_alloc();
    if (!a->fmt || !a->pkt || !a->frame) {
        av_close(&a->base);
        err_set(err, ERR_NOMEM, "'%s': out of memory", s->path);
        return NULL;
    }
    a->fmt->interrupt_callback.callback = interrupt_cb;
    a->fmt->interrupt_callback.opaque = a;
    arm(a);
    AVDictionary *opts = NULL;
    if (!a->is_file && !strncmp(s->path, "rtsp", 4)) av_dict_set(&opts, "rtsp_transport", "tcp", 0);
    int r = avformat_open_input(&a->fmt, s->path, NULL, &opts);
    av_dict_free(&opts);
    int code = a->is_file && r == AVERROR(ENOENT) ? ERR_NOTFOUND : ERR_IO;
    if (r < 0) {
        av_err(a, err, code, r, "opening");
        a->fmt = NULL; /* freed by avformat_open_input on failure */
        av_close(&a->base);
        return NULL;
    }
    arm(a);
    if ((r = avformat_find_stream_info(a->fmt, NULL)) < 0) {
        av_err(a, err, ERR_FORMAT, r, "probing");
        av_close(&a->base);
        return NULL;
    }
    const AVCodec *codec = NULL;
    a->stream = av_find_best_stream(a->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (a->stream < 0 || !codec) {
        av_err(a, err, ERR_FORMAT, a->stream < 0 ? a->stream : AVERROR_DECODER_NOT_FOUND,
               "finding a video stream");
        av_close(&a->base);
        return NULL;
    }
    a->dec = avcodec_alloc_context3(codec);
    if (!a->dec ||
        (r = avcodec_parameters_to_context(a->dec, a->fmt->streams[a->stream]->codecpar)) < 0 ||
        (r = avcodec_open2(a->dec, codec, NULL)) < 0) {
        av_err(a, err, ERR_FORMAT, a->dec ? r : AVERROR(ENOMEM), "opening the decoder");
        av_close(&a->base);
        return NULL;
    }
    return &a->base;
}
