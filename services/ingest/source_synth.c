/* source_synth.c — a synthetic camera: RGB8 frames of a drifting gradient, a square moving
 * left to right and a disc moving up and down. Frame k (k = 1, 2, ... since open) is a pure
 * function of k and the size, and its index is written into the first 8 pixels of row 0
 * (pixel i has R = G = B = byte i of k, little endian) so a receiver can check which frame
 * it got. Never fails after open. */
#include <stdlib.h>
#include <string.h>

#include "source_impl.h"

typedef struct {
    source_t base;
    int w, h;
    uint64_t k;
    uint8_t *px;
} synth_t;

static int synth_read(source_t *src, source_frame_t *out, err_t *err)
{
    (void)err;
    synth_t *s = (synth_t *)src;
    uint64_t k = ++s->k;
    int w = s->w, h = s->h;
    int sq = h / 4, sx = (int)((k * 7) % (uint64_t)(w - sq)), sy = h / 8;
    int r = h / 8, cx = w / 2, cy = r + (int)((k * 5) % (uint64_t)(h - 2 * r));
    for (int y = 0; y < h; y++) {
        uint8_t *row = s->px + (size_t)y * (size_t)w * 3;
        for (int x = 0; x < w; x++) {
            uint8_t *p = row + 3 * x;
            p[0] = (uint8_t)((x + k) * 255 / (unsigned)(w + 1));
            p[1] = (uint8_t)(y * 255 / h);
            p[2] = 96;
            if (x >= sx && x < sx + sq && y >= sy && y < sy + sq) p[0] = 240, p[1] = 40, p[2] = 40;
            int dx = x - cx, dy = y - cy;
            if (dx * dx + dy * dy <= r * r) p[0] = 30, p[1] = 200, p[2] = 60;
        }
    }
    for (int i = 0; i < 8; i++) memset(s->px + 3 * i, (int)((k >> (8 * i)) & 0xff), 3);
    out->data = s->px;
    out->size = (size_t)w * (size_t)h * 3;
    out->w = w;
    out->h = h;
    out->fmt = MODA_INGEST_RGB8;
    return 0;
}

static void synth_close(source_t *src)
{
    synth_t *s = (synth_t *)src;
    free(s->px);
    free(s);
}

source_t *source_synth_open(const source_spec_t *sp, err_t *err)
{
    synth_t *s = calloc(1, sizeof *s);
    if (s) s->px = malloc((size_t)sp->width * (size_t)sp->height * 3);
    if (!s || !s->px) {
        free(s);
        err_set(err, ERR_NOMEM, "synthetic %dx%d: out of memory", sp->width, sp->height);
        return NULL;
    }
    s->w = sp->width;
    s->h = sp->height;
    s->base.read = synth_read;
    s->base.close = synth_close;
    return &s->base;
}
