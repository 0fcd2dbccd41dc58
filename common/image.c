/* image.c — PNG/JPEG decode (libpng, libjpeg-turbo), PNG write, mask overlay.
 *
 * Both decoders run on an in-memory buffer with their error handlers redirected to a
 * longjmp back into this file, so a corrupt file becomes ERR_FORMAT with libpng's/libjpeg's
 * own text, never a print or an exit. Dimensions are checked against the limits in image.h
 * right after the header is parsed, before the pixel buffer exists.
 */
#include "image.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jerror.h>
#include <jpeglib.h>

static const char *name_or(const char *what) { return what ? what : "image"; }

static int check_dims(long long w, long long h, const char *what, err_t *err)
{
    if (w < 1 || h < 1)
        return err_set(err, ERR_FORMAT, "%s: invalid size %lldx%lld", name_or(what), w, h);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || w * h > IMAGE_MAX_PIXELS)
        return err_set(err, ERR_RANGE,
                       "%s: image of %lldx%lld exceeds the limit (%d per side, %lld pixels)",
                       name_or(what), w, h, IMAGE_MAX_SIDE, (long long)IMAGE_MAX_PIXELS);
    return 0;
}

image_t *image_new(int w, int h, int c, err_t *err)
{
    if (c != 1 && c != 3) {
        err_set(err, ERR_INVALID, "image: %d channels (need 1 or 3)", c);
        return NULL;
    }
    if (check_dims(w, h, "image", err)) return NULL;
    image_t *im = calloc(1, sizeof *im);
    if (im) im->data = calloc((size_t)w * h * c, 1);
    if (!im || !im->data) {
        free(im);
        err_set(err, ERR_NOMEM, "image: out of memory for %dx%dx%d", w, h, c);
        return NULL;
    }
    im->w = w;
    im->h = h;
    im->c = c;
    return im;
}

void image_destroy(image_t **im)
{
    if (!im || !*im) return;
    free((*im)->data);
    free(*im);
    *im = NULL;
}

/* ---- PNG -------------------------------------------------------------------------------- */

typedef struct png_ctx {
    const uint8_t *buf;
    size_t len, pos;
    char msg[200];
} png_ctx_t;

static void png_err_fn(png_structp p, png_const_charp msg)
{
    png_ctx_t *ctx = png_get_error_ptr(p);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg);
    png_longjmp(p, 1);
}

static void png_warn_fn(png_structp p, png_const_charp msg)
{
    (void)p;
    (void)msg; /* warnings (e.g. bad CRC in an ancillary chunk) are not failures */
}

static void png_read_fn(png_structp p, png_bytep out, png_size_t n)
{
    png_ctx_t *ctx = png_get_io_ptr(p);
    if (n > ctx->len - ctx->pos) png_error(p, "file is truncated");
    memcpy(out, ctx->buf + ctx->pos, n);
    ctx->pos += n;
}

static image_t *decode_png(const uint8_t *buf, size_t len, const char *what, err_t *err)
{
    /* The spec puts IHDR first: check the declared size before libpng reads further. */
    if (len >= 24 && !memcmp(buf + 12, "IHDR", 4)) {
        uint32_t dw = (uint32_t)buf[16] << 24 | (uint32_t)buf[17] << 16 | buf[18] << 8 | buf[19];
        uint32_t dh = (uint32_t)buf[20] << 24 | (uint32_t)buf[21] << 16 | buf[22] << 8 | buf[23];
        if (check_dims(dw, dh, what, err)) return NULL;
    }
    png_ctx_t ctx = {.buf = buf, .len = len};
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_err_fn, png_warn_fn);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!info) {
        png_destroy_read_struct(&p, NULL, NULL);
        err_set(err, ERR_NOMEM, "%s: out of memory (libpng)", name_or(what));
        return NULL;
    }
    image_t *volatile im = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(p))) {
        free(rows);
        image_destroy((image_t **)&im);
        png_destroy_read_struct(&p, &info, NULL);
        err_set(err, ERR_FORMAT, "%s: corrupt PNG: %s", name_or(what), ctx.msg);
        return NULL;
    }
    png_set_read_fn(p, &ctx, png_read_fn);
    png_set_user_limits(p, IMAGE_MAX_SIDE, IMAGE_MAX_SIDE);
    png_read_info(p, info);
    png_uint_32 w = png_get_image_width(p, info), h = png_get_image_height(p, info);
    int depth = png_get_bit_depth(p, info), ct = png_get_color_type(p, info);
    if (check_dims(w, h, what, err)) {
        png_destroy_read_struct(&p, &info, NULL);
        return NULL;
    }
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(p);
    if (depth == 16) png_set_strip_16(p);
    /* Alpha is dropped, as PIL's convert("RGB") does; a tRNS chunk would otherwise become
     * an alpha channel through the palette expansion. */
    if ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(p, info, PNG_INFO_tRNS))
        png_set_strip_alpha(p);
    png_set_interlace_handling(p);
    png_read_update_info(p, info);
    int c = png_get_channels(p, info);
    if (c != 1 && c != 3) png_error(p, "unexpected channel count after conversion");
    im = image_new((int)w, (int)h, c, err);
    rows = malloc(sizeof(png_bytep) * h);
    if (!im || !rows) {
        free(rows);
        image_destroy((image_t **)&im);
        png_destroy_read_struct(&p, &info, NULL);
        err_set(err, ERR_NOMEM, "%s: out of memory for %ux%u", name_or(what), w, h);
        return NULL;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = im->data + (size_t)y * w * c;
    png_read_image(p, rows);
    png_read_end(p, NULL);
    free(rows);
    png_destroy_read_struct(&p, &info, NULL);
    return im;
}

