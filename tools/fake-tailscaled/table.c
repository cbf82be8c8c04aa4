#include "table.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "alloc.h"
#include "response.h"

/* Reads a whole open file. 0, or -1 with errno set. */
static int read_fd(int fd, char **data, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = fts_malloc(cap + 1);

    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = fts_realloc(buf, cap + 1);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int saved = errno;
            free(buf);
            errno = saved;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

static void free_entries(struct fts_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].key);
        free(e[i].path);
        free(e[i].message);
    }
    free(e);
}

/* "!garbage", "!truncated", "!hang", "!close" or "!NNN[ message]". */
static int parse_directive(const char *v, struct fts_entry *e)
{
    if (strcmp(v, "!garbage") == 0) {
        e->kind = FTS_ENTRY_GARBAGE;
        return 0;
    }
    if (strcmp(v, "!truncated") == 0) {
        e->kind = FTS_ENTRY_TRUNCATED;
        return 0;
    }
    if (strcmp(v, "!hang") == 0) {
        e->kind = FTS_ENTRY_HANG;
        return 0;
    }
    if (strcmp(v, "!close") == 0) {
        e->kind = FTS_ENTRY_CLOSE;
        return 0;
    }
    if (v[1] >= '0' && v[1] <= '9' && v[2] >= '0' && v[2] <= '9' && v[3] >= '0' &&
        v[3] <= '9' && (v[4] == '\0' || v[4] == ' ')) {
        int code = (v[1] - '0') * 100 + (v[2] - '0') * 10 + (v[3] - '0');
        if (code < 200 || code > 599)
            return -1;
        e->kind = FTS_ENTRY_STATUS;
        e->status = code;
        if (v[4] == ' ' && v[5] != '\0') {
            e->message = fts_strdup(v + 5);
        } else {
            const char *text = fts_status_text(code);
            e->message = fts_strdup(text ? text : "fake-tailscaled error");
        }
        return 0;
    }
    return -1;
}

/* Parses one version of the table. With check_files, a file entry that
 * cannot be read is an error (used at startup, to catch typos early);
 * reloads skip that check so tests may write the table and the files it
 * names in either order. */
static int parse_table(const struct fts_table *t, const char *data, size_t len,
                       int check_files, struct fts_entry **out, size_t *nout,
                       char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(data, len);
    struct fts_entry *entries = NULL;
    size_t n = 0;

    if (root == NULL) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= data && at <= data + len ? (long)(at - data) : -1;
        snprintf(err, errlen, "%s: not valid JSON (near byte %ld)", t->path, off);
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "%s: must be a JSON object of \"IP\": \"file\"", t->path);
        goto fail;
    }

    size_t count = (size_t)cJSON_GetArraySize(root);
    entries = fts_calloc(count ? count : 1, sizeof(*entries));
    for (cJSON *it = root->child; it != NULL; it = it->next) {
        struct fts_entry *e = &entries[n];
        const char *key = it->string;
        e->port = 0;
        if (fts_ip_parse(key, strlen(key), &e->ip) != 0 &&
            (fts_ipport_parse(key, strlen(key), &e->ip, &e->port) != 0 || e->port == 0)) {
            snprintf(err, errlen, "%s: key \"%s\" is not an IP address or IP:port", t->path,
                     key);
            goto fail;
        }
        for (size_t j = 0; j < n; j++) {
            if (fts_ip_equal(&entries[j].ip, &e->ip) && entries[j].port == e->port) {
                snprintf(err, errlen, "%s: \"%s\" and \"%s\" are the same address", t->path,
                         entries[j].key, key);
                goto fail;
            }
        }
        if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
            snprintf(err, errlen, "%s: value for \"%s\" must be a file name or !directive",
                     t->path, key);
            goto fail;
        }
        e->key = fts_strdup(key);
        n++;

        const char *v = it->valuestring;
        if (v[0] == '!') {
            if (parse_directive(v, e) != 0) {
                snprintf(err, errlen,
                         "%s: \"%s\": unknown directive \"%s\" (want !garbage, !truncated, "
                         "!hang, !close or !NNN with 200 <= NNN <= 599)",
                         t->path, key, v);
                goto fail;
            }
            continue;
        }

        e->kind = FTS_ENTRY_FILE;
        if (v[0] == '/') {
            e->path = fts_strdup(v);
        } else {
            size_t dn = strlen(t->dir), vn = strlen(v);
            e->path = fts_malloc(dn + 1 + vn + 1);
            memcpy(e->path, t->dir, dn);
            e->path[dn] = '/';
            memcpy(e->path + dn + 1, v, vn + 1);
        }
        if (check_files && access(e->path, R_OK) != 0) {
            snprintf(err, errlen, "%s: \"%s\": cannot read %s: %s", t->path, key, e->path,
                     strerror(errno));
            goto fail;
        }
    }

    cJSON_Delete(root);
    *out = entries;
    *nout = n;
    return 0;

