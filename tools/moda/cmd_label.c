/* moda label — talk to moda-label: import labeled folders and COCO files, export COCO, list the
 * queue and the domains (docs/label.md).
 *
 *   moda label import DIR [--domain D]          DIR = <domain>/{images,masks,split.txt}
 *   moda label import --coco FILE [--images DIR] [--domain D]
 *   moda label export --coco FILE [--images DIR]
 *   moda label queue [--domain D] [--limit N] [--offset N] [--json]
 *   moda label domains [--json]
 *   moda label get ID [--out FILE] | submit ID --mask PNG --domain D | reject ID [--reason R]
 * Common: --endpoint (moda-label's --bind), --timeout-ms, --actor, --json.
 * COCO files carry compressed RLE masks ({"size":[h,w],"counts":"..."}) and the extra fields
 * domain/split/camera_id/seq/...; export → import → export reproduces the file byte for byte.
 * Exit 0 ok, 1 failure (the service's message is printed), 2 bad arguments.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "client.h"
#include "cmds.h"
#include "image.h"
#include "json.h"
#include "msg.h"
#include "rle.h"
#include "sha256.h"

#define DEFAULT_ENDPOINT "ipc:///tmp/moda-label.sock"
#define PAGE 64

static const cfg_key_t keys[] = {
    {"endpoint", CFG_ENDPOINT, DEFAULT_ENDPOINT, 0, 0, "moda-label request endpoint (its --bind)"},
    {"timeout_ms", CFG_INT, "30000", 1, 3600000, "give up waiting for a reply after this long"},
    {"json", CFG_BOOL, "false", 0, 0, "machine-readable output"},
    {"coco", CFG_STRING, "", 0, 4000, "import/export: the COCO JSON file"},
    {"images", CFG_STRING, "", 0, 4000, "COCO image root (default: images/ beside the JSON file)"},
    {"domain", CFG_STRING, "", 0, 64, "import: domain name (default: folder name / the file's fields); queue: filter"},
    {"actor", CFG_STRING, "", 0, 512, "who (default $USER)"},
    {"limit", CFG_INT, "50", 1, 1000, "queue: items per page"},
    {"offset", CFG_INT, "0", 0, 1e9, "queue: skip this many items"},
    {"out", CFG_STRING, "", 0, 4000, "get: write the sample's image to this file"},
    {"mask", CFG_STRING, "", 0, 4000, "submit: the mask PNG (nonzero = foreground, the sample's size)"},
    {"reason", CFG_STRING, "", 0, 512, "reject: why"},
    CFG_END,
};

typedef struct cli {
    cfg_t *cfg;
    client_t cl;
    int json;
    char actor[128];
} cli_t;

/* ---- plumbing ---------------------------------------------------------------------------- */

/* mkdir -p of the folder part of `path`. */
static int mkdirs_for(const char *path, err_t *err)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST) return err_errno(err, ERR_IO, errno, "creating %s", tmp);
        *p = '/';
    }
    return 0;
}

static Moda__PixelFormat sniff(const unsigned char *b, size_t n)
{
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return MODA__PIXEL_FORMAT__PIXEL_FORMAT_PNG;
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG;
    return MODA__PIXEL_FORMAT__PIXEL_FORMAT_UNSPECIFIED;
}

/* Stable 63-bit sequence number for an imported file (dedup key with its camera id). */
static uint64_t name_seq(const char *s)
{
    uint8_t d[32];
    sha256_buf(s, strlen(s), d);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | d[i];
    return v >> 1;
}

static const char *split_name(Moda__SampleSplit s)
{
    return s == MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_TRAIN ? "train" : s == MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT ? "holdout" : "";
}

static Moda__SampleSplit split_parse(const char *s)
{
    if (!s) return MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_UNSPECIFIED;
    if (!strcmp(s, "train")) return MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_TRAIN;
    if (!strcmp(s, "holdout") || !strcmp(s, "test") || !strcmp(s, "val")) return MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT;
    return MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_UNSPECIFIED;
}

/* A path below an image root: relative, no "..", no empty or odd components. */
static int safe_rel(const char *p)
{
    if (!p || !*p || *p == '/' || strlen(p) > 1000) return 0;
    if (!strcmp(p, "..") || !strncmp(p, "../", 3) || strstr(p, "/../") ||
        (strlen(p) >= 3 && !strcmp(p + strlen(p) - 3, "/..")) || strstr(p, "//"))
        return 0;
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c < 32) return 0;
    return 1;
}

/* ---- import ------------------------------------------------------------------------------- */

typedef struct import_stats {
    int stored, dup, failed;
    uint64_t bytes;
} import_stats_t;

