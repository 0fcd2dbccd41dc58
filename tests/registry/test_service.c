/* test_service.c — moda-registry as a process, over ZeroMQ.
 *
 * Starts the real binary with a 64 KiB initial map (so every put below grows it) and checks:
 * put/get bit-exact (canonical input, multi-chunk streaming) and canonicalisation of a
 * non-canonical input; dedup (stored bytes grow by exactly the changed parts); the per-part
 * put form; revert-domain against an independently generated expected bank; rollback and
 * history order; a late subscriber learns the current version (GetAlias) and then receives
 * BankChanged; hostile requests (bad protobuf, bad schema, lying part sizes, unknown
 * versions, bad names, wrong base model / shapes / digest, garbage banks) get error replies
 * and the registry keeps serving.
 * Usage: test_service MODA_REGISTRY_BIN WORKDIR
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "bank.h"
#include "msg.h"
#include "sha256.h"
#include "wts.h"
#include "expect.h"

static const char *BASE = "aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55";
static char ep[600], pub_ep[600];
static void *ctx, *req_sock;

static pid_t start(const char *bin, const char *dir)
{
    pid_t p = fork();
    if (p == 0) {
        execl(bin, bin, "--data", dir, "--bind", ep, "--pub", pub_ep, "--map-size-kb", "64", "--no-sync",
              "--log-level", "error", (char *)NULL);
        _exit(127);
    }
    return p;
}

static void reconnect(void)
{
    msg_socket_close(&req_sock);
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.max_frame_bytes = -1;
    req_sock = msg_socket_new(ctx, ZMQ_REQ, &so, NULL);
    msg_connect(req_sock, ep, NULL);
}

/* One request; returns the reply's status code (0 OK), -1 on no reply. *out when not NULL. */
static int call(Moda__Envelope *env, const msg_part_t *parts, int n, msg_t **out)
{
    msg_t *r = NULL;
    err_t err = {0};
    int rc = msg_request(req_sock, env, parts, n, 10000, NULL, &r, &err);
    if (rc || !r || !r->env) {
        fprintf(stderr, "request failed: %s\n", err.msg);
        msg_free(&r);
        reconnect();
        return -1;
    }
    int code = 0;
    const Moda__Envelope *e = r->env;
    switch (e->body_case) {
    case MODA__ENVELOPE__BODY_ERROR: code = e->error->status ? (int)e->error->status->code : 99; break;
    case MODA__ENVELOPE__BODY_PUT_VERSION_REPLY: code = (int)e->put_version_reply->status->code; break;
    case MODA__ENVELOPE__BODY_GET_VERSION_REPLY: code = (int)e->get_version_reply->status->code; break;
    case MODA__ENVELOPE__BODY_LIST_VERSIONS_REPLY: code = (int)e->list_versions_reply->status->code; break;
    case MODA__ENVELOPE__BODY_SET_ALIAS_REPLY: code = (int)e->set_alias_reply->status->code; break;
    case MODA__ENVELOPE__BODY_ROLLBACK_REPLY: code = (int)e->rollback_reply->status->code; break;
    case MODA__ENVELOPE__BODY_REVERT_DOMAIN_REPLY: code = (int)e->revert_domain_reply->status->code; break;
    case MODA__ENVELOPE__BODY_HISTORY_REPLY: code = (int)e->history_reply->status->code; break;
    case MODA__ENVELOPE__BODY_GET_ALIAS_REPLY: code = (int)e->get_alias_reply->status->code; break;
    case MODA__ENVELOPE__BODY_BACKUP_REPLY: code = (int)e->backup_reply->status->code; break;
    case MODA__ENVELOPE__BODY_HEALTH_REPLY: code = e->health_reply->status ? (int)e->health_reply->status->code : 0; break;
    default: code = 98;
    }
    if (out) *out = r;
    else msg_free(&r);
    return code;
}

