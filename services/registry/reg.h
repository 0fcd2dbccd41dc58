/* reg.h — the registry's request handler: one decoded request in, one reply out.
 *
 * Sits between the service loop (main.c: sockets, PUB) and the storage (store.h) and bank
 * files (bank.h). It never touches sockets, so the same code runs in the service, in tests
 * and in the fuzz target (reg_handle_frames takes raw wire frames). Every reply carries a
 * Status; bad input gives an error status and never stops the handler. Alias changes that
 * must be announced on the PUB socket are returned in the reply (reg_reply_t.pub).
 * Single-threaded: one reg_t per thread.
 */
#ifndef MODA_REG_H
#define MODA_REG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "msg.h"
#include "store.h"

#define REG_DEFAULT_BIND "ipc:///tmp/moda-registry.sock"
#define REG_DEFAULT_PUB "ipc:///tmp/moda-registry-pub.sock"
#define REG_CHUNK_BYTES ((size_t)4 << 20)   /* GetVersion whole-bank chunk (default) */
#define REG_MAX_PUB 4

typedef struct reg reg_t;

typedef struct reg_opts {
    const char *data_dir;    /* LMDB environment folder (borrowed) */
    size_t map_size;         /* initial map size (0: store default) */
    int no_sync;             /* tests only */
    size_t max_bank_bytes;   /* largest bank accepted by PutVersion (0: 1 GiB) */
} reg_opts_t;

/* An alias change to publish as BankChanged on topic "bank.<alias>". */
typedef struct reg_pub {
    char alias[STORE_NAME_MAX + 1];
    uint64_t version;
    char base_hash[STORE_HASH_HEX + 1];
} reg_pub_t;

/* A reply under construction: `env` with its body, binary parts, the memory both point
 * into, and the publications. Zero-initialise, then reg_reply_clear after sending. */
typedef struct reg_reply {
    Moda__Envelope env;
    msg_part_t *parts;
    int nparts;
    int n_pub;
    reg_pub_t pub[REG_MAX_PUB];
    void **owned;            /* allocations freed by reg_reply_clear */
    int nowned, capowned;
    unsigned char *bump;     /* current block of small allocations (also in owned) */
    size_t bump_left;
    int status;              /* the ERR_* code the reply reports (0 when OK) */
} reg_reply_t;

/* Opens the store. Caller owns result (reg_destroy). NULL + err on failure. */
reg_t *reg_new(const reg_opts_t *o, err_t *err);
void reg_destroy(reg_t **r);
store_t *reg_store(reg_t *r);

/* Handles one decoded request (env and parts borrowed). Always fills *out with a reply
 * (status in it); returns that reply's ERR_* code (0 = OK) for logging and counters. */
int reg_handle(reg_t *r, const Moda__Envelope *env, const msg_part_t *parts, int nparts,
               reg_reply_t *out);

/* Handles the application frames of one wire message: frames[0] the Envelope protobuf,
 * frames[1..] its binary parts. Checks what msg_recv checks (decodable, schema version,
 * part count and sizes against header.part_sizes) and answers ErrorReply otherwise. */
int reg_handle_frames(reg_t *r, const msg_part_t *frames, int nframes, reg_reply_t *out);

void reg_reply_clear(reg_reply_t *rep);

/* Current BankChanged value of an alias (for the PUB socket's initial announcement).
 * ERR_NOTFOUND when the alias does not exist. */
int reg_alias_value(reg_t *r, const char *alias, reg_pub_t *out, err_t *err);

#endif