static int send_import(cli_t *c, Moda__SampleInfo *si, const unsigned char *img, size_t len, import_stats_t *st,
                       err_t *err)
{
    Moda__ImportSampleRequest q = MODA__IMPORT_SAMPLE_REQUEST__INIT;
    q.sample = si;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_IMPORT_SAMPLE_REQUEST;
    env.import_sample_request = &q;
    msg_part_t part = {img, len};
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, &part, 1, MODA__ENVELOPE__BODY_IMPORT_SAMPLE_REPLY, &rep, err);
    if (!rc) {
        if (rep->env->import_sample_reply->duplicate) st->dup++;
        else st->stored++;
        st->bytes += len;
    }
    msg_free(&rep);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* `moda label import DIR`: images/<id>.{png,jpg}, masks/<id>.png (0/255), split.txt. */
static int import_dir(cli_t *c, const char *dir, import_stats_t *st, err_t *err)
{
    char root[PATH_MAX], domain[80], path[PATH_MAX];
    snprintf(root, sizeof root, "%s", dir);
    while (strlen(root) > 1 && root[strlen(root) - 1] == '/') root[strlen(root) - 1] = 0;
    const char *base = strrchr(root, '/') ? strrchr(root, '/') + 1 : root;
    snprintf(domain, sizeof domain, "%s", *cfg_str(c->cfg, "domain") ? cfg_str(c->cfg, "domain") : base);
    snprintf(path, sizeof path, "%s/images", root);
    DIR *d = opendir(path);
    if (!d) return err_errno(err, ERR_IO, errno, "opening %s", path);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *dot = strrchr(e->d_name, '.');
        if (!dot || (strcmp(dot, ".png") && strcmp(dot, ".jpg") && strcmp(dot, ".jpeg"))) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) break;
            names = nn;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    /* split.txt: "<id> train|test" (optional) */
    unsigned char *split = NULL;
    size_t split_len = 0;
    snprintf(path, sizeof path, "%s/split.txt", root);
    if (client_read_file(path, &split, &split_len, NULL)) split = NULL;
    else {
        unsigned char *t = realloc(split, split_len + 1);
        if (t) (split = t)[split_len] = 0;
    }
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        char id[NAME_MAX + 1], rel[PATH_MAX];
        snprintf(id, sizeof id, "%s", names[i]);
        *strrchr(id, '.') = 0;
        unsigned char *img = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/images/%s", root, names[i]);
        if ((rc = client_read_file(path, &img, &len, err))) break;
        snprintf(path, sizeof path, "%s/masks/%s.png", root, id);
        image_t *m = image_load(path, err);
        if (!m) {
            free(img);
            rc = err->code;
            break;
        }
        uint8_t *bin = malloc((size_t)m->w * m->h);
        char *counts = NULL;
        if (!bin) rc = err_set(err, ERR_NOMEM, "out of memory");
        for (size_t p = 0; !rc && p < (size_t)m->w * m->h; p++) bin[p] = m->data[p * (size_t)m->c] != 0;
        if (!rc) rc = rle_encode_string(bin, (uint32_t)m->h, (uint32_t)m->w, &counts, err);
        free(bin);
        Moda__SampleSplit sp = MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_UNSPECIFIED;
        if (split) {
            char *line = (char *)split;
            size_t idl = strlen(id);
            while (line && *line) {
                if (!strncmp(line, id, idl) && line[idl] == ' ') {
                    sp = !strncmp(line + idl + 1, "test", 4) ? MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_HOLDOUT
                         : !strncmp(line + idl + 1, "train", 5) ? MODA__SAMPLE_SPLIT__SAMPLE_SPLIT_TRAIN
                                                                : sp;
                    break;
                }
                line = strchr(line, '\n');
                if (line) line++;
            }
        }
        char camera[128];
        snprintf(camera, sizeof camera, "import:%s", domain);
        snprintf(rel, sizeof rel, "%s/%s", domain, names[i]);
        Moda__RleMask rm = MODA__RLE_MASK__INIT;
        Moda__SampleInfo si = MODA__SAMPLE_INFO__INIT;
        if (!rc) {
            rm.height = (uint32_t)m->h;
            rm.width = (uint32_t)m->w;
            rm.counts = counts;
            si.camera_id = camera;
            si.seq = name_seq(rel);
            si.width = rm.width;
            si.height = rm.height;
            si.format = sniff(img, len);
            si.domain = domain;
            si.source = "dir_import";
            si.split = sp;
            si.mask = &rm;
            si.actor = c->actor;
            si.file_name = rel;
            rc = send_import(c, &si, img, len, st, err);
            if (rc) err_wrap(err, "%s", names[i]);
        }
        free(counts);
        free(img);
        image_destroy(&m);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(split);
    return rc;
}

