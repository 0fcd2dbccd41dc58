/* source_folder.c — an image folder as a camera: PNG/JPEG files in sorted name order, decoded
 * with common/image, one per read, starting again at the first when `loop` is set. The file
 * list is read at open (a reopen picks up new files). A file that fails to decode is an error
 * of that read (the camera logs it, counts it and goes on with the next file). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "image.h"
#include "source_impl.h"

typedef struct {
    source_t base;
    char dir[1024];
    char **names;
    int n, next, loop;
    image_t *im;
} folder_t;

static int is_image(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int folder_read(source_t *src, source_frame_t *out, err_t *err)
{
    folder_t *f = (folder_t *)src;
    if (f->next >= f->n) {
        if (!f->loop) return SOURCE_END;
        f->next = 0;
    }
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", f->dir, f->names[f->next++]);
    image_destroy(&f->im);
    f->im = image_load(path, err);
    if (!f->im) return err ? err->code : ERR_FORMAT;
    out->data = f->im->data;
    out->w = f->im->w;
    out->h = f->im->h;
    out->fmt = f->im->c == 1 ? MODA_INGEST_GRAY8 : MODA_INGEST_RGB8;
    out->size = (size_t)f->im->w * (size_t)f->im->h * (size_t)f->im->c;
    return 0;
}

static void folder_close(source_t *src)
{
    folder_t *f = (folder_t *)src;
    for (int i = 0; i < f->n; i++) free(f->names[i]);
    free(f->names);
    image_destroy(&f->im);
    free(f);
}

source_t *source_folder_open(const source_spec_t *s, err_t *err)
{
    DIR *d = opendir(s->path);
    if (!d) {
        err_errno(err, ERR_NOTFOUND, errno, "folder '%s'", s->path);
        return NULL;
    }
    folder_t *f = calloc(1, sizeof *f);
    int cap = 0, ok = f != NULL;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !is_image(e->d_name)) continue;
        if (f->n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(f->names, (size_t)cap * sizeof *nn);
            if (!nn) ok = 0;
            else f->names = nn;
        }
        if (ok && !(f->names[f->n] = strdup(e->d_name))) ok = 0;
        if (ok) f->n++;
    }
    closedir(d);
    if (!ok) {
        if (f) folder_close(&f->base);
        err_set(err, ERR_NOMEM, "folder '%s': listing files", s->path);
        return NULL;
    }
    if (!f->n) {
        folder_close(&f->base);
        err_set(err, ERR_NOTFOUND, "folder '%s': no .png/.jpg/.jpeg files", s->path);
        return NULL;
    }
    qsort(f->names, (size_t)f->n, sizeof *f->names, cmp_names);
    snprintf(f->dir, sizeof f->dir, "%s", s->path);
    f->loop = s->loop;
    f->base.read = folder_read;
    f->base.close = folder_close;
    return &f->base;
}
