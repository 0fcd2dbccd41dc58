/* dataset.h — one segmentation domain on disk: <dir>/{images,masks,split.txt}.
 *
 *   dataset_t *d = dataset_open("../shared/data/cl/bsdata", &err);
 *   for (int i = 0; i < d->n; i++) if (d->s[i].split == DS_TRAIN) {
 *       image_t *img; uint8_t *mask; dataset_load(d, i, &img, &mask, &err); ... }
 *   dataset_close(&d);
 *
 * Layout (../shared/data/README.md): split.txt has one "<id> train|test" per line (blank
 * lines ignored); images/<id>.png or images/<id>.jpg; masks/<id>.png, 8-bit single channel,
 * values exactly 0 or 255, same size as the image. Errors name the file: a missing split
 * file or image or mask, a bad split line, an empty split (no train or no test sample), a
 * mask of another size, a non-binary or multi-channel mask.
 */
#ifndef MODA_DATASET_H
#define MODA_DATASET_H

#include <stdint.h>

#include "err.h"
#include "image.h"

enum { DS_TRAIN = 0, DS_TEST = 1 };

#define DS_ID_MAX 200
#define DS_PATH_MAX 4096

typedef struct ds_sample {
    char id[DS_ID_MAX];
    int split; /* DS_TRAIN or DS_TEST */
    char image[DS_PATH_MAX];
    char mask[DS_PATH_MAX];
} ds_sample_t;

typedef struct dataset {
    char dir[DS_PATH_MAX];
    int n;          /* samples in split.txt order */
    int n_train, n_test;
    ds_sample_t *s; /* owned */
} dataset_t;

/* Reads split.txt and checks that every listed image and mask file exists (pixels are
 * checked by dataset_load). Caller owns result. NULL + err: ERR_NOTFOUND (folder, split
 * file, image, mask — named), ERR_FORMAT (bad split line, named with its line number),
 * ERR_INVALID (empty split). */
dataset_t *dataset_open(const char *dir, err_t *err);
void dataset_close(dataset_t **d);

/* Index list of one split (DS_TRAIN / DS_TEST) into idx (capacity d->n); returns the count. */
int dataset_indices(const dataset_t *d, int split, int *idx);

/* Loads sample i: *img (caller owns, gray or RGB as stored) and *mask (caller owns, h·w bytes,
 * 0 or 1). ERR_FORMAT naming the mask for a size mismatch, a multi-channel mask or a value
 * other than 0/255; image errors as image_load. */
int dataset_load(const dataset_t *d, int i, image_t **img, uint8_t **mask, err_t *err);

#endif