/* The mask of one image: the union of its annotations (compressed or uncompressed RLE). */
static int ann_mask(const json_t *seg, uint32_t h, uint32_t w, uint8_t *acc, int64_t ann_id, err_t *err)
{
    if (!seg || seg->type != JSON_OBJECT)
        return err_set(err, ERR_UNSUPPORTED, "annotation %lld: segmentation is not RLE (polygons are not supported)",
                       (long long)ann_id);
    const json_t *size = json_get(seg, "size"), *cnt = json_get(seg, "counts");
    int64_t sh = 0, sw = 0;
    if (json_len(size) != 2 || json_get_int64(json_at(size, 0), &sh, "size[0]", err) ||
        json_get_int64(json_at(size, 1), &sw, "size[1]", err))
        return err_set(err, ERR_FORMAT, "annotation %lld: bad segmentation.size", (long long)ann_id);
    if (sh != h || sw != w)
        return err_set(err, ERR_INVALID, "annotation %lld: mask %lldx%lld (h x w) on an image %ux%u", (long long)ann_id,
                       (long long)sh, (long long)sw, h, w);
    rle_t r = {0};
    int rc;
    if (cnt && cnt->type == JSON_STRING) rc = rle_from_string(cnt->str, cnt->len, h, w, &r, err);
    else if (cnt && cnt->type == JSON_ARRAY) {
        r.h = h;
        r.w = w;
        r.n = json_len(cnt);
        r.cnts = calloc(r.n ? r.n : 1, sizeof *r.cnts);
        rc = r.cnts ? 0 : err_set(err, ERR_NOMEM, "out of memory");
        for (size_t i = 0; !rc && i < r.n; i++) {
            int64_t v;
            if ((rc = json_get_int64(json_at(cnt, i), &v, "counts[i]", err))) break;
            if (v < 0 || v > UINT32_MAX) rc = err_set(err, ERR_FORMAT, "counts[%zu] = %lld", i, (long long)v);
            else r.cnts[i] = (uint32_t)v;
        }
    } else rc = err_set(err, ERR_FORMAT, "segmentation.counts is neither a string nor a list");
    uint8_t *m = rc ? NULL : malloc((size_t)h * w);
    if (!rc && !m) rc = err_set(err, ERR_NOMEM, "out of memory");
    if (!rc) rc = rle_decode(&r, m, 1, err);
    for (size_t i = 0; !rc && i < (size_t)h * w; i++) acc[i] |= m[i];
    free(m);
    rle_free(&r);
    if (rc) err_wrap(err, "annotation %lld", (long long)ann_id);
    return rc;
}

static const char *jstr(const json_t *o, const char *k) { return json_str(json_get(o, k)); }

static int64_t jint(const json_t *o, const char *k, int64_t def)
{
    const json_t *v = json_get(o, k);
    return v && v->type == JSON_NUMBER && v->is_int ? v->i : def;
}

static int import_coco(cli_t *c, const char *file, import_stats_t *st, int *skipped, err_t *err)
{
    unsigned char *text = NULL;
    size_t len = 0;
    int rc = client_read_file(file, &text, &len, err);
    if (rc) return rc;
    json_t *doc = json_parse((const char *)text, len, err);
    free(text);
    if (!doc) return err_wrap(err, "%s", file);
    char root[PATH_MAX];
    if (*cfg_str(c->cfg, "images")) snprintf(root, sizeof root, "%s", cfg_str(c->cfg, "images"));
    else {
        const char *sl = strrchr(file, '/');
        snprintf(root, sizeof root, "%.*s%simages", sl ? (int)(sl - file) : 0, file, sl ? "/" : "");
    }
    const json_t *images = json_get(doc, "images"), *anns = json_get(doc, "annotations");
    if (!images || images->type != JSON_ARRAY || !anns || anns->type != JSON_ARRAY) {
        json_free(&doc);
        return err_set(err, ERR_FORMAT, "%s: needs \"images\" and \"annotations\" arrays", file);
    }
    for (size_t i = 0; !rc && i < json_len(images); i++) {
        const json_t *im = json_at(images, i);
        int64_t id = jint(im, "id", -1), w = jint(im, "width", 0), h = jint(im, "height", 0);
        const char *fn = jstr(im, "file_name");
        if (id < 0 || w < 1 || h < 1 || w > RLE_MAX_SIDE || h > RLE_MAX_SIDE || !safe_rel(fn)) {
            rc = err_set(err, ERR_FORMAT, "%s: images[%zu]: needs id, width, height and a relative file_name", file, i);
            break;
        }
        uint8_t *acc = calloc((size_t)w * (size_t)h, 1);
        if (!acc) {
            rc = err_set(err, ERR_NOMEM, "out of memory for image %lld", (long long)id);
            break;
        }
        const json_t *first = NULL;
        for (size_t a = 0; !rc && a < json_len(anns); a++) {
            const json_t *an = json_at(anns, a);
            if (jint(an, "image_id", -2) != id) continue;
            if (!first) first = an;
            rc = ann_mask(json_get(an, "segmentation"), (uint32_t)h, (uint32_t)w, acc, jint(an, "id", -1), err);
        }
        if (rc || !first) {
            if (!rc) (*skipped)++;
            free(acc);
            continue;
        }
        const char *domain = jstr(first, "domain") ? jstr(first, "domain") : jstr(im, "domain");
        if (*cfg_str(c->cfg, "domain")) domain = cfg_str(c->cfg, "domain");
        char *counts = NULL, path[PATH_MAX], camera[128];
        unsigned char *img = NULL;
        size_t ilen = 0;
        if (!domain) rc = err_set(err, ERR_INVALID, "image %lld (%s): no domain (give --domain)", (long long)id, fn);
        if (!rc) rc = rle_encode_string(acc, (uint32_t)h, (uint32_t)w, &counts, err);
        free(acc);
        snprintf(path, sizeof path, "%s/%s", root, fn);
        if (!rc) rc = client_read_file(path, &img, &ilen, err);
        if (!rc) {
            Moda__RleMask rm = MODA__RLE_MASK__INIT;
            Moda__SampleInfo si = MODA__SAMPLE_INFO__INIT;
            rm.height = (uint32_t)h;
            rm.width = (uint32_t)w;
            rm.counts = counts;
            snprintf(camera, sizeof camera, "coco:%s", domain);
            si.camera_id = jstr(im, "camera_id") ? (char *)jstr(im, "camera_id") : camera;
            si.seq = json_get(im, "seq") ? (uint64_t)jint(im, "seq", 0) : name_seq(fn);
            si.capture_time_us = jint(im, "capture_time_us", 0);
            si.width = (uint32_t)w;
            si.height = (uint32_t)h;
            si.format = sniff(img, ilen);
            si.domain = (char *)domain;
            si.source = jstr(im, "source") ? (char *)jstr(im, "source") : "coco_import";
            si.split = split_parse(jstr(first, "split") ? jstr(first, "split") : jstr(im, "split"));
            si.mask = &rm;
            si.actor = jstr(first, "author") ? (char *)jstr(first, "author") : c->actor;
            si.labeled_time_us = jint(first, "labeled_time_us", 0);
            si.file_name = (char *)fn;
            rc = send_import(c, &si, img, ilen, st, err);
            if (rc) err_wrap(err, "%s", fn);
        }
        free(img);
        free(counts);
    }
    json_free(&doc);
    return rc;
}

