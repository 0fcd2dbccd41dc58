/* replay.c — replay blobs from in-memory samples (replay.h). */
#include "replay.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"

typedef struct membuf {
    uint8_t *data;
    size_t len, cap;
    int oom;
} membuf_t;

static void mem_write(png_structp p, png_bytep data, png_size_t n)
{
    membuf_t *m = png_get_io_ptr(p);
    if (m->oom) return;
    if (m->len + n > m->cap) {
        size_t nc = m->cap ? m->cap : 4096;
        while (nc < m->len + n) nc *= 2;
        uint8_t *g = realloc(m->data, nc);
        if (!g) {
            m->oom = 1;
            return;
        }
        m->data = g;
        m->cap = nc;
    }
    memcpy(m->data + m->len, data, n);
    m->len += n;
}

static void mem_flush(png_structp p) { (void)p; }

int replay_png_encode(const image_t *im, uint8_t **out, size_t *len, err_t *err)
{
    *out = NULL;
    *len = 0;
    if (!im || (im->c != 1 && im->c != 3) || im->w < 1 || im->h < 1)
        return err_set(err, ERR_INVALID, "PNG encode: need a gray or RGB image");
    membuf_t m = {0};
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!p || !info) {
        png_destroy_write_struct(&p, &info);
        return err_set(err, ERR_NOMEM, "PNG encode: out of memory");
    }
    if (setjmp(png_jmpbuf(p))) {
        png_destroy_write_struct(&p, &info);
        free(m.data);
        return err_set(err, ERR_FORMAT, "PNG encode: libpng failed");
    }
    png_set_write_fn(p, &m, mem_write, mem_flush);
    png_set_IHDR(p, info, (png_uint_32)im->w, (png_uint_32)im->h, 8,
                 im->c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(p, info);
    for (int y = 0; y < im->h; y++)
        png_write_row(p, (png_const_bytep)(im->data + (size_t)y * (size_t)im->w * (size_t)im->c));
    png_write_end(p, info);
    png_destroy_write_struct(&p, &info);
    if (m.oom) {
        free(m.data);
        return err_set(err, ERR_NOMEM, "PNG encode: out of memory");
    }
    *out = m.data;
    *len = m.len;
    return 0;
}

int replay_make(const uint8_t *img_bytes, size_t n, int format, const image_t *img,
                const uint8_t *mask, abank_replay_t *r, err_t *err)
{
    memset(r, 0, sizeof *r);
    int rc = 0;
    if (format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG || format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_PNG) {
        if (!(r->image.data = malloc(n ? n : 1))) return err_set(err, ERR_NOMEM, "out of memory");
        memcpy(r->image.data, img_bytes, n);
        r->image.size = n;
    } else {
        rc = replay_png_encode(img, &r->image.data, &r->image.size, err);
    }
    image_t *mk = rc ? NULL : image_new(img->w, img->h, 1, err);
    if (!rc && !mk) rc = err->code ? err->code : ERR_NOMEM;
    if (!rc) {
        size_t np = (size_t)img->w * (size_t)img->h;
        for (size_t i = 0; i < np; i++) mk->data[i] = mask[i] ? 255 : 0;
        rc = replay_png_encode(mk, &r->mask.data, &r->mask.size, err);
    }
    image_destroy(&mk);
    if (rc) {
        free(r->image.data);
        free(r->mask.data);
        memset(r, 0, sizeof *r);
    }
    return rc;
}
