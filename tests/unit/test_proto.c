/* test_proto — protobuf round trips of every Envelope body in proto/moda.proto.
 *
 *   test_proto [PROTOC PROTO_DIR OUT_DIR]
 *
 * For every message type reachable from Envelope.body (found by reflection, so new bodies are
 * covered automatically), fills every field with a non-default value (repeated fields with two
 * elements), packs, unpacks, and compares field by field. With the optional arguments it also
 * cross-checks the bytes against Google's C++ protobuf (protoc-c --decode / --encode, an
 * independent implementation): decode our bytes to text, encode the text back, same bytes.
 */
#include <protobuf-c/protobuf-c.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moda.pb-c.h"
#include "msg.h"
#include "t_check.h"

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    default: return 4;
    }
}

static void *fill(const ProtobufCMessageDescriptor *d, unsigned seed, int depth);
static int pb_eq(const ProtobufCMessage *a, const ProtobufCMessage *b);

/* Write a non-default value for field f (element k) at p. */
static void set_elem(void *p, const ProtobufCFieldDescriptor *f, unsigned seed, int depth)
{
    unsigned v = seed * 31u + f->id;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: *(int32_t *)p = -(int32_t)(v % 100000) - 1; break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: *(uint32_t *)p = 3000000000u + v; break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: *(int64_t *)p = 1764406800123456ll + v; break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: *(uint64_t *)p = (1ull << 62) + v; break;
    case PROTOBUF_C_TYPE_FLOAT: *(float *)p = 0.25f + (float)(v % 7) * 0.125f; break;
    case PROTOBUF_C_TYPE_DOUBLE: *(double *)p = -1.0 / 3.0 + v; break;
    case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)p = 1; break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = f->descriptor;
        *(int *)p = e->values[e->n_values - 1 - (v % (e->n_values - 1))].value;
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char buf[96];
        snprintf(buf, sizeof buf, "%s-%u \"q\"\n\xc3\xa9", f->name, v);
        *(char **)p = strdup(buf);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = p;
        b->len = 3;
        b->data = malloc(3);
        memcpy(b->data, "\0\1\2", 3);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: *(void **)p = fill(f->descriptor, v, depth + 1); break;
    }
}

/* A message of type d with every (non-oneof) field set; caller frees with
 * protobuf_c_message_free_unpacked(m, NULL) (everything is malloc'd). */
static void *fill(const ProtobufCMessageDescriptor *d, unsigned seed, int depth)
{
    ProtobufCMessage *m = calloc(1, d->sizeof_message);
    d->message_init(m);
    if (depth > 6) return m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) continue;
        char *base = (char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = 2, sz = elem_size(f);
            char *arr = calloc(n, sz);
            for (size_t k = 0; k < n; k++) set_elem(arr + k * sz, f, seed + 7 * (unsigned)k, depth);
            *(size_t *)(base + f->quantifier_offset) = n;
            *(void **)(base + f->offset) = arr;
        } else {
            set_elem(base + f->offset, f, seed, depth);
        }
    }
    return m;
}

static int elem_eq(const void *a, const void *b, const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: return !strcmp(*(char *const *)a, *(char *const *)b);
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *x = a, *y = b;
        return x->len == y->len && (!x->len || !memcmp(x->data, y->data, x->len));
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *x = *(void *const *)a, *y = *(void *const *)b;
        if (!x || !y) return x == y;
        return pb_eq(x, y);
    }
    case PROTOBUF_C_TYPE_FLOAT: return *(const float *)a == *(const float *)b;
    case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)a == *(const double *)b;
    default: return !memcmp(a, b, elem_size(f));
    }
}

