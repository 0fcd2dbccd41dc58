/* bank.h — adapter bank files: validate, split into content-addressed parts, reassemble.
 *
 * A bank is a file in the safetensors layout (wts.h) described in docs/bank-format.md:
 *   metadata  "moda.kind" = "adapter-bank", "moda.bank_format" = "1",
 *             "moda.base_model" = 64-hex wts_content_hash of the frozen base weights,
 *             "moda.domains" = JSON array of {"name", "created", "metrics": {...}},
 *             any other "moda.*"/"x.*" string keys are kept as they are;
 *   tensors   "domain.<name>.<param path>"  a domain's adapter, and its replay buffer as
 *                                           "domain.<name>.replay.<i>.image|mask";
 *             "selector.<param path>"       selector tokens and keys.
 * Domain names match [a-z0-9_-]{1,64}.
 *
 * Canonical form: tensors sorted by name (strcmp) and stored contiguously in that order,
 * metadata keys sorted, "moda.domains" rewritten compactly (entries sorted by name, keys in
 * the order name, created, metrics; metric keys sorted), header padded with spaces to a
 * multiple of 8 — exactly what wts_writer_to_memory produces for sorted input. The registry
 * stores banks split into parts and returns the canonical form; a canonical file round-trips
 * byte for byte, and bank_canonicalise(x) is what a get returns for any valid x.
 *
 * Parts: one blob per domain (a canonical safetensors file of that domain's tensors with the
 * "domain.<name>." prefix removed, no metadata), one selector blob (the same for
 * "selector."), one metadata blob (canonical JSON object of the metadata). Each part is
 * identified by the lowercase hex sha256 of its bytes, so an unchanged domain has the same
 * hash in every version.
 */
#ifndef MODA_BANK_H
#define MODA_BANK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define BANK_NAME_MAX 64
#define BANK_MAX_DOMAINS 4096
#define BANK_FORMAT "1"
#define BANK_KIND "adapter-bank"

typedef struct bank_part {
    char name[BANK_NAME_MAX + 1];  /* domain name ("" for selector and metadata parts) */
    void *data;                    /* owned by the bank_split_t (or borrowed in bank_join input) */
    size_t size;
    char hash[65];                 /* sha256 hex of data */
    char shape_sig[65];            /* domains: sha256 hex of the adapter's tensor names, dtypes and
                                      shapes (replay excluded); selector: of names and dtypes */
    int n_replay;                  /* domains: replay samples (image+mask pairs) */
} bank_part_t;

typedef struct bank_split {
    char base_model[65];
    bank_part_t meta;              /* canonical metadata JSON */
    bank_part_t selector;          /* canonical selector tensors */
    int n_domains;
    bank_part_t *domains;          /* sorted by name */
    char digest[65];               /* bank_digest() of the parts */
    size_t bank_size;              /* bytes of the canonical bank file */
} bank_split_t;

/* Validates a bank held in memory (borrowed) and splits it into parts (canonicalised and
 * hashed). Checks: safetensors layout (via wts), the four required metadata keys and their
 * values, every tensor under "domain.<listed name>." or "selector.", every listed domain has
 * tensors, replay names "replay.<i>.image|mask" with both halves present, names valid.
 * Caller owns *out (bank_split_clear), also on error. ERR_FORMAT / ERR_INVALID /
 * ERR_VERSION (unknown bank format) / ERR_NOMEM with a message naming the tensor or key. */
int bank_split(const void *buf, size_t len, bank_split_t *out, err_t *err);
void bank_split_clear(bank_split_t *s);

/* Reassembles the canonical bank file from its parts (all borrowed; domains in any order,
 * each part's name set): the metadata part lists the domains, which must be exactly the
 * domain parts given. *out caller owns (free). */
int bank_join(const bank_part_t *meta, const bank_part_t *selector, const bank_part_t *domains,
              int n_domains, void **out, size_t *len, err_t *err);

/* bank_join(bank_split(x)). *out caller owns (free). */
int bank_canonicalise(const void *buf, size_t len, void **out, size_t *outlen, err_t *err);

/* The identity of a bank from its parts' hashes (no tensor bytes hashed): sha256 hex of
 * "moda-bank-v1\n" meta_hash "\n" selector_hash "\n" then "<name> <hash>\n" per domain in
 * name order. Equal digests <=> equal canonical files. `domains` sorted by name. */
void bank_digest(const char *meta_hash, const char *selector_hash, const bank_part_t *domains,
                 int n_domains, char out[65]);

/* A metadata part equal to `meta` (borrowed) with domain `name`'s entry replaced by the one in
 * `from_meta` (added when `meta` has no such domain). *out caller owns (free).
 * ERR_NOTFOUND when from_meta does not list the domain. */
int bank_meta_replace_domain(const void *meta, size_t meta_len, const void *from_meta,
                             size_t from_len, const char *name, void **out, size_t *out_len,
                             err_t *err);
/* Reads "moda.base_model" from a metadata part into out[65]. */
int bank_meta_base_model(const void *meta, size_t meta_len, char out[65], err_t *err);

/* A synthetic bank for tests and benchmarks: `n_domains` domains named d000, d001, ..., each
 * with two F32 adapter tensors of about `domain_bytes` bytes in total filled from a generator
 * seeded by (seed, domain index, gen[domain index] when gen is not NULL), two replay samples,
 * and a small selector. Canonical form. *out caller owns (free). */
int bank_synth(int n_domains, size_t domain_bytes, uint32_t seed, const uint32_t *gen,
               const char *base_model, void **out, size_t *len, err_t *err);

#endif
