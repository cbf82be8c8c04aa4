#include "record/archive.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <zstd.h>

/* A growing output buffer. libcbor's encoders write one head at a time
 * into a caller's buffer (0 when it has no room), so a document of
 * thousands of records never becomes a tree of items in memory. */
struct out {
    unsigned char *p;
    size_t len, cap;
};

static void reserve(struct out *o, size_t n)
{
    if (o->len + n <= o->cap)
        return;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + n)
        cap *= 2;
    o->p = realloc(o->p, cap);
    if (!o->p)
        abort();
    o->cap = cap;
}

/* A head is at most 9 bytes (a type byte and a 64-bit argument). */
static void head(struct out *o, size_t (*enc)(size_t, unsigned char *, size_t), size_t arg)
{
    reserve(o, 9);
    o->len += enc(arg, o->p + o->len, o->cap - o->len);
}

static void text(struct out *o, const char *s)
{
    size_t n = strlen(s);
    head(o, cbor_encode_string_start, n);
    reserve(o, n);
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void integer(struct out *o, int64_t v)
{
    reserve(o, 9);
    if (v >= 0)
        o->len += cbor_encode_uint((uint64_t)v, o->p + o->len, o->cap - o->len);
    else
        o->len += cbor_encode_negint((uint64_t)(-1 - v), o->p + o->len, o->cap - o->len);
}

static void value(struct out *o, const cJSON *v)
{
    reserve(o, 9);
    if (cJSON_IsString(v)) {
        text(o, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            integer(o, (int64_t)d);
        else
            o->len += cbor_encode_double(d, o->p + o->len, o->cap - o->len);
    } else if (cJSON_IsBool(v)) {
        o->len += cbor_encode_bool(cJSON_IsTrue(v), o->p + o->len, o->cap - o->len);
    } else {
        o->len += cbor_encode_null(o->p + o->len, o->cap - o->len);
    }
}

unsigned char *kl_archive_cbor(const cJSON *rows, const char *instance, int64_t exported_at, size_t *len)
{
    struct out o = {0};
    head(&o, cbor_encode_map_start, 5);
    text(&o, "format");
    text(&o, "keyless.records");
    text(&o, "version");
    integer(&o, 1);
    text(&o, "instance");
    text(&o, instance ? instance : "");
    text(&o, "exported_at");
    integer(&o, exported_at);
    text(&o, "records");
    head(&o, cbor_encode_array_start, (size_t)cJSON_GetArraySize(rows));
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        head(&o, cbor_encode_map_start, (size_t)cJSON_GetArraySize(row));
        const cJSON *m;
        cJSON_ArrayForEach(m, row) {
            text(&o, m->string);
            value(&o, m);
        }
    }
    *len = o.len;
    return o.p;
}

unsigned char *kl_archive_zstd(const unsigned char *data, size_t len, size_t *out_len)
{
    size_t cap = ZSTD_compressBound(len);
    unsigned char *z = malloc(cap ? cap : 1);
    if (!z)
        abort();
    size_t n = ZSTD_compress(z, cap, data, len, 3);
    if (ZSTD_isError(n)) {
        free(z);
        return NULL;
    }
    *out_len = n;
    return z;
}
