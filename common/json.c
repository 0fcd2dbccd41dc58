/* json.c — strict JSON parser and writer (see json.h).
 *
 * The parser is recursive descent over a byte range with an explicit depth limit; every
 * node is heap-allocated in place inside its parent's items array (arrays grow by
 * doubling while parsing, then stay fixed). Object keys are indexed by a sorted array
 * so lookups and the duplicate-key check are O(n log n) even for large headers.
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t n, pos;
    int depth, max_depth;
    err_t *err;
} parser_t;

static int perr(parser_t *p, int code, const char *what)
{
    return err_set(p->err, code, "json: byte %zu: %s", p->pos, what);
}

static void skip_ws(parser_t *p)
{
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static void node_clear(json_t *j)
{
    if (!j) return;
    if (j->type == JSON_ARRAY || j->type == JSON_OBJECT) {
        for (size_t i = 0; i < j->len; i++) {
            node_clear(&j->items[i]);
            if (j->keys) free(j->keys[i]);
        }
        free(j->items);
        free(j->keys);
        free(j->sorted);
    } else if (j->type == JSON_STRING) {
        free(j->str);
    }
    memset(j, 0, sizeof *j);
}

static int parse_value(parser_t *p, json_t *out);

static int hex4(parser_t *p, unsigned *out)
{
    if (p->n - p->pos < 4) return perr(p, ERR_FORMAT, "truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->pos + (size_t)k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return perr(p, ERR_FORMAT, "bad hex digit in \\u escape");
    }
    p->pos += 4;
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string at p->pos (which holds '"'); *out is malloc'd. */
static int parse_string(parser_t *p, char **out, size_t *out_len)
{
    p->pos++; /* opening quote */
    size_t start = p->pos;
    /* The decoded string is never longer than the raw text: find the end first. */
    size_t end = start;
    while (end < p->n && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
    if (end >= p->n) {
        p->pos = p->n;
        return perr(p, ERR_FORMAT, "unterminated string");
    }
    char *o = malloc(end - start + 1);
    if (!o) return perr(p, ERR_NOMEM, "out of memory for a string");
    size_t k = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            free(o);
            return perr(p, ERR_FORMAT, "control character in string");
        }
        if (c == '\\') {
            p->pos++;
            char e = p->s[p->pos++];
            switch (e) {
            case '"': o[k++] = '"'; break;
            case '\\': o[k++] = '\\'; break;
            case '/': o[k++] = '/'; break;
            case 'b': o[k++] = '\b'; break;
            case 'f': o[k++] = '\f'; break;
            case 'n': o[k++] = '\n'; break;
            case 'r': o[k++] = '\r'; break;
            case 't': o[k++] = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (hex4(p, &cp)) { free(o); return ERR_FORMAT; }
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    free(o);
                    return perr(p, ERR_FORMAT, "lone low surrogate in \\u escape");
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                        free(o);
                        return perr(p, ERR_FORMAT, "high surrogate not followed by \\u low surrogate");
                    }
                    p->pos += 2;
                    if (hex4(p, &lo)) { free(o); return ERR_FORMAT; }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        free(o);
                        return perr(p, ERR_FORMAT, "high surrogate not followed by a low surrogate");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0) {
                    free(o);
                    return perr(p, ERR_FORMAT, "\\u0000 is not supported in strings");
                }
                k += put_utf8(o + k, cp); /* \uXXXX (6 bytes) >= 3 bytes; pairs 12 >= 4 */
                break;
            }
            default:
                p->pos--;
                free(o);
                return perr(p, ERR_FORMAT, "bad escape in string");
            }
            if (p->pos > end) { /* an escape ran over the closing quote we guessed */
                free(o);
                return perr(p, ERR_FORMAT, "bad escape at end of string");
            }
        } else {
            size_t l = utf8_len((const unsigned char *)p->s + p->pos, end - p->pos);
            if (!l) {
                free(o);
                return perr(p, ERR_FORMAT, "invalid UTF-8 in string");
            }
            memcpy(o + k, p->s + p->pos, l);
            k += l;
            p->pos += l;
        }
    }
    o[k] = 0;
    p->pos = end + 1;
    *out = o;
    *out_len = k;
    return 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(parser_t *p, json_t *out)
{
    size_t start = p->pos, i = p->pos;
    int integral = 1;
    if (i < p->n && p->s[i] == '-') i++;
    if (i >= p->n || !is_digit(p->s[i])) {
        p->pos = i;
        return perr(p, ERR_FORMAT, "expected a digit");
    }
    if (p->s[i] == '0') {
        i++;
        if (i < p->n && is_digit(p->s[i])) {
            p->pos = i;
            return perr(p, ERR_FORMAT, "leading zero in number");
        }
    } else {
        while (i < p->n && is_digit(p->s[i])) i++;
    }
    if (i < p->n && p->s[i] == '.') {
        integral = 0;
        i++;
        if (i >= p->n || !is_digit(p->s[i])) {
            p->pos = i;
            return perr(p, ERR_FORMAT, "expected a digit after '.'");
        }
        while (i < p->n && is_digit(p->s[i])) i++;
    }
    if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integral = 0;
        i++;
        if (i < p->n && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->n || !is_digit(p->s[i])) {
            p->pos = i;
            return perr(p, ERR_FORMAT, "expected a digit in exponent");
        }
        while (i < p->n && is_digit(p->s[i])) i++;
    }
    char buf[64], *tmp = buf;
    size_t len = i - start;
    if (len >= sizeof buf) {
        tmp = malloc(len + 1);
        if (!tmp) return perr(p, ERR_NOMEM, "out of memory for a number");
    }
    memcpy(tmp, p->s + start, len);
    tmp[len] = 0;
    errno = 0;
    double d = strtod(tmp, NULL);
    if (!isfinite(d)) {
        if (tmp != buf) free(tmp);
        return perr(p, ERR_RANGE, "number out of range");
    }
    out->type = JSON_NUMBER;
    out->num = d;
    if (integral) {
        errno = 0;
        long long v = strtoll(tmp, NULL, 10);
        if (errno == 0) {
            out->is_int = 1;
            out->i = (int64_t)v;
        }
    }
    if (tmp != buf) free(tmp);
    p->pos = i;
    return 0;
}