fail:
    cJSON_Delete(root);
    free_entries(entries, n);
    return -1;
}

/* Reads the table file. 0, or -1 with a message in err. */
static int read_table(const struct fts_table *t, char **data, size_t *len, char *err,
                      size_t errlen)
{
    int fd = open(t->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || read_fd(fd, data, len) != 0) {
        snprintf(err, errlen, "%s: %s", t->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    return a != NULL && alen == blen && memcmp(a, b, alen) == 0;
}

/* Parses data and, on success, makes it the table in use. Takes ownership
 * of data either way. */
static int install(struct fts_table *t, char *data, size_t len, int check_files, char *err,
                   size_t errlen)
{
    struct fts_entry *entries;
    size_t n;

    if (parse_table(t, data, len, check_files, &entries, &n, err, errlen) != 0) {
        free(t->failed);
        t->failed = data;
        t->failed_len = len;
        return -1;
    }
    free_entries(t->entries, t->n);
    t->entries = entries;
    t->n = n;
    free(t->loaded);
    t->loaded = data;
    t->loaded_len = len;
    free(t->failed);
    t->failed = NULL;
    t->failed_len = 0;
    t->loads++;
    return 0;
}

int fts_table_open(struct fts_table *t, const char *path, char *err, size_t errlen)
{
    const char *slash = strrchr(path, '/');
    char *data;
    size_t len;

    memset(t, 0, sizeof(*t));
    t->path = fts_strdup(path);
    if (slash == NULL)
        t->dir = fts_strdup(".");
    else if (slash == path)
        t->dir = fts_strdup("/");
    else
        t->dir = fts_strndup(path, (size_t)(slash - path));
    if (read_table(t, &data, &len, err, errlen) != 0)
        return -1;
    return install(t, data, len, 1, err, errlen);
}

int fts_table_refresh(struct fts_table *t, int force, char *err, size_t errlen)
{
    char *data;
    size_t len;

    if (read_table(t, &data, &len, err, errlen) != 0)
        return force ? -1 : 0;
    if (!force && (same_bytes(t->loaded, t->loaded_len, data, len) ||
                   same_bytes(t->failed, t->failed_len, data, len))) {
        free(data);
        return 0;
    }
    return install(t, data, len, 0, err, errlen) == 0 ? 1 : -1;
}

const struct fts_entry *fts_table_lookup(const struct fts_table *t, const struct fts_ip *ip, unsigned port)
{
    for (size_t i = 0; port && i < t->n; i++)
        if (t->entries[i].port == port && fts_ip_equal(&t->entries[i].ip, ip))
            return &t->entries[i];
    for (size_t i = 0; i < t->n; i++)
        if (!t->entries[i].port && fts_ip_equal(&t->entries[i].ip, ip))
            return &t->entries[i];
    return NULL;
}

int fts_table_read(const struct fts_entry *e, char **data, size_t *len, char *err,
                   size_t errlen)
{
    int fd = open(e->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(err, errlen, "cannot read %s: %s", e->path, strerror(errno));
        return -1;
    }
    if (read_fd(fd, data, len) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", e->path, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int fts_nodekey_decode(const char *s, size_t n, unsigned char out[32])
{
    if (n != 8 + 64 || memcmp(s, "nodekey:", 8) != 0)
        return -1;
    s += 8;
    for (int i = 0; i < 32; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + k];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                v |= (unsigned)(c - 'A' + 10);
            else
                return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

const struct fts_entry *fts_table_lookup_nodekey(const struct fts_table *t,
                                                 const unsigned char key[32])
{
    for (size_t i = 0; i < t->n; i++) {
        const struct fts_entry *e = &t->entries[i];
        char *data, err[256];
        size_t len;
        unsigned char k[32];
        int match = 0;

        if (e->kind != FTS_ENTRY_FILE || fts_table_read(e, &data, &len, err, sizeof(err)) != 0)
            continue;
        cJSON *doc = cJSON_ParseWithLength(data, len);
        cJSON *node = cJSON_GetObjectItemCaseSensitive(doc, "Node");
        cJSON *nk = cJSON_GetObjectItemCaseSensitive(node, "Key");
        if (cJSON_IsString(nk) &&
            fts_nodekey_decode(nk->valuestring, strlen(nk->valuestring), k) == 0)
            match = memcmp(k, key, 32) == 0;
        cJSON_Delete(doc);
        free(data);
        if (match)
            return e;
    }
    return NULL;
}

void fts_table_close(struct fts_table *t)
{
    free_entries(t->entries, t->n);
    free(t->loaded);
    free(t->failed);
    free(t->path);
    free(t->dir);
    memset(t, 0, sizeof(*t));
}
