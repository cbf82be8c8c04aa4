#include "record/archive.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <zstd.h>

#include "core/buf.h"

/* libcbor's encoders write one head at a time into a caller's buffer (0
 * when it has no room), so a document of thousands of records never becomes
 * a tree of items in memory. A head is at most 9 bytes (a type byte and a
 * 64-bit argument). */
static void head(struct kl_buf *o, size_t (*enc)(size_t, unsigned char *, size_t), size_t arg)
{
    kl_buf_reserve(o, 9);
    o->len += enc(arg, (unsigned char *)o->p + o->len, o->cap - o->len);
}

static void text(struct kl_buf *o, const char *s)
{
    size_t n = strlen(s);
    head(o, cbor_encode_string_start, n);
    kl_buf_put(o, s, n);
}

static void integer(struct kl_buf *o, int64_t v)
{
    kl_buf_reserve(o, 9);
    if (v >= 0)
        o->len += cbor_encode_uint((uint64_t)v, (unsigned char *)o->p + o->len, o->cap - o->len);
    else
        o->len += cbor_encode_negint((uint64_t)(-1 - v), (unsigned char *)o->p + o->len, o->cap - o->len);
}

static void value(struct kl_buf *o, const cJSON *v)
{
    kl_buf_reserve(o, 9);
    if (cJSON_IsString(v)) {
        text(o, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            integer(o, (int64_t)d);
        else
            o->len += cbor_encode_double(d, (unsigned char *)o->p + o->len, o->cap - o->len);
    } else if (cJSON_IsBool(v)) {
        o->len += cbor_encode_bool(cJSON_IsTrue(v), (unsigned char *)o->p + o->len, o->cap - o->len);
    } else {
        o->len += cbor_encode_null((unsigned char *)o->p + o->len, o->cap - o->len);
    }
}

unsigned char *kl_archive_cbor(const cJSON *rows, const char *instance, int64_t exported_at, size_t *len)
{
    struct kl_buf o = {0};
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
    return (unsigned char *)o.p;
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
