#include "core/hujson.h"

#include <stdbool.h>
#include <stdint.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The end of the JSON number at t[i] (RFC 8259: -?(0|[1-9][0-9]*)
 * (.[0-9]+)?([eE][+-]?[0-9]+)?, then a delimiter), or 0 when it is none.
 * cJSON reads 01, 1. and 1.e2 too, which Aperture's reader refuses. */
static bool digit_at(const char *t, size_t len, size_t k)
{
    return k < len && t[k] >= '0' && t[k] <= '9';
}

static size_t number_end(const char *t, size_t len, size_t i)
{
    if (i < len && t[i] == '-')
        i++;
    if (!digit_at(t, len, i))
        return 0;
    if (t[i] == '0')
        i++;
    else
        while (digit_at(t, len, i))
            i++;
    if (i < len && t[i] == '.') {
        if (!digit_at(t, len, i + 1))
            return 0;
        i++;
        while (digit_at(t, len, i))
            i++;
    }
    if (i < len && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < len && (t[i] == '+' || t[i] == '-'))
            i++;
        if (!digit_at(t, len, i))
            return 0;
        while (digit_at(t, len, i))
            i++;
    }
    return i == len || strchr(" \t\r\n,}]/", t[i]) ? i : 0;
}

/* Blank out comments and trailing commas in place. Offsets do not move. */
static int standardize(char *t, size_t len, char *err, size_t errlen, size_t *err_off)
{
    size_t last_comma = (size_t)-1;
    bool after_value = false;   /* a comma must follow a value: "[,]" is not a list */
    for (size_t i = 0; i < len; i++) {
        char c = t[i];
        if (c == '"') {
            size_t start = i++;
            while (i < len && t[i] != '"') {
                if (t[i] == '\\' && i + 5 < len && !memcmp(t + i + 1, "u0000", 5)) {
                    /* decoded, it would end the string there: an apikey or
                     * a model list cut short without a word */
                    snprintf(err, errlen, "\\u0000 is not allowed in a string");
                    *err_off = i;
                    return -1;
                }
                if (t[i] == '\\') {
                    i++;
                } else if (t[i] == '\n') {
                    break;
                } else if ((unsigned char)t[i] < 0x20) {
                    /* JSON forbids them raw, and a NUL would end the value
                     * there, as \u0000 would */
                    snprintf(err, errlen, "a control character (0x%02x) in a string: write it escaped",
                             (unsigned char)t[i]);
                    *err_off = i;
                    return -1;
                }
                i++;
            }
            if (i >= len || t[i] != '"') {
                snprintf(err, errlen, "unterminated string");
                *err_off = start;
                return -1;
            }
            last_comma = (size_t)-1;
            after_value = true;
        } else if (c == '/' && i + 1 < len && t[i + 1] == '/') {
            while (i < len && t[i] != '\n')
                t[i++] = ' ';
        } else if (c == '/' && i + 1 < len && t[i + 1] == '*') {
            size_t start = i;
            t[i++] = ' ';
            t[i++] = ' ';
            while (i + 1 < len && !(t[i] == '*' && t[i + 1] == '/')) {
                if (t[i] != '\n')
                    t[i] = ' ';
                i++;
            }
            if (i + 1 >= len) {
                snprintf(err, errlen, "unterminated /* comment");
                *err_off = start;
                return -1;
            }
            t[i++] = ' ';
            t[i] = ' ';
        } else if (c == ',') {
            if (!after_value) {
                snprintf(err, errlen, "a comma with no value before it");
                *err_off = i;
                return -1;
            }
            last_comma = i;
            after_value = false;
        } else if (c == '}' || c == ']') {
            if (last_comma != (size_t)-1)
                t[last_comma] = ' ';
            last_comma = (size_t)-1;
            after_value = true;
        } else if (c == '{' || c == '[' || c == ':') {
            last_comma = (size_t)-1;
            after_value = false;
        } else if (c == '\0') {
            snprintf(err, errlen, "a NUL byte");
            *err_off = i;
            return -1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t end = number_end(t, len, i);
            if (!end) {
                snprintf(err, errlen, "a number JSON does not allow (a leading zero, or a '.' or exponent "
                                      "without digits)");
                *err_off = i;
                return -1;
            }
            i = end - 1;
            last_comma = (size_t)-1;
            after_value = true;
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            last_comma = (size_t)-1;
            after_value = true;
        }
    }
    return 0;
}

static void pos_add(kl_json_doc *doc, const cJSON *item, size_t off)
{
    if (doc->npos == doc->cap) {
        doc->cap = doc->cap ? doc->cap * 2 : 64;
        doc->pos = realloc(doc->pos, doc->cap * sizeof(*doc->pos));
        if (!doc->pos)
            abort();
    }
    doc->pos[doc->npos].item = item;
    doc->pos[doc->npos].off = off;
    doc->npos++;
}