/* ---- export ------------------------------------------------------------------------------- */

static const char *fmt_ext(Moda__PixelFormat f)
{
    return f == MODA__PIXEL_FORMAT__PIXEL_FORMAT_JPEG ? "jpg" : "png";
}

/* Writes the image of `s` below root; raw pixels become PNG. Sets the exported file name. */
static int export_image(const Moda__SampleInfo *s, const msg_part_t *part, const char *root, char *rel, size_t reln,
                        err_t *err)
{
    int raw = s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8 || s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    if (s->file_name && *s->file_name && safe_rel(s->file_name) && !raw) snprintf(rel, reln, "%s", s->file_name);
    else {
        char cam[128];
        size_t k = 0;
        for (const char *p = s->camera_id; *p && k < sizeof cam - 1; p++)
            cam[k++] = (*p == '/' || *p == '.' || (unsigned char)*p < 32) ? '_' : *p;
        cam[k] = 0;
        snprintf(rel, reln, "%s/%llu.%s", k ? cam : "_", (unsigned long long)s->seq, fmt_ext(s->format));
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    int rc = mkdirs_for(path, err);
    if (rc) return rc;
    if (!raw) return client_write_file(path, part->data, part->size, err);
    int ch = s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8 ? 3 : 1;
    image_t *im = image_new((int)s->width, (int)s->height, ch, err);
    if (!im) return err->code;
    if (part->size == (size_t)s->width * s->height * (size_t)ch) memcpy(im->data, part->data, part->size);
    rc = image_save_png(im, path, err);
    image_destroy(&im);
    return rc;
}

static int export_coco(cli_t *c, const char *file, int *count, err_t *err)
{
    char root[PATH_MAX];
    if (*cfg_str(c->cfg, "images")) snprintf(root, sizeof root, "%s", cfg_str(c->cfg, "images"));
    else {
        const char *sl = strrchr(file, '/');
        snprintf(root, sizeof root, "%.*s%simages", sl ? (int)(sl - file) : 0, file, sl ? "/" : "");
    }
    Moda__ListDomainsRequest ld = MODA__LIST_DOMAINS_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_DOMAINS_REQUEST;
    env.list_domains_request = &ld;
    msg_t *drep = NULL;
    int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_LIST_DOMAINS_REPLY, &drep, err);
    json_writer_t wi, wa; /* images and annotations, joined at the end */
    json_w_init(&wi);
    json_w_init(&wa);
    json_w_begin_arr(&wi);
    json_w_begin_arr(&wa);
    int64_t next_id = 1;
    const Moda__ListDomainsReply *dr = rc ? NULL : drep->env->list_domains_reply;
    for (size_t di = 0; !rc && di < dr->n_domains; di++) {
        uint64_t cursor = 0;
        int more = 1;
        while (!rc && more) {
            Moda__LabelsSinceRequest q = MODA__LABELS_SINCE_REQUEST__INIT;
            q.domain = dr->domains[di]->name;
            q.cursor = cursor;
            q.limit = PAGE;
            q.include_holdout = 1;
            Moda__Envelope e2 = MODA__ENVELOPE__INIT;
            e2.body_case = MODA__ENVELOPE__BODY_LABELS_SINCE_REQUEST;
            e2.labels_since_request = &q;
            msg_t *rep = NULL;
            rc = client_call(&c->cl, &e2, NULL, 0, MODA__ENVELOPE__BODY_LABELS_SINCE_REPLY, &rep, err);
            const Moda__LabelsSinceReply *r = rc ? NULL : rep->env->labels_since_reply;
            if (r && (int)r->n_samples != rep->nparts)
                rc = err_set(err, ERR_FORMAT, "labels reply with %zu samples and %d images", r->n_samples, rep->nparts);
            for (size_t i = 0; !rc && i < r->n_samples; i++) {
                const Moda__SampleInfo *s = r->samples[i];
                char rel[PATH_MAX];
                if (!s->mask || !s->mask->counts) continue;
                if ((rc = export_image(s, &rep->parts[i], root, rel, sizeof rel, err))) break;
                rle_t rl;
                if ((rc = rle_from_string(s->mask->counts, strlen(s->mask->counts), s->height, s->width, &rl, err)))
                    break;
                uint32_t bb[4];
                rle_bbox(&rl, bb);
                uint64_t area = rle_area(&rl);
                rle_free(&rl);
                int raw = s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8 ||
                          s->format == MODA__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
                json_w_begin_obj(&wi);
                json_w_key(&wi, "id"), json_w_int(&wi, next_id);
                json_w_key(&wi, "file_name"), json_w_string(&wi, rel);
                json_w_key(&wi, "width"), json_w_int(&wi, s->width);
                json_w_key(&wi, "height"), json_w_int(&wi, s->height);
                json_w_key(&wi, "domain"), json_w_string(&wi, s->domain);
                json_w_key(&wi, "split"), json_w_string(&wi, split_name(s->split));
                json_w_key(&wi, "camera_id"), json_w_string(&wi, s->camera_id);
                json_w_key(&wi, "seq"), json_w_int(&wi, (int64_t)s->seq);
                json_w_key(&wi, "capture_time_us"), json_w_int(&wi, s->capture_time_us);
                json_w_key(&wi, "source"), json_w_string(&wi, s->source);
                json_w_key(&wi, "format"), json_w_string(&wi, raw ? "png" : fmt_ext(s->format));
                json_w_end_obj(&wi);
                json_w_begin_obj(&wa);
                json_w_key(&wa, "id"), json_w_int(&wa, next_id);
                json_w_key(&wa, "image_id"), json_w_int(&wa, next_id);
                json_w_key(&wa, "category_id"), json_w_int(&wa, 1);
                json_w_key(&wa, "segmentation");
                json_w_begin_obj(&wa);
                json_w_key(&wa, "size");
                json_w_begin_arr(&wa);
                json_w_int(&wa, s->height);
                json_w_int(&wa, s->width);
                json_w_end_arr(&wa);
                json_w_key(&wa, "counts"), json_w_string(&wa, s->mask->counts);
                json_w_end_obj(&wa);
                json_w_key(&wa, "area"), json_w_int(&wa, (int64_t)area);
                json_w_key(&wa, "bbox");
                json_w_begin_arr(&wa);
                for (int k = 0; k < 4; k++) json_w_int(&wa, bb[k]);
                json_w_end_arr(&wa);
                json_w_key(&wa, "iscrowd"), json_w_int(&wa, 0);
                json_w_key(&wa, "domain"), json_w_string(&wa, s->domain);
                json_w_key(&wa, "split"), json_w_string(&wa, split_name(s->split));
                json_w_key(&wa, "author"), json_w_string(&wa, s->actor);
                json_w_key(&wa, "labeled_time_us"), json_w_int(&wa, s->labeled_time_us);
                json_w_end_obj(&wa);
                next_id++;
            }
            if (!rc) {
                more = r->more;
                if (r->next_cursor <= cursor && more) rc = err_set(err, ERR_STATE, "labels cursor did not advance");
                cursor = r->next_cursor;
            }
            msg_free(&rep);
        }
    }
    msg_free(&drep);
    json_w_end_arr(&wi);
    json_w_end_arr(&wa);
    size_t li = 0, la = 0;
    char *si = json_w_finish(&wi, &li, rc ? NULL : err), *sa = json_w_finish(&wa, &la, rc ? NULL : err);
    if (!rc && (!si || !sa)) rc = err->code ? err->code : ERR_NOMEM;
    if (!rc) {
        const char *head = "{\"info\":{\"description\":\"moda label export\",\"format\":\"moda-label-coco-1\"},"
                           "\"licenses\":[],\"categories\":[{\"id\":1,\"name\":\"foreground\",\"supercategory\":\"\"}],"
                           "\"images\":";
        size_t hl = strlen(head), n = hl + li + 16 + la + 3;
        char *doc = malloc(n);
        if (!doc) rc = err_set(err, ERR_NOMEM, "out of memory");
        else {
            int k = snprintf(doc, n, "%s%s,\"annotations\":%s}\n", head, si, sa);
            rc = mkdirs_for(file, err);
            if (!rc) rc = client_write_file(file, doc, (size_t)k, err);
            free(doc);
        }
    }
    free(si);
    free(sa);
    *count = (int)(next_id - 1);
    return rc;
}