/* ---- JPEG ------------------------------------------------------------------------------- */

typedef struct jpg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    int truncated;
    char msg[JMSG_LENGTH_MAX];
} jpg_err_t;

static void jpg_error_exit(j_common_ptr ci)
{
    jpg_err_t *e = (jpg_err_t *)ci->err;
    e->mgr.format_message(ci, e->msg);
    longjmp(e->jb, 1);
}

static void jpg_emit(j_common_ptr ci, int level)
{
    jpg_err_t *e = (jpg_err_t *)ci->err;
    /* level -1 is a warning; premature end of data means the file is cut short (libjpeg
     * would pad with gray). Other corrupt-data warnings are tolerated as PIL does. */
    if (level == -1 && e->mgr.msg_code == JWRN_JPEG_EOF) e->truncated = 1;
}

static void jpg_output(j_common_ptr ci) { (void)ci; }

static image_t *decode_jpeg(const uint8_t *buf, size_t len, const char *what, err_t *err)
{
    struct jpeg_decompress_struct ci;
    jpg_err_t je;
    memset(&je, 0, sizeof je);
    ci.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpg_error_exit;
    je.mgr.emit_message = jpg_emit;
    je.mgr.output_message = jpg_output;
    image_t *volatile im = NULL;
    if (setjmp(je.jb)) {
        image_destroy((image_t **)&im);
        jpeg_destroy_decompress(&ci);
        err_set(err, ERR_FORMAT, "%s: corrupt JPEG: %s", name_or(what), je.msg);
        return NULL;
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, buf, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    if (je.truncated) {
        jpeg_destroy_decompress(&ci);
        err_set(err, ERR_FORMAT, "%s: JPEG is truncated (header)", name_or(what));
        return NULL;
    }
    if (check_dims(ci.image_width, ci.image_height, what, err)) {
        jpeg_destroy_decompress(&ci);
        return NULL;
    }
    int c;
    if (ci.jpeg_color_space == JCS_GRAYSCALE) {
        ci.out_color_space = JCS_GRAYSCALE;
        c = 1;
    } else if (ci.jpeg_color_space == JCS_YCbCr || ci.jpeg_color_space == JCS_RGB) {
        ci.out_color_space = JCS_RGB;
        c = 3;
    } else {
        jpeg_destroy_decompress(&ci);
        err_set(err, ERR_UNSUPPORTED, "%s: JPEG colour space %d (CMYK/YCCK) is not supported",
                name_or(what), (int)ci.jpeg_color_space);
        return NULL;
    }
    jpeg_start_decompress(&ci);
    if ((int)ci.output_components != c) {
        jpeg_destroy_decompress(&ci);
        err_set(err, ERR_FORMAT, "%s: JPEG decodes to %d components", name_or(what),
                ci.output_components);
        return NULL;
    }
    im = image_new((int)ci.output_width, (int)ci.output_height, c, err);
    if (!im) {
        jpeg_destroy_decompress(&ci);
        return NULL;
    }
    while (ci.output_scanline < ci.output_height && !je.truncated) {
        JSAMPROW row = im->data + (size_t)ci.output_scanline * im->w * c;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    if (je.truncated) {
        image_destroy((image_t **)&im);
        jpeg_destroy_decompress(&ci);
        err_set(err, ERR_FORMAT, "%s: JPEG is truncated (premature end of data)",
                name_or(what));
        return NULL;
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    return im;
}

/* ---- entry points ----------------------------------------------------------------------- */

image_t *image_decode(const void *buf, size_t len, const char *what, err_t *err)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t *b = buf;
    if (!b || len == 0) {
        err_set(err, ERR_FORMAT, "%s: empty file", name_or(what));
        return NULL;
    }
    if (len >= 8 && !memcmp(b, png_sig, 8)) return decode_png(b, len, what, err);
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return decode_jpeg(b, len, what, err);
    err_set(err, ERR_FORMAT, "%s: not a PNG or JPEG file (unknown signature)", name_or(what));
    return NULL;
}

image_t *image_load(const char *path, err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_errno(err, errno == ENOENT ? ERR_NOTFOUND : ERR_IO, errno, "cannot open image '%s'",
                  path);
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        err_errno(err, ERR_IO, errno, "cannot read image '%s'", path);
        fclose(f);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set(err, ERR_IO, "cannot read image '%s': %s", path,
                S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
        fclose(f);
        return NULL;
    }
    long long n = (long long)st.st_size;
    if (n > IMAGE_MAX_FILE) {
        fclose(f);
        err_set(err, ERR_RANGE, "%s: file of %lld bytes exceeds the %lld byte limit", path, n,
                (long long)IMAGE_MAX_FILE);
        return NULL;
    }
    uint8_t *buf = malloc(n ? (size_t)n : 1);
    if (!buf) {
        fclose(f);
        err_set(err, ERR_NOMEM, "%s: out of memory reading %lld bytes", path, n);
        return NULL;
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || got != (size_t)n) {
        free(buf);
        err_set(err, ERR_IO, "%s: read failed", path);
        return NULL;
    }
    image_t *im = image_decode(buf, (size_t)n, path, err);
    free(buf);
    return im;
}

image_t *image_to_rgb(const image_t *im, err_t *err)
{
    image_t *o = image_new(im->w, im->h, 3, err);
    if (!o) return NULL;
    size_t n = (size_t)im->w * im->h;
    if (im->c == 3)
        memcpy(o->data, im->data, n * 3);
    else
        for (size_t i = 0; i < n; i++) o->data[3 * i] = o->data[3 * i + 1] = o->data[3 * i + 2] = im->data[i];
    return o;
}

int image_save_png(const image_t *im, const char *path, err_t *err)
{
    if (!im || (im->c != 1 && im->c != 3))
        return err_set(err, ERR_INVALID, "%s: can only write gray or RGB images", path);
    FILE *volatile f = fopen(path, "wb");
    if (!f) return err_errno(err, ERR_IO, errno, "cannot write '%s'", path);
    png_ctx_t ctx = {0};
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_err_fn, png_warn_fn);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!info) {
        png_destroy_write_struct(&p, NULL);
        fclose(f);
        return err_set(err, ERR_NOMEM, "%s: out of memory (libpng)", path);
    }
    if (setjmp(png_jmpbuf(p))) {
        png_destroy_write_struct(&p, &info);
        fclose(f);
        remove(path);
        return err_set(err, ERR_FORMAT, "%s: PNG write failed: %s", path, ctx.msg);
    }
    png_init_io(p, f);
    png_set_IHDR(p, info, im->w, im->h, 8, im->c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(p, info);
    for (int y = 0; y < im->h; y++) png_write_row(p, im->data + (size_t)y * im->w * im->c);
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    if (fclose(f) != 0) {
        remove(path);
        return err_errno(err, ERR_IO, errno, "cannot write '%s'", path);
    }
    return 0;
}

image_t *image_overlay(const image_t *im, const uint8_t *mask, const uint8_t color[3], float a,
                       err_t *err)
{
    image_t *o = image_to_rgb(im, err);
    if (!o) return NULL;
    int w = o->w, h = o->h;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            if (!mask[i]) continue;
            int edge = x == 0 || y == 0 || x == w - 1 || y == h - 1 || !mask[i - 1] ||
                       !mask[i + 1] || !mask[i - w] || !mask[i + w];
            uint8_t *px = o->data + 3 * i;
            for (int k = 0; k < 3; k++)
                px[k] = edge ? color[k] : (uint8_t)((1.0f - a) * px[k] + a * color[k] + 0.5f);
        }
    return o;
}