static size_t skip_ws(const char *t, size_t len, size_t i)
{
    while (i < len && (unsigned char)t[i] <= 0x20) /* as cJSON does */
        i++;
    return i;
}

static size_t skip_string(const char *t, size_t len, size_t i)
{
    i++; /* opening quote */
    while (i < len && t[i] != '"') {
        if (t[i] == '\\')
            i++;
        i++;
    }
    return i + 1;
}

/* Walk the (already valid) text in step with the cJSON tree, which keeps
 * members and elements in document order, recording each value's offset. */
static size_t pos_walk(kl_json_doc *doc, size_t i, const cJSON *item)
{
    const char *t = doc->text;
    size_t len = doc->len;
    i = skip_ws(t, len, i);
    pos_add(doc, item, i);
    if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
        int obj = cJSON_IsObject(item);
        i++; /* { or [ */
        for (const cJSON *c = item->child; c; c = c->next) {
            i = skip_ws(t, len, i);
            if (obj) {
                i = skip_string(t, len, i);
                i = skip_ws(t, len, i);
                i++; /* : */
            }
            i = pos_walk(doc, i, c);
            i = skip_ws(t, len, i);
            if (i < len && t[i] == ',')
                i++;
        }
        i = skip_ws(t, len, i);
        return i + 1; /* } or ] */
    }
    if (cJSON_IsString(item))
        return skip_string(t, len, i);
    while (i < len && !strchr(",}] \t\r\n", t[i]))
        i++;
    return i;
}

static int by_item(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct kl_json_pos *)a)->item;
    uintptr_t y = (uintptr_t)((const struct kl_json_pos *)b)->item;
    return x < y ? -1 : x > y;
}

/* A configuration gets a diagnostic per suspicious key: looking each one's
 * place up by scanning the positions and then the text made a file with
 * 10k unknown keys take 1.5 s to check (50k: 73 s). Positions sorted by
 * item and the offsets where lines start make each look-up a binary
 * search. */
static void index_doc(kl_json_doc *doc)
{
    qsort(doc->pos, doc->npos, sizeof(*doc->pos), by_item);
    size_t n = 1;
    for (size_t i = 0; i < doc->len; i++)
        n += doc->text[i] == '\n';
    doc->line_starts = malloc(n * sizeof(*doc->line_starts));
    if (!doc->line_starts)
        abort();
    doc->line_starts[0] = 0;
    doc->nlines = 1;
    for (size_t i = 0; i < doc->len; i++)
        if (doc->text[i] == '\n')
            doc->line_starts[doc->nlines++] = i + 1;
}

int kl_hujson_parse(const char *src, size_t len, kl_json_doc *doc,
                    char *err, size_t errlen, size_t *err_off)
{
    memset(doc, 0, sizeof(*doc));
    doc->text = malloc(len + 1);
    if (!doc->text)
        abort();
    memcpy(doc->text, src, len);
    doc->text[len] = '\0';
    doc->len = len;
    *err_off = 0;
    if (len >= 3 && !memcmp(doc->text, "\xef\xbb\xbf", 3))
        memset(doc->text, ' ', 3); /* a BOM: blanked, so offsets (and the positions reported) stay the file's */
    if (standardize(doc->text, len, err, errlen, err_off) < 0)
        return -1;
    const char *end = NULL;
    doc->root = cJSON_ParseWithLengthOpts(doc->text, len, &end, 0);
    if (!doc->root) {
        *err_off = end ? (size_t)(end - doc->text) : 0;
        snprintf(err, errlen, "invalid JSON");
        return -1;
    }
    size_t after = skip_ws(doc->text, len, (size_t)(end - doc->text));
    if (after < len) {
        *err_off = after;
        snprintf(err, errlen, "unexpected text after the top-level value");
        return -1;
    }
    pos_walk(doc, 0, doc->root);
    index_doc(doc);
    return 0;
}

size_t kl_json_doc_offset(const kl_json_doc *doc, const cJSON *item)
{
    struct kl_json_pos key = {item, 0};
    const struct kl_json_pos *p = doc->pos ? bsearch(&key, doc->pos, doc->npos, sizeof(*doc->pos), by_item) : NULL;
    return p ? p->off : (size_t)-1;
}

void kl_json_doc_linecol(const kl_json_doc *doc, size_t off, int *line, int *col)
{
    if (off > doc->len)
        off = doc->len;
    size_t lo = 0, hi = doc->nlines; /* the last line start <= off */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (doc->line_starts[mid] <= off)
            lo = mid;
        else
            hi = mid;
    }
    *line = (int)lo + 1;
    *col = (int)(off - doc->line_starts[lo]) + 1;
}

void kl_text_linecol(const char *text, size_t len, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

void kl_json_doc_free(kl_json_doc *doc)
{
    cJSON_Delete(doc->root);
    free(doc->text);
    free(doc->pos);
    free(doc->line_starts);
    memset(doc, 0, sizeof(*doc));
}