static int pb_eq(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    const ProtobufCMessageDescriptor *d = a->descriptor;
    if (d != b->descriptor) return 0;
    const char *pa = (const char *)a, *pb = (const char *)b;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t ca = *(const uint32_t *)(pa + f->quantifier_offset);
            uint32_t cb = *(const uint32_t *)(pb + f->quantifier_offset);
            if (ca != cb) return 0;
            if (ca != f->id) continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t na = *(const size_t *)(pa + f->quantifier_offset);
            size_t nb = *(const size_t *)(pb + f->quantifier_offset);
            if (na != nb) return 0;
            const char *xa = *(char *const *)(pa + f->offset), *xb = *(char *const *)(pb + f->offset);
            for (size_t k = 0; k < na; k++)
                if (!elem_eq(xa + k * elem_size(f), xb + k * elem_size(f), f)) return 0;
        } else if (!elem_eq(pa + f->offset, pb + f->offset, f)) {
            return 0;
        }
    }
    return 1;
}

/* Count fields (recursively) still at their zero value: fill() must reach all of them. */
static int count_fields(const ProtobufCMessageDescriptor *d, int depth)
{
    int n = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        n++;
        if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE && depth < 6)
            n += count_fields(d->fields[i].descriptor, depth + 1);
    }
    return n;
}

/* All bodies go into one `message All { repeated moda.Envelope e = 1; }` so protoc-c runs
 * twice in total: the concatenation of (tag 0x0a, varint length, envelope) is its encoding. */
typedef struct all {
    uint8_t *buf;
    size_t n, cap;
    char names[4096];
} all_t;

