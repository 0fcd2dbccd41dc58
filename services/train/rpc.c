/* rpc.c — moda-train's label and registry requests (rpc.h). */
#include "rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bank.h"
#include "rle.h"

enum { RPC_CHUNK = 4 << 20 };

/* The Status of any reply body (its `status` field), NULL when it has none. */
static const Moda__Status *reply_status(const Moda__Envelope *e)
{
    if (!e || e->body_case == MODA__ENVELOPE__BODY__NOT_SET) return NULL;
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&moda__envelope__descriptor, (unsigned)e->body_case);
    if (!fd || fd->type != PROTOBUF_C_TYPE_MESSAGE) return NULL;
    const ProtobufCMessage *body = *(ProtobufCMessage *const *)((const char *)e + fd->offset);
    if (!body) return NULL;
    const ProtobufCFieldDescriptor *sf =
        protobuf_c_message_descriptor_get_field_by_name(body->descriptor, "status");
    if (!sf || sf->type != PROTOBUF_C_TYPE_MESSAGE || sf->descriptor != &moda__status__descriptor)
        return NULL;
    return *(Moda__Status *const *)((const char *)body + sf->offset);
}

static int call(const rpc_t *r, const char *ep, const char *svc, const Moda__Envelope *env,
                const msg_part_t *parts, int nparts, Moda__Envelope__BodyCase want, msg_t **reply,
                err_t *err)
{
    *reply = NULL;
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.sndtimeo_ms = r->timeout_ms;
    so.max_frame_bytes = -1;
    msg_limits_t lim;
    msg_limits_default(&lim);
    lim.max_total_bytes = (size_t)1 << 30;
    void *s = msg_socket_new(r->ctx, ZMQ_REQ, &so, err);
    int rc = s ? msg_connect(s, ep, err) : (err->code ? err->code : ERR_MSG);
    if (!rc) rc = msg_request(s, env, parts, nparts, r->timeout_ms, &lim, reply, err);
    msg_socket_close(&s);
    if (rc) return err_wrap(err, "%s at %s", svc, ep);
    const Moda__Envelope *e = (*reply)->env;
    const Moda__Status *st = reply_status(e);
    if (st && st->code != MODA__STATUS_CODE__STATUS_OK)
        return err_set(err, msg_err_code(st->code), "%s: %s", svc, st->message);
    if (e->body_case != want)
        return err_set(err, ERR_FORMAT, "%s answered with %s, expected %s", svc,
                       msg_body_name(e->body_case), msg_body_name(want));
    return 0;
}

/* ---- label -------------------------------------------------------------------------------- */

int rpc_list_domains(const rpc_t *r, rpc_domain_t **out, int *n, err_t *err)
{
    *out = NULL;
    *n = 0;
    Moda__ListDomainsRequest q = MODA__LIST_DOMAINS_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_DOMAINS_REQUEST;
    env.list_domains_request = &q;
    msg_t *rep = NULL;
    int rc = call(r, r->label, "label", &env, NULL, 0, MODA__ENVELOPE__BODY_LIST_DOMAINS_REPLY, &rep, err);
    if (!rc) {
        const Moda__ListDomainsReply *l = rep->env->list_domains_reply;
        rpc_domain_t *d = calloc(l->n_domains + 1, sizeof *d);
        if (!d) rc = err_set(err, ERR_NOMEM, "out of memory");
        int k = 0;
        for (size_t i = 0; d && i < l->n_domains; i++) {
            const Moda__LabelDomain *x = l->domains[i];
            if (!x->name || strlen(x->name) > 64) continue;
            snprintf(d[k].name, sizeof d[k].name, "%s", x->name);
            d[k].labels = x->labels;
            d[k].last_seq = x->last_seq;
            d[k].holdout = x->holdout;
            k++;
        }
        *out = d;
        *n = k;
    }
    msg_free(&rep);
    return rc;
}

void rpc_samples_free(rpc_sample_t **s, int n)
{
    if (!s || !*s) return;
    for (int i = 0; i < n; i++) {
        free((*s)[i].bytes);
        free((*s)[i].mask);
    }
    free(*s);
    *s = NULL;
}

