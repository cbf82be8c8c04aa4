#include "record/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "core/text.h"

/* SQLite's allocation statistics (sqlite3_memory_used) take a process-wide
 * mutex around every allocation it makes, and Debian's build has no
 * lookaside, so every row the writer stores paid for dozens of lock and
 * unlock pairs. keyless never reads those statistics. */
void kl_store_global_init(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

struct kl_store *kl_store_open(enum kl_store_driver d, const char *target, bool migrate, char *err,
                               size_t errlen)
{
    return d == KL_STORE_SQLITE ? kl_sqlite_open(target, migrate, err, errlen)
                                : kl_pg_open(target, migrate, err, errlen);
}

/* Whether table has column, from the catalog: 1, 0, or -1 when it cannot
 * be read. */
static int column_exists(struct kl_store *s, const char *table, const char *column)
{
    const char *sql = s->driver == KL_STORE_SQLITE
        ? "SELECT 1 AS x FROM pragma_table_info(?) WHERE name = ?"
        : "SELECT 1 AS x FROM information_schema.columns WHERE table_schema = current_schema() "
          "AND table_name = ? AND column_name = ?";
    const char *params[] = {table, column};
    cJSON *rows = NULL;
    char err[256];
    int rc = kl_store_exec(s, sql, params, 2, &rows, err, sizeof(err)) < 0 ? -1 : cJSON_GetArraySize(rows) > 0;
    cJSON_Delete(rows);
    return rc;
}

bool kl_store_has_column(struct kl_store *s, const char *column)
{
    size_t i = 0;
    while (i < KL_SCHEMA_NLATE && strcmp(kl_schema_late_columns[i], column) != 0)
        i++;
    if (i == KL_SCHEMA_NLATE)
        return true; /* one of migration 1's */
    if (!s->late_columns[i]) {
        int rc = column_exists(s, "requests", column);
        if (rc < 0)
            return true; /* the query that follows reports what is wrong */
        s->late_columns[i] = rc ? 1 : -1;
    }
    return s->late_columns[i] == 1;
}

int kl_store_add_late_columns(struct kl_store *s, char *err, size_t errlen)
{
    char sql[128];
    for (size_t i = 0; i < KL_SCHEMA_NLATE; i++) {
        if (kl_store_has_column(s, kl_schema_late_columns[i]))
            continue;
        snprintf(sql, sizeof(sql), "ALTER TABLE requests ADD COLUMN %s TEXT", kl_schema_late_columns[i]);
        if (kl_store_exec(s, sql, NULL, 0, NULL, err, errlen) < 0)
            return -1;
        s->late_columns[i] = 1;
    }
    if (column_exists(s, kl_schema_v8_table, kl_schema_v8_column) == 0) {
        snprintf(sql, sizeof(sql), "ALTER TABLE %s ADD COLUMN %s BIGINT", kl_schema_v8_table, kl_schema_v8_column);
        if (kl_store_exec(s, sql, NULL, 0, NULL, err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* A downgrade: an older gateway writing to a store a newer one migrated
 * leaves out what the newer schema added (a row never queued for export, an
 * answer's owner never recorded, a saved balance without its capacity)
 * without a word, so it is refused at start instead. The number goes into
 * the SQL: SQLite compares max(version), which has no affinity, with a
 * bound text parameter as text. */
int64_t kl_store_schema_version(struct kl_store *s, char *err, size_t errlen)
{
    cJSON *rows = NULL;
    if (kl_store_exec(s, "SELECT CAST(max(version) AS TEXT) AS v FROM schema_migrations", NULL, 0, &rows, err,
                      errlen) < 0)
        return -1;
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "v"));
    int64_t n = v ? strtoll(v, NULL, 10) : 0;
    cJSON_Delete(rows);
    return n;
}

int kl_store_refuse_newer(struct kl_store *s, char *err, size_t errlen)
{
    int64_t v = kl_store_schema_version(s, err, errlen);
    if (v < 0)
        return -1;
    if (v > KL_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "the store was migrated by a newer keyless (schema version %lld; this one knows up to %d): run that "
                 "version or a later one, or restore a copy of the store taken before the upgrade",
                 (long long)v, KL_SCHEMA_VERSION);
        return -1;
    }
    return 0;
}

void kl_store_close(struct kl_store *s)
{
    if (s)
        s->close(s);
}

enum kl_store_driver kl_store_driver(const struct kl_store *s)
{
    return s->driver;
}

void kl_store_set_export_queue(struct kl_store *s, bool on)
{
    s->export_queue = on;
}

int kl_store_write(struct kl_store *s, struct kl_rec *const *v, size_t n, char *err, size_t errlen)
{
    return n ? s->write(s, v, n, err, errlen) : 0;
}

int kl_store_claim_instance(struct kl_store *s, const char *instance, char *err, size_t errlen)
{
    return s->claim ? s->claim(s, instance, err, errlen) : 1;
}

void kl_store_keep(struct kl_store *s)
{
    if (s->keep)
        s->keep(s);
}

int kl_store_exec(struct kl_store *s, const char *sql, const char *const *params, size_t nparams,
                  cJSON **rows, char *err, size_t errlen)
{
    s->changed = 0;
    return s->exec(s, sql, params, nparams, rows, err, errlen);
}

int64_t kl_store_changed(const struct kl_store *s)
{
    return s->changed;
}

void kl_store_id_floor(char out[14], int64_t ms)
{
    uint64_t t = ms < 0 ? 0 : (uint64_t)ms > 0xffffffffffffull ? 0xffffffffffffull : (uint64_t)ms;
    kl_fmt_hex(out, t >> 16, 8);
    out[8] = '-';
    kl_fmt_hex(out + 9, t, 4);
    out[13] = '\0';
}

const char *kl_store_sql_day(const struct kl_store *s, const char *column)
{
    static _Thread_local char buf[160];
    if (s->driver == KL_STORE_SQLITE)
        snprintf(buf, sizeof(buf), "strftime('%%Y-%%m-%%d', %s / 1000, 'unixepoch')", column);
    else
        snprintf(buf, sizeof(buf), "to_char(to_timestamp(%s / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')", column);
    return buf;
}

static struct kl_value vtext(const char *s)
{
    return s ? (struct kl_value){.t = KL_V_TEXT, .s = s, .len = strlen(s)} : (struct kl_value){.t = KL_V_NULL};
}

static struct kl_value vint(int64_t i)
{
    return (struct kl_value){.t = KL_V_INT, .i = i};
}

static struct kl_value vopt(int64_t i)
{
    return i > 0 ? vint(i) : (struct kl_value){.t = KL_V_NULL};
}

static struct kl_value vblob(const char *s, size_t len)
{
    return s ? (struct kl_value){.t = KL_V_BLOB, .s = s, .len = len} : (struct kl_value){.t = KL_V_NULL};
}

/* n less a UTF-8 sequence cut short at the end of s[0..n): a capture is
 * cut at capture_max bytes, often inside a character. */
static size_t whole_chars(const unsigned char *s, size_t n)
{
    size_t i = n;
    while (i > 0 && n - i < 3 && (s[i - 1] & 0xc0) == 0x80)
        i--;
    if (i == 0 || s[i - 1] < 0xc0)
        return n;
    size_t need = s[i - 1] >= 0xf0 ? 4 : s[i - 1] >= 0xe0 ? 3 : 2;
    return n - (i - 1) < need ? i - 1 : n;
}

void kl_add_blob_text(cJSON *row, const char *name, const void *data, size_t len)
{
    size_t whole = whole_chars(data, len);
    char *text = malloc(len + 1);
    if (!text)
        abort();
    memcpy(text, data, whole);
    text[whole] = '\0';
    if (!memchr(data, '\0', len) && kl_utf8_clean_len(text) == whole) { /* UTF-8 text, the common case */
        cJSON_AddStringToObject(row, name, text);
        free(text);
        return;
    }
    /* Bytes that are no text (an AWS event stream's frames, a binary
     * upload): base64, said so in <name>_encoding, rather than cut at the
     * first NUL or mangled into U+FFFD */
    char *b64 = malloc(4 * ((len + 2) / 3) + 1);
    if (!b64)
        abort();
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)data, (int)len);
    cJSON_AddStringToObject(row, name, b64);
    char enc[64];
    snprintf(enc, sizeof(enc), "%s_encoding", name);
    cJSON_AddStringToObject(row, enc, "base64");
    free(b64);
    free(text);
}

void kl_rec_values(const struct kl_rec *r, struct kl_value *v)
{
    size_t i = 0;
    v[i++] = vtext(r->id);
    v[i++] = vtext(r->instance);
    v[i++] = vtext(kl_rec_state_name(r->state));
    v[i++] = vint(r->started_ms);
    v[i++] = vopt(r->first_byte_ms);
    v[i++] = vopt(r->ended_ms);
    v[i++] = r->latency_ms >= 0 && r->ended_ms ? vint(r->latency_ms) : (struct kl_value){.t = KL_V_NULL};
    v[i++] = r->ttft_ms >= 0 && r->first_byte_ms ? vint(r->ttft_ms) : (struct kl_value){.t = KL_V_NULL};
    v[i++] = vtext(r->login);
    v[i++] = vtext(r->display_name);
    v[i++] = vtext(r->node);
    v[i++] = vtext(r->stable_node_id);
    v[i++] = vtext(r->tags);
    v[i++] = vtext(r->identity_source);
    v[i++] = vtext(r->source_addr);
    v[i++] = vtext(r->method);
    v[i++] = vtext(r->path);
    v[i++] = vtext(r->endpoint);
    v[i++] = vtext(r->dialect);
    v[i++] = vtext(r->model_requested);
    v[i++] = vtext(r->model_served);
    v[i++] = vtext(r->provider);
    v[i++] = vint(r->stream);
    v[i++] = vint(r->status);
    v[i++] = vopt(r->upstream_status);
    v[i++] = vtext(r->error_class);
    v[i++] = vtext(r->error_message);
    v[i++] = vint(r->usage_known);
    v[i++] = vint(r->input_tokens);
    v[i++] = vint(r->output_tokens);
    v[i++] = vint(r->cache_read_tokens);
    v[i++] = vint(r->cache_write_tokens);
    v[i++] = vint(r->reasoning_tokens);
    v[i++] = vint(r->cost_known);
    v[i++] = r->cost_known ? vint(r->cost_nanodollars) : (struct kl_value){.t = KL_V_NULL};
    v[i++] = vint(r->bytes_in);
    v[i++] = vint(r->bytes_out);
    v[i++] = vint(r->tool_calls);
    v[i++] = vtext(r->tool_names);
    v[i++] = vtext(r->stop_reason);
    v[i++] = vtext(r->session_id);
    v[i++] = vtext(r->user_agent);
    v[i++] = vtext(r->request_headers);
    v[i++] = vtext(r->response_headers);
    v[i++] = vblob(r->request_body, r->request_body_len);
    v[i++] = vblob(r->response_body, r->response_body_len);
    v[i++] = vtext(r->attempts);
    v[i++] = vtext(r->guardrails);
    v[i++] = vtext(r->response_id);
}

/* Columns a request's final record leaves as its in-progress record wrote
 * them (see kl_update_map); record.c fills them identically in both. */
static bool fixed_at_begin(const char *column)
{
    static const char *const fixed[] = {"id", "instance", "started_at", "login", "session_id"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (strcmp(column, fixed[i]) == 0)
            return true;
    return false;
}

size_t kl_update_map(size_t *map)
{
    size_t k = 0;
    for (size_t i = 1; i < kl_store_ncolumns; i++)
        if (!fixed_at_begin(kl_store_columns[i]))
            map[k++] = i;
    map[k++] = 0; /* WHERE id = */
    return k;
}

char *kl_update_sql(const char *(*ph)(size_t i, char *buf))
{
    size_t map[64], n = kl_update_map(map), cap = 8192, len = 0;
    char *s = malloc(cap), buf[16];
    if (!s)
        abort();
    len += (size_t)snprintf(s + len, cap - len, "UPDATE requests SET ");
    for (size_t k = 0; k + 1 < n; k++)
        len += (size_t)snprintf(s + len, cap - len, "%s%s=%s", k ? "," : "", kl_store_columns[map[k]], ph(k, buf));
    snprintf(s + len, cap - len, " WHERE id=%s", ph(n - 1, buf));
    return s;
}

/* "INSERT INTO requests (columns) VALUES (placeholders)" into s. */
static size_t insert_prefix(char *s, size_t cap, const char *(*ph)(size_t i, char *buf))
{
    size_t len = 0;
    len += (size_t)snprintf(s + len, cap - len, "INSERT INTO requests (");
    for (size_t i = 0; i < kl_store_ncolumns; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? "," : "", kl_store_columns[i]);
    len += (size_t)snprintf(s + len, cap - len, ") VALUES (");
    char buf[16];
    for (size_t i = 0; i < kl_store_ncolumns; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? "," : "", ph(i, buf));
    len += (size_t)snprintf(s + len, cap - len, ")");
    return len;
}

char *kl_insert_sql(const char *(*ph)(size_t i, char *buf))
{
    size_t cap = 8192;
    char *s = malloc(cap);
    if (!s)
        abort();
    size_t len = insert_prefix(s, cap, ph);
    snprintf(s + len, cap - len, " ON CONFLICT (id) DO NOTHING");
    return s;
}

char *kl_upsert_sql(const char *(*ph)(size_t i, char *buf))
{
    size_t cap = 8192, len = 0;
    char *s = malloc(cap);
    if (!s)
        abort();
    len += insert_prefix(s, cap, ph);
    len += (size_t)snprintf(s + len, cap - len, " ON CONFLICT (id) DO UPDATE SET ");
    for (size_t i = 1; i < kl_store_ncolumns; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%s=excluded.%s", i > 1 ? "," : "",
                                kl_store_columns[i], kl_store_columns[i]);
    return s;
}