static int put(const void *bank, size_t len, const char *alias, const char *digest, uint64_t *version)
{
    Moda__PutVersionRequest q = MODA__PUT_VERSION_REQUEST__INIT;
    q.whole_bank = 1;
    q.actor = "test";
    q.reason = "test put";
    if (alias) q.set_alias = (char *)alias;
    if (digest) q.bank_digest = (char *)digest;
    /* two parts when possible: the registry concatenates them */
    msg_part_t parts[2] = {{bank, len / 2}, {(const char *)bank + len / 2, len - len / 2}};
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST;
    env.put_version_request = &q;
    msg_t *r = NULL;
    int code = call(&env, parts, len > 1 ? 2 : 1, &r);
    if (code == 0 && version) *version = r->env->put_version_reply->info->version;
    msg_free(&r);
    return code;
}

static int get_bank(uint64_t version, const char *alias, unsigned chunk, unsigned char **out, size_t *len, int *nparts)
{
    Moda__GetVersionRequest q = MODA__GET_VERSION_REQUEST__INIT;
    q.version = version;
    if (alias) q.alias = (char *)alias;
    q.whole_bank = 1;
    q.chunk_bytes = chunk;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_VERSION_REQUEST;
    env.get_version_request = &q;
    msg_t *r = NULL;
    int code = call(&env, NULL, 0, &r);
    if (code == 0) {
        size_t n = 0;
        for (int i = 0; i < r->nparts; i++) n += r->parts[i].size;
        *out = malloc(n + 1);
        n = 0;
        for (int i = 0; i < r->nparts; i++) {
            memcpy(*out + n, r->parts[i].data, r->parts[i].size);
            n += r->parts[i].size;
        }
        *len = n;
        if (nparts) *nparts = r->nparts;
        if (n != r->env->get_version_reply->bank_size) code = 97;
    }
    msg_free(&r);
    return code;
}

static uint64_t counter(const char *name)
{
    Moda__HealthRequest hq = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &hq;
    msg_t *r = NULL;
    uint64_t v = (uint64_t)-1;
    if (call(&env, NULL, 0, &r) == 0 && r->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY)
        for (size_t i = 0; i < r->env->health_reply->n_counters; i++)
            if (!strcmp(r->env->health_reply->counters[i]->name, name)) v = r->env->health_reply->counters[i]->value;
    msg_free(&r);
    return v;
}

static int set_alias(const char *alias, uint64_t v)
{
    Moda__SetAliasRequest q = MODA__SET_ALIAS_REQUEST__INIT;
    q.alias = (char *)alias;
    q.version = v;
    q.actor = "test";
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_SET_ALIAS_REQUEST;
    env.set_alias_request = &q;
    return call(&env, NULL, 0, NULL);
}

static int rollback(const char *alias, uint64_t to)
{
    Moda__RollbackRequest q = MODA__ROLLBACK_REQUEST__INIT;
    q.alias = (char *)alias;
    q.to_version = to;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_ROLLBACK_REQUEST;
    env.rollback_request = &q;
    return call(&env, NULL, 0, NULL);
}

static int alive(void)
{
    Moda__ListVersionsRequest q = MODA__LIST_VERSIONS_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_VERSIONS_REQUEST;
    env.list_versions_request = &q;
    return call(&env, NULL, 0, NULL) == 0;
}

/* Raw frames on a DEALER (REQ-style empty delimiter first); returns the reply status code,
 * -1 when nothing came back. */
