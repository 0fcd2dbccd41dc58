/* source_impl.h — what every source kind implements (private to services/ingest).
 * A concrete source struct starts with `source_t base`; source.c calls through it. */
#ifndef MODA_INGEST_SOURCE_IMPL_H
#define MODA_INGEST_SOURCE_IMPL_H

#include "source.h"

struct source {
    int (*read)(source_t *src, source_frame_t *out, err_t *err);
    void (*close)(source_t *src); /* frees everything, including src */
};

#endif