/* Keeps at most `max` samples of one kind: drops the oldest of that kind. */
static void drop_oldest(rpc_sample_t *s, int *n, int holdout)
{
    for (int i = 0; i < *n; i++) {
        if (s[i].holdout != holdout) continue;
        free(s[i].bytes);
        free(s[i].mask);
        memmove(&s[i], &s[i + 1], sizeof *s * (size_t)(*n - i - 1));
        (*n)--;
        return;
    }
}

int rpc_fetch_labels(const rpc_t *r, const char *domain, int max_train, int max_holdout,
                     rpc_sample_t **out, int *n, uint64_t *last_seq, err_t *err)
{
    *out = NULL;
    *n = 0;
    *last_seq = 0;
    rpc_sample_t *s = NULL;
    int ns = 0, cap = 0, ntr = 0, nho = 0, rc = 0;
    uint64_t cursor = 0;
    for (int more = 1; more && !rc;) {
        Moda__LabelsSinceRequest q = MODA__LABELS_SINCE_REQUEST__INIT;
        q.domain = (char *)domain;
        q.cursor = cursor;
        q.limit = 64;
        q.include_holdout = max_holdout != 0;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_LABELS_SINCE_REQUEST;
        env.labels_since_request = &q;
        msg_t *rep = NULL;
        rc = call(r, r->label, "label", &env, NULL, 0, MODA__ENVELOPE__BODY_LABELS_SINCE_REPLY, &rep, err);
        if (rc) {
            msg_free(&rep);
            break;
        }
        const Moda__LabelsSinceReply *l = rep->env->labels_since_reply;
        if ((int)l->n_samples != rep->nparts)
            rc = err_set(err, ERR_FORMAT, "label: %zu samples but %d image parts", l->n_samples, rep->nparts);
        more = l->more && l->next_cursor > cursor;
        cursor = l->next_cursor;
        if (cursor > *last_seq) *last_seq = cursor;
        for (size_t i = 0; i < l->n_samples && !rc; i++) {
            const Moda__SampleInfo *x = l->samples[i];
            if (x->label_seq > *last_seq) *last_seq = x->label_seq;
            int ho = x->split == MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT;
            int max = ho ? max_holdout : max_train;
            if (max == 0) continue;
            if (!x->mask || !x->mask->counts || x->mask->height < 1 || x->mask->width < 1) {
                rc = err_set(err, ERR_FORMAT, "sample %llu of '%s' has no mask",
                             (unsigned long long)x->sample_id, domain);
                break;
            }
            if (ns == cap) {
                int nc = cap ? 2 * cap : 64;
                rpc_sample_t *g = realloc(s, sizeof *s * (size_t)nc);
                if (!g) {
                    rc = err_set(err, ERR_NOMEM, "out of memory");
                    break;
                }
                s = g;
                cap = nc;
            }
            rpc_sample_t *o = &s[ns];
            memset(o, 0, sizeof *o);
            o->sample_id = x->sample_id;
            o->label_seq = x->label_seq;
            o->holdout = ho;
            o->format = (int)x->format;
            o->h = (int)x->mask->height;
            o->w = (int)x->mask->width;
            rc = rle_decode_string(x->mask->counts, x->mask->height, x->mask->width, &o->mask, err);
            if (rc) {
                err_wrap(err, "sample %llu of '%s': mask", (unsigned long long)x->sample_id, domain);
                break;
            }
            o->nbytes = rep->parts[i].size;
            if (!(o->bytes = malloc(o->nbytes ? o->nbytes : 1))) {
                free(o->mask);
                rc = err_set(err, ERR_NOMEM, "out of memory");
                break;
            }
            memcpy(o->bytes, rep->parts[i].data, o->nbytes);
            ns++;
            if (ho) nho++;
            else ntr++;
            if (max > 0 && (ho ? nho : ntr) > max) {
                drop_oldest(s, &ns, ho);
                if (ho) nho--;
                else ntr--;
            }
        }
        msg_free(&rep);
    }
    if (rc) {
        rpc_samples_free(&s, ns);
        return rc;
    }
    *out = s;
    *n = ns;
    return 0;
}

/* ---- registry ----------------------------------------------------------------------------- */