/* ---- queue / domains --------------------------------------------------------------------- */

static const char *reason_name(Moda__HardCaseReason r)
{
    return r == MODA__HARD_CASE_REASON__HARD_CASE_REASON_UNKNOWN_DOMAIN ? "unknown_domain"
           : r == MODA__HARD_CASE_REASON__HARD_CASE_REASON_UNSURE_MASK  ? "unsure_mask"
                                                                        : "-";
}

static int do_queue(cli_t *c, err_t *err)
{
    Moda__ListQueueRequest q = MODA__LIST_QUEUE_REQUEST__INIT;
    q.domain = (char *)cfg_str(c->cfg, "domain");
    q.limit = (uint32_t)cfg_int(c->cfg, "limit");
    q.offset = (uint32_t)cfg_int(c->cfg, "offset");
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_QUEUE_REQUEST;
    env.list_queue_request = &q;
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_LIST_QUEUE_REPLY, &rep, err);
    if (rc) {
        msg_free(&rep);
        return rc;
    }
    const Moda__ListQueueReply *r = rep->env->list_queue_reply;
    if (c->json) {
        json_writer_t w;
        json_w_init(&w);
        json_w_begin_obj(&w);
        json_w_key(&w, "total"), json_w_int(&w, (int64_t)r->total);
        json_w_key(&w, "items");
        json_w_begin_arr(&w);
        for (size_t i = 0; i < r->n_items; i++) {
            const Moda__SampleInfo *s = r->items[i];
            json_w_begin_obj(&w);
            json_w_key(&w, "sample_id"), json_w_int(&w, (int64_t)s->sample_id);
            json_w_key(&w, "score"), json_w_float(&w, s->score);
            json_w_key(&w, "reason"), json_w_string(&w, reason_name(s->reason));
            json_w_key(&w, "camera_id"), json_w_string(&w, s->camera_id);
            json_w_key(&w, "seq"), json_w_int(&w, (int64_t)s->seq);
            json_w_key(&w, "capture_time_us"), json_w_int(&w, s->capture_time_us);
            json_w_key(&w, "predicted_domain"), json_w_string(&w, s->predicted_domain);
            json_w_key(&w, "width"), json_w_int(&w, s->width);
            json_w_key(&w, "height"), json_w_int(&w, s->height);
            json_w_end_obj(&w);
        }
        json_w_end_arr(&w);
        json_w_end_obj(&w);
        size_t n;
        char *s = json_w_finish(&w, &n, err);
        if (s) printf("%s\n", s);
        else rc = err->code;
        free(s);
    } else {
        printf("%zu of %llu queued (highest score first)\n", r->n_items, (unsigned long long)r->total);
        printf("%10s %8s %-15s %-20s %10s %-12s %s\n", "sample", "score", "reason", "camera", "seq", "guess", "size");
        for (size_t i = 0; i < r->n_items; i++) {
            const Moda__SampleInfo *s = r->items[i];
            printf("%10llu %8.4f %-15s %-20s %10llu %-12s %ux%u\n", (unsigned long long)s->sample_id, s->score,
                   reason_name(s->reason), s->camera_id, (unsigned long long)s->seq,
                   *s->predicted_domain ? s->predicted_domain : "-", s->width, s->height);
        }
    }
    msg_free(&rep);
    return rc;
}