static void all_add(all_t *a, const char *name, const uint8_t *env, size_t n)
{
    if (a->n + n + 16 > a->cap) {
        a->cap = (a->n + n + 16) * 2;
        a->buf = realloc(a->buf, a->cap);
    }
    a->buf[a->n++] = 0x0a;
    size_t v = n;
    do {
        a->buf[a->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    memcpy(a->buf + a->n, env, n);
    a->n += n;
    size_t l = strlen(a->names);
    snprintf(a->names + l, sizeof a->names - l, "%s%s", l ? " " : "", name);
}

static void cross_check(const char *protoc, const char *dir, const char *out, const all_t *a)
{
    char path[512], bin[512], txt[512], bin2[512], cmd[4096];
    snprintf(path, sizeof path, "%s/all.proto", out);
    FILE *f = fopen(path, "w");
    T(f != NULL);
    if (!f) return;
    fputs("syntax = \"proto3\";\nimport \"moda.proto\";\n"
          "message All { repeated moda.Envelope e = 1; }\n", f);
    fclose(f);
    snprintf(bin, sizeof bin, "%s/all.bin", out);
    snprintf(txt, sizeof txt, "%s/all.txt", out);
    snprintf(bin2, sizeof bin2, "%s/all.re.bin", out);
    f = fopen(bin, "wb");
    T(f != NULL);
    if (!f) return;
    fwrite(a->buf, 1, a->n, f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "'%s' --decode=All -I'%s' -I'%s' all.proto <'%s' >'%s' && "
             "'%s' --encode=All -I'%s' -I'%s' all.proto <'%s' >'%s'",
             protoc, out, dir, bin, txt, protoc, out, dir, txt, bin2);
    T(system(cmd) == 0);
    f = fopen(bin2, "rb");
    T(f != NULL);
    if (!f) return;
    uint8_t *b2 = malloc(a->n + 16);
    size_t n2 = fread(b2, 1, a->n + 16, f);
    fclose(f);
    T(n2 == a->n && !memcmp(b2, a->buf, a->n));
    if (n2 != a->n || memcmp(b2, a->buf, a->n))
        fprintf(stderr, "  protoc re-encoding differs (%zu vs %zu bytes)\n", a->n, n2);
    free(b2);
    /* The text decoded by C++ must name every body field. */
    f = fopen(txt, "r");
    static char text[1 << 20];
    size_t tn = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[tn] = '\0';
    char names[4096];
    snprintf(names, sizeof names, "%s", a->names);
    for (char *sp, *tok = strtok_r(names, " ", &sp); tok; tok = strtok_r(NULL, " ", &sp)) {
        char want[128];
        snprintf(want, sizeof want, "  %s {", tok);
        T_HAS(text, want);
    }
    T_HAS(text, "schema_version: 1");
}

int main(int argc, char **argv)
{
    t_watchdog(60);
    const char *protoc = argc > 3 ? argv[1] : NULL;
    const ProtobufCMessageDescriptor *ed = &moda__envelope__descriptor;
    int bodies = 0;
    all_t all = {0};
    for (unsigned i = 0; i < ed->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &ed->fields[i];
        if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) continue;
        T(f->type == PROTOBUF_C_TYPE_MESSAGE);
        bodies++;
        Moda__Envelope *e = calloc(1, sizeof *e);
        moda__envelope__init(e);
        e->header = fill(&moda__header__descriptor, 1, 0);
        e->header->schema_version = MSG_SCHEMA_VERSION;
        *(uint32_t *)((char *)e + f->quantifier_offset) = f->id;
        *(void **)((char *)e + f->offset) = fill(f->descriptor, f->id, 0);
        T(protobuf_c_message_check(&e->base));
        T(!strcmp(msg_body_name((Moda__Envelope__BodyCase)f->id), f->name));

        size_t n = moda__envelope__get_packed_size(e);
        uint8_t *buf = malloc(n);
        T(moda__envelope__pack(e, buf) == n);
        Moda__Envelope *u = moda__envelope__unpack(NULL, n, buf);
        T(u != NULL);
        if (u) {
            T((unsigned)u->body_case == f->id);
            if (!pb_eq(&e->base, &u->base)) {
                fprintf(stderr, "FAIL round trip of %s (%s)\n", f->name,
                        ((const ProtobufCMessageDescriptor *)f->descriptor)->name);
                t_failed++;
            }
            size_t n2 = moda__envelope__get_packed_size(u);
            uint8_t *buf2 = malloc(n2);
            moda__envelope__pack(u, buf2);
            T(n2 == n && !memcmp(buf, buf2, n));
            free(buf2);
            moda__envelope__free_unpacked(u, NULL);
        }
        /* A truncated buffer must be rejected, never crash. */
        for (size_t cut = 1; cut < n; cut += 1 + n / 13) {
            Moda__Envelope *t = moda__envelope__unpack(NULL, n - cut, buf);
            if (t) moda__envelope__free_unpacked(t, NULL);
        }
        all_add(&all, f->name, buf, n);
        free(buf);
        protobuf_c_message_free_unpacked(&e->base, NULL);
    }
    T(bodies >= 32);
    if (protoc) cross_check(protoc, argv[2], argv[3], &all);
    free(all.buf);
    T(count_fields(ed, 0) > 200);

    /* Explicit values of the common flows, so a renumbered field shows up by name. */
    Moda__Frame fr = MODA__FRAME__INIT;
    fr.camera_id = "cam-7";
    fr.seq = 42;
    fr.capture_time_us = 1764406800000000;
    fr.width = 640;
    fr.height = 480;
    fr.format = MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG;
    Moda__Header h = MODA__HEADER__INIT;
    uint64_t sizes[1] = {12345};
    h.schema_version = 1;
    h.n_part_sizes = 1;
    h.part_sizes = sizes;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.header = &h;
    env.body_case = MODA__ENVELOPE__BODY_FRAME;
    env.frame = &fr;
    uint8_t b[256];
    size_t n = moda__envelope__pack(&env, b);
    Moda__Envelope *u = moda__envelope__unpack(NULL, n, b);
    T(u && u->frame && !strcmp(u->frame->camera_id, "cam-7") && u->frame->seq == 42 &&
      u->frame->width == 640 && u->frame->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG &&
      u->header->n_part_sizes == 1 && u->header->part_sizes[0] == 12345);
    if (u) moda__envelope__free_unpacked(u, NULL);
    printf("%d envelope bodies round-tripped%s\n", bodies, protoc ? " and matched protoc" : "");
    return t_done("test_proto");
}