int rpc_get_alias_bank(const rpc_t *r, const char *alias, uint8_t **buf, size_t *len,
                       uint64_t *version, err_t *err)
{
    *buf = NULL;
    *len = 0;
    *version = 0;
    Moda__GetVersionRequest q = MODA__GET_VERSION_REQUEST__INIT;
    q.alias = (char *)alias;
    q.whole_bank = 1;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_VERSION_REQUEST;
    env.get_version_request = &q;
    msg_t *rep = NULL;
    int rc = call(r, r->registry, "registry", &env, NULL, 0, MODA__ENVELOPE__BODY_GET_VERSION_REPLY, &rep, err);
    if (!rc) {
        size_t total = 0;
        for (int i = 0; i < rep->nparts; i++) total += rep->parts[i].size;
        uint8_t *b = malloc(total ? total : 1);
        if (!b) rc = err_set(err, ERR_NOMEM, "out of memory for a %zu-byte bank", total);
        size_t off = 0;
        for (int i = 0; b && i < rep->nparts; i++) {
            memcpy(b + off, rep->parts[i].data, rep->parts[i].size);
            off += rep->parts[i].size;
        }
        const Moda__GetVersionReply *g = rep->env->get_version_reply;
        if (b) {
            *buf = b;
            *len = total;
            *version = g->info ? g->info->version : 0;
        }
    }
    msg_free(&rep);
    return rc;
}

int rpc_put_bank(const rpc_t *r, const uint8_t *buf, size_t len, const Moda__Metric *const *metrics,
                 int n_metrics, const char *actor, const char *reason, const char *set_alias,
                 uint64_t *version, err_t *err)
{
    *version = 0;
    bank_split_t sp;
    int rc = bank_split(buf, len, &sp, err);
    if (rc) {
        bank_split_clear(&sp);
        return err_wrap(err, "candidate bank");
    }
    Moda__PutVersionRequest q = MODA__PUT_VERSION_REQUEST__INIT;
    q.whole_bank = 1;
    q.bank_digest = sp.digest;
    q.metrics = (Moda__Metric **)metrics;
    q.n_metrics = (size_t)n_metrics;
    q.actor = (char *)actor;
    q.reason = (char *)reason;
    q.set_alias = (char *)(set_alias ? set_alias : "");
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST;
    env.put_version_request = &q;
    int np = (int)((len + RPC_CHUNK - 1) / RPC_CHUNK);
    msg_part_t *parts = calloc((size_t)(np ? np : 1), sizeof *parts);
    if (!parts) rc = err_set(err, ERR_NOMEM, "out of memory");
    for (int i = 0; parts && i < np; i++) {
        parts[i].data = buf + (size_t)i * RPC_CHUNK;
        parts[i].size = len - (size_t)i * RPC_CHUNK < RPC_CHUNK ? len - (size_t)i * RPC_CHUNK : RPC_CHUNK;
    }
    msg_t *rep = NULL;
    if (!rc) rc = call(r, r->registry, "registry", &env, parts, np, MODA__ENVELOPE__BODY_PUT_VERSION_REPLY, &rep, err);
    if (!rc) {
        const Moda__PutVersionReply *p = rep->env->put_version_reply;
        if (!p->info || !p->info->version) rc = err_set(err, ERR_FORMAT, "registry: put reply without a version");
        else *version = p->info->version;
    }
    msg_free(&rep);
    free(parts);
    bank_split_clear(&sp);
    return rc;
}

int rpc_find_version(const rpc_t *r, const char *tag, int limit, uint64_t *version, err_t *err)
{
    *version = 0;
    Moda__ListVersionsRequest q = MODA__LIST_VERSIONS_REQUEST__INIT;
    q.limit = (uint32_t)limit;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_VERSIONS_REQUEST;
    env.list_versions_request = &q;
    msg_t *rep = NULL;
    int rc = call(r, r->registry, "registry", &env, NULL, 0, MODA__ENVELOPE__BODY_LIST_VERSIONS_REPLY, &rep, err);
    if (!rc) {
        const Moda__ListVersionsReply *l = rep->env->list_versions_reply;
        for (size_t i = 0; i < l->n_versions && !*version; i++) {
            const Moda__VersionInfo *v = l->versions[i];
            if (v->reason && strstr(v->reason, tag)) *version = v->version;
        }
    }
    msg_free(&rep);
    return rc;
}