static int parse_id(const char *s, uint64_t *id, err_t *err)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || v == 0) return err_set(err, ERR_CONFIG, "'%s' is not a sample id", s);
    *id = v;
    return 0;
}

/* `moda label get ID [--out FILE]`: the sample's metadata, and its image into FILE. */
static int do_get(cli_t *c, const char *arg, err_t *err)
{
    Moda__GetSampleRequest q = MODA__GET_SAMPLE_REQUEST__INIT;
    int rc = parse_id(arg, &q.sample_id, err);
    if (rc) return rc;
    const char *out = cfg_str(c->cfg, "out");
    q.include_image = *out != 0;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_SAMPLE_REQUEST;
    env.get_sample_request = &q;
    msg_t *rep = NULL;
    rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_GET_SAMPLE_REPLY, &rep, err);
    if (!rc) {
        const Moda__SampleInfo *s = rep->env->get_sample_reply->sample;
        static const char *states[] = {"-", "queued", "labeled", "rejected"};
        const char *state = s->state <= 3 ? states[s->state] : "?";
        if (c->json)
            printf("{\"sample_id\":%llu,\"state\":\"%s\",\"camera_id\":\"%s\",\"seq\":%llu,\"width\":%u,"
                   "\"height\":%u,\"score\":%.9g,\"domain\":\"%s\",\"split\":\"%s\",\"label_seq\":%llu}\n",
                   (unsigned long long)s->sample_id, state, s->camera_id, (unsigned long long)s->seq, s->width,
                   s->height, s->score, s->domain, split_name(s->split), (unsigned long long)s->label_seq);
        else
            printf("sample %llu: %s, camera %s seq %llu, %ux%u, score %.4f, reason %s%s%s%s%s\n",
                   (unsigned long long)s->sample_id, state, s->camera_id, (unsigned long long)s->seq, s->width,
                   s->height, s->score, reason_name(s->reason), *s->domain ? ", domain " : "", s->domain,
                   *split_name(s->split) ? ", " : "", split_name(s->split));
        if (*out && rep->nparts == 1) rc = client_write_file(out, rep->parts[0].data, rep->parts[0].size, err);
    }
    msg_free(&rep);
    return rc;
}

