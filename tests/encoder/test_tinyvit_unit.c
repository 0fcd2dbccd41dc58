/* test_tinyvit_unit.c — tinyvit_new / tinyvit_forward input checking, without the real
 * model: weights files built in memory (wts_writer) that lack a tensor or have a wrong
 * shape must be rejected with NULL and a message naming the tensor; NULL arguments are
 * errors, not crashes. Exit 1 on any failed check.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sam_parts.h"
#include "expect.h"

/* A weights file holding one F32 tensor of the given shape (zeros). */
static wts_t *one_tensor(const char *name, int ndim, const int64_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *z = calloc(n, sizeof(float));
    wts_writer_t *wr = wts_writer_new();
    err_t err = {0};
    void *buf = NULL;
    size_t len = 0;
    wts_t *w = NULL;
    if (wr && z && wts_writer_add(wr, name, WTS_F32, ndim, shape, z, &err) == 0 &&
        wts_writer_to_memory(wr, &buf, &len, &err) == 0)
        w = wts_from_memory(buf, len, &err);
    if (!w) printf("setup failed: %s\n", err.msg);
    free(buf);
    free(z);
    wts_writer_destroy(&wr);
    return w;
}

int main(void)
{
    err_t err = {0};
    EXPECTF(tinyvit_new(NULL, &err) == NULL && err.code == ERR_INVALID, "NULL weights accepted");

    /* First tensor present with a wrong shape: named in the message. */
    int64_t bad[4] = {32, 3, 5, 5};
    wts_t *w = one_tensor("image_encoder.patch_embed.seq.0.c.weight", 4, bad);
    if (!w) return 1;
    err_clear(&err);
    tinyvit_t *e = tinyvit_new(w, &err);
    EXPECTF(e == NULL, "wrong shape accepted");
    EXPECTF(err.code == ERR_FORMAT, "code %d, want ERR_FORMAT", err.code);
    EXPECTF(strstr(err.msg, "patch_embed.seq.0.c.weight") != NULL, "message '%s'", err.msg);
    printf("wrong shape -> %s\n", err.msg);
    wts_destroy(&w);

    /* Right shape, next tensor missing: that one is named. */
    int64_t good[4] = {32, 3, 3, 3};
    w = one_tensor("image_encoder.patch_embed.seq.0.c.weight", 4, good);
    if (!w) return 1;
    err_clear(&err);
    e = tinyvit_new(w, &err);
    EXPECTF(e == NULL && err.code == ERR_NOTFOUND, "missing bias: code %d", err.code);
    EXPECTF(strstr(err.msg, "patch_embed.seq.0.c.bias") != NULL, "message '%s'", err.msg);
    printf("missing tensor -> %s\n", err.msg);
    wts_destroy(&w);

    /* Forward argument checks. */
    float x = 0, y = 0;
    err_clear(&err);
    EXPECTF(tinyvit_forward(NULL, &x, &y, NULL, &err) == ERR_INVALID, "NULL encoder accepted");
    tinyvit_destroy(&e); /* NULL-safe */
    char buf[64];
    EXPECTF(tinyvit_profile_text(NULL, buf, sizeof buf) == ERR_INVALID, "profile NULL");
    printf("%s\n", expect_failures ? "tinyvit unit: FAILED" : "tinyvit unit: all passed");
    return expect_failures;
}