static int match_word(parser_t *p, const char *w)
{
    size_t l = strlen(w);
    if (p->n - p->pos < l || memcmp(p->s + p->pos, w, l) != 0) return perr(p, ERR_FORMAT, "unexpected character");
    p->pos += l;
    return 0;
}

static int grow(parser_t *p, json_t *j, size_t *cap, int with_keys)
{
    if (j->len < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    json_t *it = realloc(j->items, nc * sizeof *it);
    if (!it) return perr(p, ERR_NOMEM, "out of memory");
    j->items = it;
    if (with_keys) {
        char **k = realloc(j->keys, nc * sizeof *k);
        if (!k) return perr(p, ERR_NOMEM, "out of memory");
        j->keys = k;
    }
    *cap = nc;
    return 0;
}

/* Merge sort of key indices (qsort has no context argument in C11; keeps parsing thread-safe). */
static void merge_sort_idx(size_t *a, size_t *tmp, size_t n, char **keys)
{
    if (n < 2) return;
    size_t h = n / 2;
    merge_sort_idx(a, tmp, h, keys);
    merge_sort_idx(a + h, tmp, n - h, keys);
    size_t i = 0, k = h, o = 0;
    while (i < h && k < n) tmp[o++] = strcmp(keys[a[i]], keys[a[k]]) <= 0 ? a[i++] : a[k++];
    while (i < h) tmp[o++] = a[i++];
    while (k < n) tmp[o++] = a[k++];
    memcpy(a, tmp, n * sizeof *a);
}

static int index_object(parser_t *p, json_t *j)
{
    if (!j->len) return 0;
    j->sorted = malloc(j->len * sizeof *j->sorted);
    size_t *tmp = malloc(j->len * sizeof *tmp);
    if (!j->sorted || !tmp) {
        free(tmp);
        return perr(p, ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < j->len; i++) j->sorted[i] = i;
    merge_sort_idx(j->sorted, tmp, j->len, j->keys);
    free(tmp);
    for (size_t i = 1; i < j->len; i++) {
        if (!strcmp(j->keys[j->sorted[i - 1]], j->keys[j->sorted[i]])) {
            char what[160];
            snprintf(what, sizeof what, "duplicate object key '%.100s'", j->keys[j->sorted[i]]);
            return perr(p, ERR_FORMAT, what);
        }
    }
    return 0;
}

static int parse_container(parser_t *p, json_t *out, int is_obj)
{
    if (++p->depth > p->max_depth) return perr(p, ERR_RANGE, "nesting too deep");
    out->type = is_obj ? JSON_OBJECT : JSON_ARRAY;
    p->pos++; /* [ or { */
    size_t cap = 0;
    char close = is_obj ? '}' : ']';
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == close) {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        int rc = grow(p, out, &cap, is_obj);
        if (rc) return rc;
        json_t *it = &out->items[out->len];
        memset(it, 0, sizeof *it);
        if (is_obj) {
            if (p->pos >= p->n || p->s[p->pos] != '"') return perr(p, ERR_FORMAT, "expected a string key");
            char *key;
            size_t kl;
            rc = parse_string(p, &key, &kl);
            if (rc) return rc;
            out->keys[out->len] = key;
            out->len++; /* count it now so a failure below frees the key */
            skip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != ':') return perr(p, ERR_FORMAT, "expected ':' after object key");
            p->pos++;
            skip_ws(p);
            rc = parse_value(p, it);
            if (rc) return rc;
        } else {
            out->len++;
            rc = parse_value(p, it);
            if (rc) return rc;
        }
        skip_ws(p);
        if (p->pos >= p->n) return perr(p, ERR_FORMAT, is_obj ? "unterminated object" : "unterminated array");
        char c = p->s[p->pos];
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == close) {
            p->pos++;
            break;
        }
        return perr(p, ERR_FORMAT, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->depth--;
    return is_obj ? index_object(p, out) : 0;
}

static int parse_value(parser_t *p, json_t *out)
{
    skip_ws(p);
    if (p->pos >= p->n) return perr(p, ERR_FORMAT, "unexpected end of input");
    char c = p->s[p->pos];
    switch (c) {
    case '{': return parse_container(p, out, 1);
    case '[': return parse_container(p, out, 0);
    case '"': {
        out->type = JSON_STRING;
        return parse_string(p, &out->str, &out->len);
    }
    case 't': out->type = JSON_BOOL; out->boolean = 1; return match_word(p, "true");
    case 'f': out->type = JSON_BOOL; out->boolean = 0; return match_word(p, "false");
    case 'n': out->type = JSON_NULL; return match_word(p, "null");
    default:
        if (c == '-' || is_digit(c)) return parse_number(p, out);
        return perr(p, ERR_FORMAT, "unexpected character");
    }
}

json_t *json_parse_ex(const char *text, size_t len, int max_depth, size_t max_bytes, err_t *err)
{
    if (!text && len) {
        err_set(err, ERR_INVALID, "json: NULL input");
        return NULL;
    }
    if (len > max_bytes) {
        err_set(err, ERR_RANGE, "json: input of %zu bytes exceeds the limit of %zu", len, max_bytes);
        return NULL;
    }
    json_t *j = calloc(1, sizeof *j);
    if (!j) {
        err_set(err, ERR_NOMEM, "json: out of memory");
        return NULL;
    }
    parser_t p = {.s = text, .n = len, .pos = 0, .depth = 0, .max_depth = max_depth, .err = err};
    int rc = parse_value(&p, j);
    if (!rc) {
        skip_ws(&p);
        if (p.pos != p.n) rc = perr(&p, ERR_FORMAT, "trailing characters after the value");
    }
    if (rc) {
        json_free(&j);
        return NULL;
    }
    return j;
}

json_t *json_parse(const char *text, size_t len, err_t *err)
{
    return json_parse_ex(text, len, JSON_MAX_DEPTH, JSON_MAX_BYTES, err);
}

void json_free(json_t **j)
{
    if (!j || !*j) return;
    node_clear(*j);
    free(*j);
    *j = NULL;
}

/* ---- reading helpers --------------------------------------------------------------------- */

const json_t *json_get(const json_t *j, const char *key)
{
    if (!j || j->type != JSON_OBJECT || !key || !j->len) return NULL;
    size_t lo = 0, hi = j->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(j->keys[j->sorted[mid]], key);
        if (!c) return &j->items[j->sorted[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const json_t *json_at(const json_t *j, size_t i)
{
    if (!j || (j->type != JSON_ARRAY && j->type != JSON_OBJECT) || i >= j->len) return NULL;
    return &j->items[i];
}

size_t json_len(const json_t *j)
{
    return (j && (j->type == JSON_ARRAY || j->type == JSON_OBJECT)) ? j->len : 0;
}

const char *json_str(const json_t *j) { return (j && j->type == JSON_STRING) ? j->str : NULL; }

const char *json_type_name(json_type_t t)
{
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "bool";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "?";
}

int json_get_int64(const json_t *j, int64_t *out, const char *what, err_t *err)
{
    if (!j) return err_set(err, ERR_FORMAT, "%s: missing", what);
    if (j->type != JSON_NUMBER || !j->is_int)
        return err_set(err, ERR_FORMAT, "%s: expected an integer, got %s", what,
                       j->type == JSON_NUMBER ? "a non-integer number" : json_type_name(j->type));
    *out = j->i;
    return 0;
}

int json_get_double(const json_t *j, double *out, const char *what, err_t *err)
{
    if (!j) return err_set(err, ERR_FORMAT, "%s: missing", what);
    if (j->type != JSON_NUMBER)
        return err_set(err, ERR_FORMAT, "%s: expected a number, got %s", what, json_type_name(j->type));
    *out = j->num;
    return 0;
}

/* ---- writer ------------------------------------------------------------------------------ */

void json_w_init(json_writer_t *w) { memset(w, 0, sizeof *w); }

void json_w_free(json_writer_t *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

static void put(json_writer_t *w, const char *s, size_t n)
{
    if (w->failed) return;
    if (w->len + n + 1 > w->cap) {
        size_t nc = w->cap ? w->cap : 256;
        while (nc < w->len + n + 1) nc *= 2;
        char *b = realloc(w->buf, nc);
        if (!b) {
            w->failed = ERR_NOMEM;
            return;
        }
        w->buf = b;
        w->cap = nc;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = 0;
}

/* Separator before a value: ',' between array items; nothing right after a key. */
static void before_value(json_writer_t *w)
{
    if (w->failed) return;
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (w->depth > 0) {
        if (w->in_obj[w->depth - 1]) { /* a value in an object needs a key first */
            w->failed = ERR_STATE;
            return;
        }
        if (w->count[w->depth - 1]) put(w, ",", 1);
        w->count[w->depth - 1] = 1;
    } else if (w->len) {
        w->failed = ERR_STATE; /* a second top-level value */
    }
}

static void open_c(json_writer_t *w, int obj)
{
    before_value(w);
    if (w->failed) return;
    if (w->depth >= JSON_W_MAX_DEPTH) {
        w->failed = ERR_RANGE;
        return;
    }
    put(w, obj ? "{" : "[", 1);
    w->count[w->depth] = 0;
    w->in_obj[w->depth] = (unsigned char)obj;
    w->depth++;
}

static void close_c(json_writer_t *w, int obj)
{
    if (w->failed) return;
    if (w->depth == 0 || w->in_obj[w->depth - 1] != obj || w->after_key) {
        w->failed = ERR_STATE;
        return;
    }
    w->depth--;
    put(w, obj ? "}" : "]", 1);
}

void json_w_begin_obj(json_writer_t *w) { open_c(w, 1); }
void json_w_end_obj(json_writer_t *w) { close_c(w, 1); }
void json_w_begin_arr(json_writer_t *w) { open_c(w, 0); }
void json_w_end_arr(json_writer_t *w) { close_c(w, 0); }

static void put_escaped(json_writer_t *w, const char *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    put(w, "\"", 1);
    size_t run = 0; /* start of the current run of bytes that need no escaping */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *e = NULL;
        char u[7];
        if (c == '"') e = "\\\"";
        else if (c == '\\') e = "\\\\";
        else if (c == '\n') e = "\\n";
        else if (c == '\r') e = "\\r";
        else if (c == '\t') e = "\\t";
        else if (c == '\b') e = "\\b";
        else if (c == '\f') e = "\\f";
        else if (c < 0x20) {
            u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hexd[c >> 4], u[5] = hexd[c & 15], u[6] = 0;
            e = u;
        }
        if (e) {
            put(w, s + run, i - run);
            put(w, e, strlen(e));
            run = i + 1;
        }
    }
    put(w, s + run, n - run);
    put(w, "\"", 1);
}

void json_w_key(json_writer_t *w, const char *key)
{
    if (w->failed) return;
    if (w->depth == 0 || !w->in_obj[w->depth - 1] || w->after_key || !key) {
        w->failed = ERR_STATE;
        return;
    }
    if (w->count[w->depth - 1]) put(w, ",", 1);
    w->count[w->depth - 1] = 1;
    put_escaped(w, key, strlen(key));
    put(w, ":", 1);
    w->after_key = 1;
}

void json_w_string_n(json_writer_t *w, const char *s, size_t n)
{
    before_value(w);
    put_escaped(w, s, n);
}

void json_w_string(json_writer_t *w, const char *s)
{
    if (!s) {
        json_w_null(w);
        return;
    }
    json_w_string_n(w, s, strlen(s));
}

void json_w_int(json_writer_t *w, int64_t v)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%lld", (long long)v);
    before_value(w);
    put(w, b, (size_t)n);
}

static void put_real(json_writer_t *w, double v, int digits)
{
    before_value(w);
    if (!isfinite(v)) {
        put(w, "null", 4);
        return;
    }
    char b[40];
    int n = snprintf(b, sizeof b, "%.*g", digits, v);
    put(w, b, (size_t)n);
}

void json_w_float(json_writer_t *w, float v) { put_real(w, (double)v, 9); }
void json_w_double(json_writer_t *w, double v) { put_real(w, v, 17); }

void json_w_bool(json_writer_t *w, int v)
{
    before_value(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

void json_w_null(json_writer_t *w)
{
    before_value(w);
    put(w, "null", 4);
}

void json_w_value(json_writer_t *w, const json_t *j)
{
    if (!j) {
        json_w_null(w);
        return;
    }
    switch (j->type) {
    case JSON_NULL: json_w_null(w); break;
    case JSON_BOOL: json_w_bool(w, j->boolean); break;
    case JSON_NUMBER:
        if (j->is_int) json_w_int(w, j->i);
        else json_w_double(w, j->num);
        break;
    case JSON_STRING: json_w_string_n(w, j->str, j->len); break;
    case JSON_ARRAY:
        json_w_begin_arr(w);
        for (size_t i = 0; i < j->len; i++) json_w_value(w, &j->items[i]);
        json_w_end_arr(w);
        break;
    case JSON_OBJECT:
        json_w_begin_obj(w);
        for (size_t i = 0; i < j->len; i++) {
            json_w_key(w, j->keys[i]);
            json_w_value(w, &j->items[i]);
        }
        json_w_end_obj(w);
        break;
    }
}

char *json_w_finish(json_writer_t *w, size_t *len, err_t *err)
{
    int code = w->failed;
    if (!code && (w->depth || w->after_key)) code = ERR_STATE;
    if (!code && !w->len) code = ERR_STATE;
    if (code) {
        err_set(err, code, "json writer: %s", code == ERR_NOMEM ? "out of memory"
                                               : code == ERR_RANGE ? "nesting too deep"
                                                                   : "unbalanced or misplaced call");
        json_w_free(w);
        return NULL;
    }
    char *s = w->buf;
    if (len) *len = w->len;
    memset(w, 0, sizeof *w);
    return s;
}
