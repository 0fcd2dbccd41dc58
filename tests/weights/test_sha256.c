/* test_sha256.c — sha256 against FIPS 180-4 / NIST vectors and sha256sum (unit). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static int g_fail;

static void check(const char *label, const void *data, size_t n, const char *want)
{
    uint8_t d[32];
    char hex[65];
    sha256_buf(data, n, d);
    sha256_hex(d, hex);
    if (strcmp(hex, want)) {
        fprintf(stderr, "FAIL %s: got %s want %s\n", label, hex, want);
        g_fail++;
    }
}

/* The SHA-extension path (when the CPU has it) against the portable path: every length
 * around the block boundaries, unaligned starts and a few large buffers. */
static void accel_vs_portable(void)
{
    size_t big = 3 << 20;
    unsigned char *d = malloc(big);
    uint32_t x = 1;
    for (size_t i = 0; i < big; i++) {
        x = x * 1664525u + 1013904223u;
        d[i] = (unsigned char)(x >> 24);
    }
    size_t lens[] = {0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 65537, 1 << 20, 3 << 20};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
        for (size_t off = 0; off < 3; off++) {
            size_t n = lens[k] > big - off ? big - off : lens[k];
            uint8_t a[32], b[32];
            sha256_force_portable(0);
            sha256_buf(d + off, n, a);
            sha256_force_portable(1);
            sha256_buf(d + off, n, b);
            sha256_force_portable(0);
            if (memcmp(a, b, 32)) {
                fprintf(stderr, "FAIL accelerated sha256 differs at length %zu offset %zu\n", n, off);
                g_fail++;
            }
        }
    free(d);
}

int main(void)
{
    accel_vs_portable();
    check("empty", "", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check("abc", "abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check("448 bits", m2, strlen(m2), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m3 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                     "klmnopqrlmnopqrsmnopqrstnopqrstu";
    check("896 bits", m3, strlen(m3), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    check("million a", a, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* streaming in odd pieces gives the same digest */
    sha256_t s;
    sha256_init(&s);
    size_t off = 0, step = 1;
    while (off < 1000000) {
        size_t n = step < 1000000 - off ? step : 1000000 - off;
        sha256_update(&s, a + off, n);
        off += n;
        step = step * 7 % 131 + 1;
    }
    uint8_t d[32];
    char hex[65];
    sha256_final(&s, d);
    sha256_hex(d, hex);
    if (strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")) {
        fprintf(stderr, "FAIL streaming: %s\n", hex);
        g_fail++;
    }
    /* lengths at the padding boundaries (values from coreutils sha256sum) */
    check("55a", a, 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    check("56a", a, 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
    check("64a", a, 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
    free(a);
    if (g_fail) return 1;
    printf("test_sha256: ok\n");
    return 0;
}
