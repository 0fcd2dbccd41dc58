/* sha256.h — SHA-256 (FIPS 180-4), streaming and one-shot.
 *
 * Used for content hashes of weight files (wts_content_hash) and for checking downloaded
 * artefacts and bank parts. Portable C (~200 MB/s), with the x86 SHA extensions for whole
 * blocks when the CPU has them (~10x faster).
 */
#ifndef MODA_SHA256_H
#define MODA_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct sha256 {
    uint32_t h[8];
    uint64_t total;     /* bytes hashed so far */
    uint8_t buf[64];
    size_t nbuf;
} sha256_t;

void sha256_init(sha256_t *s);
void sha256_update(sha256_t *s, const void *data, size_t n);
/* Writes the 32-byte digest; s must be re-initialised before reuse. */
void sha256_final(sha256_t *s, uint8_t out[32]);
/* One-shot digest of a buffer. */
void sha256_buf(const void *data, size_t n, uint8_t out[32]);
/* Test hook: non-zero = always use the portable block function (to compare both paths). */
void sha256_force_portable(int on);
/* Lower-case hex of a digest: 64 chars + NUL. */
void sha256_hex(const uint8_t digest[32], char out[65]);

#endif
