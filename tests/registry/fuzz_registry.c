/* fuzz_registry.c — fuzz target for the registry's request handler (reg_handle_frames).
 *
 * Input: a whole wire message as frames: byte 0 selects the frame count (1..8); every frame
 * but the last is a u16 little-endian length followed by that many bytes; the last frame is
 * the rest. Frame 0 is the Envelope, the others its binary parts (fuzz_frames_encode writes
 * this format for seeds). The handler runs on a real store in a temporary folder, seeded
 * with two versions and an "active" alias so gets, rollbacks and reverts reach real code.
 * Properties checked on every input: a reply with a body and a status comes back and packs.
 *
 * libFuzzer: configure with CC=clang -DMODA_FUZZ=ON and run build/bin/fuzz_registry CORPUS.
 * Without libFuzzer, fuzz_replay.c drives the same function over seeds, mutations and the
 * committed corpus as an ordinary ctest test.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bank.h"
#include "fuzz_registry.h"
#include "reg.h"

static reg_t *g_reg;
static char g_dir[] = "/tmp/moda-fuzz-registry-XXXXXX";

size_t fuzz_frames_encode(const msg_part_t *frames, int n, unsigned char *out, size_t cap)
{
    size_t o = 0;
    if (n < 1 || n > 8 || cap < 1) return 0;
    out[o++] = (unsigned char)(n - 1);
    for (int i = 0; i < n; i++) {
        size_t len = frames[i].size;
        if (i + 1 < n) {
            if (len > 0xffff || o + 2 > cap) return 0;
            out[o++] = (unsigned char)len;
            out[o++] = (unsigned char)(len >> 8);
        }
        if (o + len > cap) return 0;
        memcpy(out + o, frames[i].data, len);
        o += len;
    }
    return o;
}

const char *fuzz_dir(void) { return g_dir; }

reg_t *fuzz_registry(void)
{
    if (g_reg) return g_reg;
    if (!mkdtemp(g_dir)) return NULL;
    reg_opts_t o = {g_dir, 256 * 1024, 1, 8 << 20};
    err_t err = {0};
    g_reg = reg_new(&o, &err);
    if (!g_reg) {
        fprintf(stderr, "fuzz_registry: %s\n", err.msg);
        return NULL;
    }
    /* two versions and an alias, put through the handler itself */
    for (int v = 0; v < 2; v++) {
        uint32_t gen[2] = {(uint32_t)v, 0};
        void *b;
        size_t n;
        if (bank_synth(2, 2048, 3, gen, FUZZ_BASE, &b, &n, &err)) return NULL;
        Moda__PutVersionRequest q = MODA__PUT_VERSION_REQUEST__INIT;
        q.whole_bank = 1;
        q.set_alias = "active";
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST;
        env.put_version_request = &q;
        msg_part_t part = {b, n};
        reg_reply_t rep;
        reg_handle(g_reg, &env, &part, 1, &rep);
        reg_reply_clear(&rep);
        free(b);
    }
    return g_reg;
}

int fuzz_check_reply(const reg_reply_t *rep)
{
    if (rep->env.body_case == MODA__ENVELOPE__BODY__NOT_SET) return -1;
    size_t n = moda__envelope__get_packed_size(&rep->env);
    unsigned char *buf = malloc(n + 1);
    if (!buf) return -1;
    moda__envelope__pack(&rep->env, buf);
    Moda__Envelope *back = moda__envelope__unpack(NULL, n, buf);
    free(buf);
    if (!back) return -1;
    moda__envelope__free_unpacked(back, NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reg_t *r = fuzz_registry();
    if (!r || size < 1) return 0;
    int n = data[0] % 8 + 1;
    msg_part_t frames[8];
    size_t off = 1;
    int nf = 0;
    for (int i = 0; i < n; i++) {
        size_t len = size - off;
        if (i + 1 < n) {
            if (size - off < 2) break;
            len = (size_t)data[off] | (size_t)data[off + 1] << 8;
            off += 2;
            if (len > size - off) len = size - off;
        }
        frames[nf].data = data + off;
        frames[nf].size = len;
        nf++;
        off += len;
    }
    reg_reply_t rep;
    reg_handle_frames(r, frames, nf, &rep);
    if (fuzz_check_reply(&rep)) abort(); /* a reply must always exist and encode */
    reg_reply_clear(&rep);
    return 0;
}
