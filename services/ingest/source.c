/* source.c — source spec parsing and dispatch to the source kinds (see source.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source_impl.h"

static int starts(const char *s, const char *p)
{
    return !strncmp(s, p, strlen(p));
}

int source_spec_parse(source_spec_t *s, const char *text, err_t *err)
{
    if (!text || !*text) return err_set(err, ERR_INVALID, "source: empty spec");
    const char *colon = strchr(text, ':');
    const char *rest = colon ? colon + 1 : "";
    if (strlen(text) >= sizeof s->path)
        return err_set(err, ERR_INVALID, "source '%.60s...': longer than %zu chars", text,
                       sizeof s->path - 1);
    if (starts(text, "folder:")) {
        s->kind = SOURCE_FOLDER;
    } else if (starts(text, "video:")) {
        s->kind = SOURCE_VIDEO;
    } else if (starts(text, "synthetic:")) {
        s->kind = SOURCE_SYNTHETIC;
        int w = 0, h = 0, n = 0;
        if (sscanf(rest, "%dx%d%n", &w, &h, &n) != 2 || rest[n] || w < 16 || h < 16 ||
            w > 8192 || h > 8192)
            return err_set(err, ERR_INVALID, "source '%s': want synthetic:WxH with 16 <= W,H <= 8192",
                           text);
        s->width = w;
        s->height = h;
    } else if (starts(text, "rtsp://") || starts(text, "rtsps://") || starts(text, "http://") ||
               starts(text, "https://") || starts(text, "rtmp://") || starts(text, "udp://") ||
               starts(text, "tcp://") || starts(text, "srt://")) {
        s->kind = SOURCE_STREAM;
        rest = text;
    } else {
        return err_set(err, ERR_INVALID, "source '%s': want folder:DIR, video:FILE, synthetic:WxH or "
                       "a stream URL (rtsp://, http://, ...)", text);
    }
    if (!*rest) return err_set(err, ERR_INVALID, "source '%s': nothing after the kind", text);
    snprintf(s->path, sizeof s->path, "%s", rest);
    return 0;
}

source_t *source_open(const source_spec_t *s, const volatile int *stop, err_t *err)
{
    switch (s->kind) {
    case SOURCE_FOLDER: return source_folder_open(s, err);
    case SOURCE_SYNTHETIC: return source_synth_open(s, err);
    case SOURCE_VIDEO:
    case SOURCE_STREAM: return source_av_open(s, stop, err);
    }
    err_set(err, ERR_INVALID, "source: unknown kind %d", (int)s->kind);
    return NULL;
}

int source_read(source_t *src, source_frame_t *out, err_t *err)
{
    return src->read(src, out, err);
}

void source_close(source_t **src)
{
    if (src && *src) {
        (*src)->close(*src);
        *src = NULL;
    }
}