/* `moda label submit ID --mask PNG --domain D` / `moda label reject ID [--reason R]`. */
static int do_submit(cli_t *c, const char *arg, int reject, err_t *err)
{
    uint64_t id;
    int rc = parse_id(arg, &id, err);
    if (rc) return rc;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    msg_t *rep = NULL;
    if (reject) {
        Moda__RejectSampleRequest q = MODA__REJECT_SAMPLE_REQUEST__INIT;
        q.sample_id = id;
        q.actor = c->actor;
        q.reason = (char *)cfg_str(c->cfg, "reason");
        env.body_case = MODA__ENVELOPE__BODY_REJECT_SAMPLE_REQUEST;
        env.reject_sample_request = &q;
        rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_REJECT_SAMPLE_REPLY, &rep, err);
        if (!rc) printf("sample %llu rejected\n", (unsigned long long)id);
        msg_free(&rep);
        return rc;
    }
    const char *mask = cfg_str(c->cfg, "mask"), *domain = cfg_str(c->cfg, "domain");
    if (!*mask || !*domain) return err_set(err, ERR_CONFIG, "submit needs --mask PNG and --domain D");
    unsigned char *png = NULL;
    size_t len = 0;
    if ((rc = client_read_file(mask, &png, &len, err))) return rc;
    Moda__SubmitLabelRequest q = MODA__SUBMIT_LABEL_REQUEST__INIT;
    q.sample_id = id;
    q.domain = (char *)domain;
    q.actor = c->actor;
    q.mask_png = 1;
    env.body_case = MODA__ENVELOPE__BODY_SUBMIT_LABEL_REQUEST;
    env.submit_label_request = &q;
    msg_part_t part = {png, len};
    rc = client_call(&c->cl, &env, &part, 1, MODA__ENVELOPE__BODY_SUBMIT_LABEL_REPLY, &rep, err);
    if (!rc)
        printf("sample %llu labeled in domain %s (%s)\n", (unsigned long long)id, domain,
               split_name(rep->env->submit_label_reply->split));
    msg_free(&rep);
    free(png);
    return rc;
}

static int do_domains(cli_t *c, err_t *err)
{
    Moda__ListDomainsRequest q = MODA__LIST_DOMAINS_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_DOMAINS_REQUEST;
    env.list_domains_request = &q;
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_LIST_DOMAINS_REPLY, &rep, err);
    if (!rc) {
        const Moda__ListDomainsReply *r = rep->env->list_domains_reply;
        if (c->json) printf("[");
        else printf("%-24s %8s %8s %10s\n", "domain", "labels", "holdout", "last_seq");
        for (size_t i = 0; i < r->n_domains; i++) {
            const Moda__LabelDomain *d = r->domains[i];
            if (c->json)
                printf("%s{\"name\":\"%s\",\"labels\":%llu,\"holdout\":%llu,\"last_seq\":%llu}", i ? "," : "", d->name,
                       (unsigned long long)d->labels, (unsigned long long)d->holdout, (unsigned long long)d->last_seq);
            else
                printf("%-24s %8llu %8llu %10llu\n", d->name, (unsigned long long)d->labels,
                       (unsigned long long)d->holdout, (unsigned long long)d->last_seq);
        }
        if (c->json) printf("]\n");
    }
    msg_free(&rep);
    return rc;
}

/* ---- entry -------------------------------------------------------------------------------- */

static const char usage_line[] = "COMMAND [ARG] [options]";
static const char summary[] =
    "Talk to moda-label (docs/label.md). Commands:\n"
    "  import DIR                   a labeled folder: DIR/images/<id>.{png,jpg}, DIR/masks/<id>.png,\n"
    "                               DIR/split.txt (test -> holdout); domain = folder name or --domain\n"
    "  import --coco FILE           a COCO file with RLE masks (images below --images)\n"
    "  export --coco FILE           every label as COCO RLE JSON, images written below --images\n"
    "  queue                        the hard-case queue, highest score first (--json)\n"
    "  domains                      label domains with counts (--json)\n"
    "  get ID [--out FILE]          one sample's metadata (--json), its image into FILE\n"
    "  submit ID --mask PNG --domain D   label a sample (a new domain name creates the domain)\n"
    "  reject ID [--reason R]       take a sample out of the queue";