static int raw(const msg_part_t *frames, int n)
{
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, to = 5000;
    zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(d, ZMQ_RCVTIMEO, &to, sizeof to);
    zmq_connect(d, ep);
    zmq_send(d, "", 0, ZMQ_SNDMORE);
    for (int i = 0; i < n; i++) zmq_send(d, frames[i].data, frames[i].size, i + 1 < n ? ZMQ_SNDMORE : 0);
    int code = -1;
    zmq_msg_t m;
    zmq_msg_init(&m);
    int more = 1, idx = 0;
    while (more && zmq_msg_recv(&m, d, 0) >= 0) {
        if (idx == 1) {
            Moda__Envelope *e = moda__envelope__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
            if (e) {
                if (e->body_case == MODA__ENVELOPE__BODY_ERROR && e->error->status) code = (int)e->error->status->code;
                else if (e->body_case == MODA__ENVELOPE__BODY_GET_VERSION_REPLY) code = (int)e->get_version_reply->status->code;
                else if (e->body_case == MODA__ENVELOPE__BODY_SET_ALIAS_REPLY) code = (int)e->set_alias_reply->status->code;
                else if (e->body_case == MODA__ENVELOPE__BODY_PUT_VERSION_REPLY) code = (int)e->put_version_reply->status->code;
                else code = 0;
                moda__envelope__free_unpacked(e, NULL);
            }
        }
        idx++;
        more = zmq_msg_more(&m);
    }
    zmq_msg_close(&m);
    zmq_close(d);
    return code;
}

/* A packed envelope with a header (schema, part sizes) around `body`. */
static size_t pack_env(Moda__Envelope *env, unsigned schema, const uint64_t *sizes, size_t nsizes, unsigned char **out)
{
    Moda__Header h = MODA__HEADER__INIT;
    h.schema_version = schema;
    h.message_id = 1;
    h.sender = "hostile";
    h.part_sizes = (uint64_t *)sizes;
    h.n_part_sizes = nsizes;
    env->header = &h;
    size_t n = moda__envelope__get_packed_size(env);
    *out = malloc(n + 1);
    moda__envelope__pack(env, *out);
    env->header = NULL;
    return n;
}

