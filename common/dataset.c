/* dataset.c — domain folders: split.txt, images/, masks/ (dataset.h). */
#include "dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

dataset_t *dataset_open(const char *dir, err_t *err)
{
    struct stat st;
    if (!dir || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        err_set(err, ERR_NOTFOUND, "dataset '%s': not a folder", dir ? dir : "(null)");
        return NULL;
    }
    dataset_t *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(err, ERR_NOMEM, "dataset: out of memory");
        return NULL;
    }
    snprintf(d->dir, sizeof d->dir, "%s", dir);
    char path[DS_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/split.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        err_errno(err, ERR_NOTFOUND, errno, "dataset: cannot open split file '%s'", path);
        free(d);
        return NULL;
    }
    int cap = 0, lineno = 0;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t L = strlen(line);
        while (L && (line[L - 1] == '\n' || line[L - 1] == '\r' || line[L - 1] == ' ')) line[--L] = 0;
        if (!L) continue;
        char id[DS_ID_MAX], sp[16], extra;
        int k = sscanf(line, "%199s %15s %c", id, sp, &extra);
        int split = k == 2 && !strcmp(sp, "train") ? DS_TRAIN : k == 2 && !strcmp(sp, "test") ? DS_TEST : -1;
        if (split < 0 || strchr(id, '/')) {
            err_set(err, ERR_FORMAT, "dataset: %s line %d: expected '<id> train' or '<id> test', got '%.80s'",
                    path, lineno, line);
            goto fail;
        }
        if (d->n == cap) {
            cap = cap ? cap * 2 : 64;
            ds_sample_t *ns = realloc(d->s, sizeof *ns * (size_t)cap);
            if (!ns) {
                err_set(err, ERR_NOMEM, "dataset: out of memory");
                goto fail;
            }
            d->s = ns;
        }
        ds_sample_t *s = &d->s[d->n];
        memset(s, 0, sizeof *s);
        snprintf(s->id, sizeof s->id, "%s", id);
        s->split = split;
        const char *ext[] = {"png", "jpg", "jpeg", "PNG", "JPG"};
        int found = 0;
        for (size_t e = 0; e < sizeof ext / sizeof ext[0] && !found; e++) {
            snprintf(s->image, sizeof s->image, "%s/images/%s.%s", dir, id, ext[e]);
            found = is_file(s->image);
        }
        if (!found) {
            err_set(err, ERR_NOTFOUND, "dataset: %s line %d: no image '%s/images/%s.png' or '.jpg'",
                    path, lineno, dir, id);
            goto fail;
        }
        snprintf(s->mask, sizeof s->mask, "%s/masks/%s.png", dir, id);
        if (!is_file(s->mask)) {
            err_set(err, ERR_NOTFOUND, "dataset: missing mask '%s' (listed in %s line %d)", s->mask,
                    path, lineno);
            goto fail;
        }
        if (split == DS_TRAIN) d->n_train++;
        else d->n_test++;
        d->n++;
    }
    fclose(f);
    f = NULL;
    if (!d->n_train || !d->n_test) {
        err_set(err, ERR_INVALID, "dataset: %s has %d train and %d test samples (need at least one of each)",
                path, d->n_train, d->n_test);
        goto fail;
    }
    return d;
fail:
    if (f) fclose(f);
    dataset_close(&d);
    return NULL;
}

void dataset_close(dataset_t **dp)
{
    if (!dp || !*dp) return;
    free((*dp)->s);
    free(*dp);
    *dp = NULL;
}

int dataset_indices(const dataset_t *d, int split, int *idx)
{
    int k = 0;
    for (int i = 0; i < d->n; i++)
        if (d->s[i].split == split) idx[k++] = i;
    return k;
}

int dataset_load(const dataset_t *d, int i, image_t **img, uint8_t **mask, err_t *err)
{
    *img = NULL;
    *mask = NULL;
    if (i < 0 || i >= d->n) return err_set(err, ERR_RANGE, "dataset: sample %d of %d", i, d->n);
    const ds_sample_t *s = &d->s[i];
    image_t *im = image_load(s->image, err);
    if (!im) return err->code ? err->code : ERR_FORMAT;
    image_t *m = image_load(s->mask, err);
    if (!m) {
        image_destroy(&im);
        return err->code ? err->code : ERR_FORMAT;
    }
    int rc = 0;
    if (m->w != im->w || m->h != im->h)
        rc = err_set(err, ERR_FORMAT, "dataset: mask '%s' is %dx%d but image '%s' is %dx%d", s->mask,
                     m->w, m->h, s->image, im->w, im->h);
    else if (m->c != 1)
        rc = err_set(err, ERR_FORMAT, "dataset: mask '%s' has %d channels (need one 8-bit channel)",
                     s->mask, m->c);
    uint8_t *out = NULL;
    if (!rc) {
        size_t n = (size_t)m->w * m->h;
        out = malloc(n);
        if (!out) rc = err_set(err, ERR_NOMEM, "dataset: out of memory");
        for (size_t p = 0; !rc && p < n; p++) {
            uint8_t v = m->data[p];
            if (v != 0 && v != 255)
                rc = err_set(err, ERR_FORMAT,
                             "dataset: mask '%s' is not binary: value %d at pixel (%zu, %zu) (need 0 or 255)",
                             s->mask, v, p % (size_t)m->w, p / (size_t)m->w);
            out[p] = v ? 1 : 0;
        }
    }
    image_destroy(&m);
    if (rc) {
        free(out);
        image_destroy(&im);
        return rc;
    }
    *img = im;
    *mask = out;
    return 0;
}