int cmd_label(int argc, char **argv)
{
    err_t err = {0};
    cli_t c = {0};
    c.cfg = cfg_new("moda label", usage_line, summary, keys, 2, &err);
    if (!c.cfg) {
        fprintf(stderr, "moda label: %s\n", err.msg);
        return 2;
    }
    int rc = cfg_parse(c.cfg, argc, argv, &err);
    if (client_help_version(c.cfg, rc)) {
        cfg_destroy(&c.cfg);
        return 0;
    }
    int np = rc ? 0 : cfg_npositional(c.cfg);
    const char *sub = np ? cfg_positional(c.cfg, 0) : NULL, *arg = np > 1 ? cfg_positional(c.cfg, 1) : NULL;
    const char *coco = rc ? "" : cfg_str(c.cfg, "coco");
    if (!rc && !sub) rc = err_set(&err, ERR_CONFIG, "missing COMMAND (see --help)");
    else if (!rc && !strcmp(sub, "import") && !arg == !*coco)
        rc = err_set(&err, ERR_CONFIG, "import takes a folder or --coco FILE (one of them)");
    else if (!rc && !strcmp(sub, "export") && (arg || !*coco)) rc = err_set(&err, ERR_CONFIG, "export needs --coco FILE");
    else if (!rc && (!strcmp(sub, "queue") || !strcmp(sub, "domains")) && arg)
        rc = err_set(&err, ERR_CONFIG, "%s takes no argument", sub);
    else if (!rc && (!strcmp(sub, "get") || !strcmp(sub, "submit") || !strcmp(sub, "reject")) && !arg)
        rc = err_set(&err, ERR_CONFIG, "%s needs a sample id", sub);
    else if (!rc && strcmp(sub, "import") && strcmp(sub, "export") && strcmp(sub, "queue") && strcmp(sub, "domains") &&
             strcmp(sub, "get") && strcmp(sub, "submit") && strcmp(sub, "reject"))
        rc = err_set(&err, ERR_CONFIG, "unknown command '%s' (see --help)", sub);
    if (rc) {
        fprintf(stderr, "moda label: %s\n", err.msg);
        cfg_destroy(&c.cfg);
        return 2;
    }
    const char *actor = cfg_str(c.cfg, "actor");
    if (!*actor) actor = getenv("USER") ? getenv("USER") : "unknown";
    snprintf(c.actor, sizeof c.actor, "%s", actor);
    c.json = cfg_bool(c.cfg, "json");
    msg_set_sender("moda-cli");
    rc = client_open(&c.cl, NULL, cfg_str(c.cfg, "endpoint"), "moda-label", (int)cfg_int(c.cfg, "timeout_ms"), &err);
    c.cl.lim.max_total_bytes = (size_t)1 << 30;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!rc && !strcmp(sub, "import")) {
        import_stats_t st = {0};
        int skipped = 0;
        rc = arg ? import_dir(&c, arg, &st, &err) : import_coco(&c, coco, &st, &skipped, &err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        int show = !rc || st.stored || st.dup; /* a partial import still reports what it did */
        if (show && c.json)
            printf("{\"stored\":%d,\"duplicate\":%d,\"skipped\":%d,\"bytes\":%llu,\"seconds\":%.3f}\n", st.stored,
                   st.dup, skipped, (unsigned long long)st.bytes, s);
        else if (show)
            printf("imported %d samples (%d already there, %d images without annotation), %.1f MB in %.2f s "
                   "(%.0f samples/s)\n",
                   st.stored, st.dup, skipped, (double)st.bytes / 1e6, s, s > 0 ? (st.stored + st.dup) / s : 0.0);
    } else if (!rc && !strcmp(sub, "export")) {
        int n = 0;
        rc = export_coco(&c, coco, &n, &err);
        if (!rc) {
            if (c.json) printf("{\"exported\":%d,\"file\":\"%s\"}\n", n, coco);
            else printf("exported %d labeled samples to %s\n", n, coco);
        }
    } else if (!rc && !strcmp(sub, "queue")) rc = do_queue(&c, &err);
    else if (!rc && !strcmp(sub, "get")) rc = do_get(&c, arg, &err);
    else if (!rc && (!strcmp(sub, "submit") || !strcmp(sub, "reject"))) rc = do_submit(&c, arg, sub[0] == 'r', &err);
    else if (!rc) rc = do_domains(&c, &err);
    if (rc) fprintf(stderr, "moda label %s: %s\n", sub, err.msg);
    client_close(&c.cl);
    cfg_destroy(&c.cfg);
    return rc ? 1 : 0;
}