static void hostile(void)
{
    /* not protobuf */
    msg_part_t f1 = {"\xff\xff\xff\xff garbage", 12};
    EXPECT(raw(&f1, 1) == MODA__STATUS_CODE__STATUS_FORMAT);
    EXPECT(alive());
    /* valid envelope, unknown schema version */
    Moda__GetVersionRequest gq = MODA__GET_VERSION_REQUEST__INIT;
    gq.version = 1;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_VERSION_REQUEST;
    env.get_version_request = &gq;
    unsigned char *b;
    size_t n = pack_env(&env, 99, NULL, 0, &b);
    msg_part_t f2 = {b, n};
    EXPECT(raw(&f2, 1) == MODA__STATUS_CODE__STATUS_VERSION);
    free(b);
    /* header declares a 1 TB part that is not there */
    uint64_t huge = (uint64_t)1 << 40;
    n = pack_env(&env, MSG_SCHEMA_VERSION, &huge, 1, &b);
    f2.data = b;
    f2.size = n;
    EXPECT(raw(&f2, 1) == MODA__STATUS_CODE__STATUS_FORMAT);
    /* header declares 4 bytes, 5 are sent */
    uint64_t four = 4;
    free(b);
    n = pack_env(&env, MSG_SCHEMA_VERSION, &four, 1, &b);
    msg_part_t f3[2] = {{b, n}, {"12345", 5}};
    EXPECT(raw(f3, 2) == MODA__STATUS_CODE__STATUS_FORMAT);
    free(b);
    /* a get with a binary part it does not take */
    uint64_t five = 5;
    n = pack_env(&env, MSG_SCHEMA_VERSION, &five, 1, &b);
    f3[0].data = b;
    f3[0].size = n;
    EXPECT(raw(f3, 2) == MODA__STATUS_CODE__STATUS_INVALID);
    free(b);
    EXPECT(alive());
    /* unknown versions and aliases */
    gq.version = 999999;
    EXPECT(call(&env, NULL, 0, NULL) == MODA__STATUS_CODE__STATUS_NOT_FOUND);
    gq.version = 0;
    gq.alias = "nosuch";
    EXPECT(call(&env, NULL, 0, NULL) == MODA__STATUS_CODE__STATUS_NOT_FOUND);
    gq.alias = "Bad Alias!";
    EXPECT(call(&env, NULL, 0, NULL) == MODA__STATUS_CODE__STATUS_INVALID);
    char longname[80];
    memset(longname, 'a', 70);
    longname[70] = 0;
    EXPECT(set_alias(longname, 1) == MODA__STATUS_CODE__STATUS_INVALID);
    EXPECT(set_alias("", 1) == MODA__STATUS_CODE__STATUS_INVALID);
    EXPECT(set_alias("ok", 0) == MODA__STATUS_CODE__STATUS_INVALID);
    EXPECT(set_alias("ok", 123456) == MODA__STATUS_CODE__STATUS_NOT_FOUND);
    EXPECT(rollback("nosuch", 0) == MODA__STATUS_CODE__STATUS_NOT_FOUND);
    /* banks that must be refused, nothing written */
    uint64_t before = counter("store_versions");
    EXPECT(put("not a bank at all", 17, NULL, NULL, NULL) == MODA__STATUS_CODE__STATUS_FORMAT);
    void *bk;
    size_t bl;
    bank_synth(3, 10000, 1, NULL, "bb55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55", &bk, &bl, NULL);
    EXPECT(put(bk, bl, NULL, NULL, NULL) == MODA__STATUS_CODE__STATUS_VERSION); /* other base model */
    free(bk);
    bank_synth(3, 20000, 1, NULL, BASE, &bk, &bl, NULL); /* other adapter shape */
    EXPECT(put(bk, bl, NULL, NULL, NULL) == MODA__STATUS_CODE__STATUS_INVALID);
    free(bk);
    bank_synth(3, 10000, 1, NULL, BASE, &bk, &bl, NULL);
    EXPECT(put(bk, bl, NULL, "0000000000000000000000000000000000000000000000000000000000000000", NULL) ==
           MODA__STATUS_CODE__STATUS_INVALID); /* digest mismatch */
    EXPECT(put(bk, bl / 2, NULL, NULL, NULL) == MODA__STATUS_CODE__STATUS_FORMAT); /* truncated */
    EXPECT(put(bk, bl, "BAD", NULL, NULL) == MODA__STATUS_CODE__STATUS_INVALID);  /* bad alias */
    free(bk);
    EXPECT(counter("store_versions") == before);
    /* empty body */
    Moda__Envelope e2 = MODA__ENVELOPE__INIT;
    n = pack_env(&e2, MSG_SCHEMA_VERSION, NULL, 0, &b);
    f2.data = b;
    f2.size = n;
    EXPECT(raw(&f2, 1) >= 1);
    free(b);
    /* a reply type sent as a request */
    Moda__BankChanged bc = MODA__BANK_CHANGED__INIT;
    e2.body_case = MODA__ENVELOPE__BODY_BANK_CHANGED;
    e2.bank_changed = &bc;
    EXPECT(call(&e2, NULL, 0, NULL) == MODA__STATUS_CODE__STATUS_UNSUPPORTED);
    EXPECT(alive());
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_service MODA_REGISTRY_BIN WORKDIR\n");
        return 2;
    }
    char cmd[4200], dir[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", argv[2], argv[2]);
    if (system(cmd)) return 1;
    snprintf(dir, sizeof dir, "%s/db", argv[2]);
    snprintf(ep, sizeof ep, "ipc://%s/r.sock", argv[2]);
    snprintf(pub_ep, sizeof pub_ep, "ipc://%s/p.sock", argv[2]);
    msg_set_sender("test_service");
    ctx = zmq_ctx_new();
    pid_t pid = start(argv[1], dir);
    reconnect();
    int up = 0;
    for (int i = 0; i < 50 && !up; i++) {
        up = counter("store_versions") != (uint64_t)-1;
        if (!up) usleep(100000);
    }
    EXPECT(up);

    /* 1) canonical bank: put, get in 4 KiB chunks, bytes identical */
    uint32_t g1[3] = {0, 0, 0}, g2[3] = {1, 1, 1}, g3[3] = {1, 2, 1};
    void *b1, *b2, *b3;
    size_t n1, n2, n3;
    bank_synth(3, 10000, 1, g1, BASE, &b1, &n1, NULL);
    bank_synth(3, 10000, 1, g2, BASE, &b2, &n2, NULL);
    bank_synth(3, 10000, 1, g3, BASE, &b3, &n3, NULL);
    uint64_t v1 = 0, v2 = 0, v3 = 0;
    EXPECT(put(b1, n1, "active", NULL, &v1) == 0 && v1 == 1);
    unsigned char *got;
    size_t gl;
    int np = 0;
    EXPECT(get_bank(v1, NULL, 4096, &got, &gl, &np) == 0);
    EXPECT(gl == n1 && !memcmp(got, b1, n1));
    EXPECT(np == (int)((n1 + 4095) / 4096));
    free(got);

    /* 2) dedup: v2 changes every domain, v3 = v2 with d001 changed -> stored bytes grow by
     * exactly the new d001 part and the new metadata part */
    EXPECT(put(b2, n2, NULL, NULL, &v2) == 0 && v2 == 2);
    uint64_t bytes_before = counter("store_blob_bytes"), blobs_before = counter("store_blobs");
    bank_split_t s2, s3;
    bank_split(b2, n2, &s2, NULL);
    bank_split(b3, n3, &s3, NULL);
    EXPECT(put(b3, n3, NULL, s3.digest, &v3) == 0 && v3 == 3);
    EXPECT(counter("store_blob_bytes") - bytes_before == s3.domains[1].size + s3.meta.size);
    EXPECT(counter("store_blobs") - blobs_before == 2);
    EXPECT(counter("store_map_grows") > 0);
    EXPECT(get_bank(0, "active", 0, &got, &gl, NULL) == 0 && gl == n1 && !memcmp(got, b1, n1));
    free(got);

    /* 3) the per-part put form: only d001 and metadata sent, the rest from the parent */
    {
        Moda__PutVersionRequest q = MODA__PUT_VERSION_REQUEST__INIT;
        q.parent = v2;
        Moda__BlobRef r0 = MODA__BLOB_REF__INIT, r1 = MODA__BLOB_REF__INIT;
        Moda__BlobRef *refs[2] = {&r0, &r1};
        r0.name = "@meta";
        r0.content_hash = s3.meta.hash;
        r0.part = 0;
        r1.name = "d001";
        r1.content_hash = s3.domains[1].hash;
        r1.part = 1;
        q.blobs = refs;
        q.n_blobs = 2;
        char *unchanged[2] = {"d000", "d002"};
        q.unchanged_domains = unchanged;
        q.n_unchanged_domains = 2;
        msg_part_t parts[2] = {{s3.meta.data, s3.meta.size}, {s3.domains[1].data, s3.domains[1].size}};
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST;
        env.put_version_request = &q;
        msg_t *r = NULL;
        EXPECT(call(&env, parts, 2, &r) == 0);
        if (r) EXPECT(!strcmp(r->env->put_version_reply->info->bank_digest, s3.digest));
        msg_free(&r);
        /* a lying content hash is refused */
        r1.content_hash = s3.domains[0].hash;
        EXPECT(call(&env, parts, 2, NULL) == MODA__STATUS_CODE__STATUS_INVALID);
    }
    EXPECT(get_bank(4, NULL, 0, &got, &gl, NULL) == 0 && gl == n3 && !memcmp(got, b3, n3));
    free(got);

    /* 4) non-canonical input: tensors in reverse order -> get returns bank_canonicalise(input) */
    {
        wts_t *w = wts_from_memory(b2, n2, NULL);
        wts_writer_t *wr = wts_writer_new();
        for (int i = wts_count(w) - 1; i >= 0; i--) {
            const wts_tensor_t *t = wts_at(w, i);
            wts_writer_add(wr, t->name, t->dtype, t->ndim, t->shape, t->data, NULL);
        }
        const char *keys[4] = {"moda.kind", "moda.domains", "moda.base_model", "moda.bank_format"};
        for (int i = 0; i < 4; i++) wts_writer_set_meta(wr, keys[i], wts_meta(w, keys[i]), NULL);
        void *nc;
        size_t ncl;
        wts_writer_to_memory(wr, &nc, &ncl, NULL);
        EXPECT(!(ncl == n2 && !memcmp(nc, b2, n2)));  /* really not canonical */
        uint64_t v;
        EXPECT(put(nc, ncl, NULL, NULL, &v) == 0 && v == 5);
        EXPECT(get_bank(v, NULL, 0, &got, &gl, NULL) == 0 && gl == n2 && !memcmp(got, b2, n2));
        free(got);
        free(nc);
        wts_writer_destroy(&wr);
        wts_destroy(&w);
    }

    /* 5) revert-domain: active (v1 = gens 0,0,0) -> promote v3 (1,2,1); revert d001 to v2's
     * adapter: the new bank must equal an independently generated bank with gens (1,1,1) */
    EXPECT(set_alias("active", v3) == 0);
    {
        Moda__RevertDomainRequest q = MODA__REVERT_DOMAIN_REQUEST__INIT;
        q.domain = "d001";
        q.to_version = v2;
        q.set_alias = "active";
        q.actor = "test";
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_REVERT_DOMAIN_REQUEST;
        env.revert_domain_request = &q;
        msg_t *r = NULL;
        EXPECT(call(&env, NULL, 0, &r) == 0);
        uint64_t nv = r ? r->env->revert_domain_reply->info->version : 0;
        EXPECT(nv == 6 && r->env->revert_domain_reply->info->parent == v3);
        msg_free(&r);
        EXPECT(get_bank(0, "active", 0, &got, &gl, NULL) == 0 && gl == n2 && !memcmp(got, b2, n2));
        free(got);
        q.domain = "nosuch";
        EXPECT(call(&env, NULL, 0, NULL) == MODA__STATUS_CODE__STATUS_NOT_FOUND);
        q.domain = "d001";
        q.to_version = 777;
        EXPECT(call(&env, NULL, 0, NULL) == MODA__STATUS_CODE__STATUS_NOT_FOUND);
    }

    /* 6) rollback walks back: active 1 -> 3 -> 6; rollback -> 3, rollback -> 1, then none */
    EXPECT(rollback("active", 0) == 0);
    EXPECT(get_bank(0, "active", 0, &got, &gl, NULL) == 0 && gl == n3 && !memcmp(got, b3, n3));
    free(got);
    EXPECT(rollback("active", 0) == 0);
    EXPECT(rollback("active", 0) == MODA__STATUS_CODE__STATUS_STATE);
    EXPECT(rollback("", v2) == 0);  /* default alias = active, explicit target */

    /* 7) history complete and ordered: put(1), set 3, revert 6, rb 3, rb 1, rb-to 2 */
    {
        Moda__HistoryRequest q = MODA__HISTORY_REQUEST__INIT;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_HISTORY_REQUEST;
        env.history_request = &q;
        msg_t *r = NULL;
        EXPECT(call(&env, NULL, 0, &r) == 0);
        static const uint64_t want_to[6] = {2, 1, 3, 6, 3, 1};
        static const char *want_act[6] = {"rollback", "rollback", "rollback", "revert-domain", "set", "put"};
        const Moda__HistoryReply *h = r ? r->env->history_reply : NULL;
        EXPECT(h && h->n_entries == 6);
        for (size_t i = 0; h && i < h->n_entries && i < 6; i++) {
            EXPECT(h->entries[i]->to == want_to[i]);
            EXPECT(!strcmp(h->entries[i]->action, want_act[i]));
            EXPECT(h->entries[i]->seq == 6 - i);
            if (i + 1 < h->n_entries) EXPECT(h->entries[i]->from == h->entries[i + 1]->to);
        }
        msg_free(&r);
    }

    /* 8) a late subscriber: learns the current value on request, then gets the next change */
    {
        void *sub = zmq_socket(ctx, ZMQ_SUB);
        int to = 3000, linger = 0;
        zmq_setsockopt(sub, ZMQ_RCVTIMEO, &to, sizeof to);
        zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "bank.active", 11);
        zmq_connect(sub, pub_ep);
        Moda__GetAliasRequest q = MODA__GET_ALIAS_REQUEST__INIT;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_GET_ALIAS_REQUEST;
        env.get_alias_request = &q;
        msg_t *r = NULL;
        EXPECT(call(&env, NULL, 0, &r) == 0);
        EXPECT(r && r->env->get_alias_reply->current && r->env->get_alias_reply->current->version == v2 &&
               !strcmp(r->env->get_alias_reply->current->base_hash, BASE));
        msg_free(&r);
        usleep(300000); /* the subscription reaches the publisher */
        EXPECT(set_alias("active", v3) == 0);
        msg_t *m = NULL;
        err_t err = {0};
        int rc = msg_recv(sub, 1, NULL, 0, &m, &err);
        EXPECT(rc == 0 && m && m->env->body_case == MODA__ENVELOPE__BODY_BANK_CHANGED);
        if (rc == 0 && m) {
            EXPECT(m->env->bank_changed->version == v3 && !strcmp(m->env->bank_changed->alias, "active"));
            EXPECT(m->route.id_len == 11 && !memcmp(m->route.id, "bank.active", 11));
        }
        msg_free(&m);
        zmq_close(sub);
    }

    hostile();

    /* 9) backup while serving, then a second registry on the copy holds the same versions */
    {
        char bdir[4300];
        snprintf(bdir, sizeof bdir, "%s/backup", argv[2]);
        Moda__BackupRequest q = MODA__BACKUP_REQUEST__INIT;
        q.dir = bdir;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_BACKUP_REQUEST;
        env.backup_request = &q;
        msg_t *r = NULL;
        EXPECT(call(&env, NULL, 0, &r) == 0 && r && r->env->backup_reply->bytes > 0);
        msg_free(&r);
        EXPECT(call(&env, NULL, 0, NULL) == MODA__STATUS_CODE__STATUS_EXISTS); /* never overwrites */
        uint64_t nver = counter("store_versions");
        char saved_ep[600], saved_pub[600];
        snprintf(saved_ep, sizeof saved_ep, "%s", ep);
        snprintf(saved_pub, sizeof saved_pub, "%s", pub_ep);
        snprintf(ep, sizeof ep, "ipc://%s/r2.sock", argv[2]);
        snprintf(pub_ep, sizeof pub_ep, "ipc://%s/p2.sock", argv[2]);
        pid_t p2 = start(argv[1], bdir);
        reconnect();
        int up2 = 0;
        for (int i = 0; i < 50 && !up2; i++) {
            up2 = counter("store_versions") == nver;
            if (!up2) usleep(100000);
        }
        EXPECT(up2);
        EXPECT(get_bank(v3, NULL, 0, &got, &gl, NULL) == 0 && gl == n3 && !memcmp(got, b3, n3));
        free(got);
        kill(p2, SIGTERM);
        waitpid(p2, NULL, 0);
        snprintf(ep, sizeof ep, "%s", saved_ep);
        snprintf(pub_ep, sizeof pub_ep, "%s", saved_pub);
        reconnect();
        EXPECT(alive());
    }

    bank_split_clear(&s2);
    bank_split_clear(&s3);
    free(b1);
    free(b2);
    free(b3);
    msg_socket_close(&req_sock);
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    zmq_ctx_term(ctx);
    if (expect_failures) {
        fprintf(stderr, "test_service: %d failures\n", expect_failures);
        return 1;
    }
    printf("test_service: all checks passed\n");
    return 0;
}
