/* The requests table, shared by both drivers; bodies are BLOB in SQLite and
 * BYTEA in PostgreSQL (they may hold any bytes). */
#include "record/schema.h"

#include <stddef.h>

#include "record/store.h"

const char *const kl_store_columns[] = {
    "id", "instance", "state", "started_at", "first_byte_at", "ended_at", "latency_ms", "ttft_ms",
    "login", "display_name", "node", "stable_node_id", "tags", "identity_source", "source_addr",
    "method", "path", "endpoint", "dialect", "model_requested", "model_served", "provider", "stream",
    "status", "upstream_status", "error_class", "error_message", "usage_known", "input_tokens",
    "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_known",
    "cost_nanodollars", "bytes_in", "bytes_out", "tool_calls", "tool_names", "stop_reason",
    "session_id", "user_agent", "request_headers", "response_headers", "request_body", "response_body",
    "attempts", "guardrails", "response_id",
};
const size_t kl_store_ncolumns = sizeof(kl_store_columns) / sizeof(kl_store_columns[0]);

/* Migration 2: quota balances, saved by the writer thread. */
const char *const kl_schema_v2 =
    "CREATE TABLE IF NOT EXISTS quota_buckets ("
    " name TEXT PRIMARY KEY, level BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
    /* several gateways on one PostgreSQL: the shared balance they lease from */
    "CREATE TABLE IF NOT EXISTS quota_pool ("
    " name TEXT PRIMARY KEY, level BIGINT NOT NULL, capacity BIGINT NOT NULL,"
    " rate_amount BIGINT NOT NULL, rate_period_ms BIGINT NOT NULL, updated_at BIGINT NOT NULL)";

/* Migration 1, with %s for the body column type. */
const char *const kl_schema_v1 =
    "CREATE TABLE IF NOT EXISTS requests ("
    " id TEXT PRIMARY KEY,"
    " instance TEXT,"
    " state TEXT NOT NULL,"
    " started_at BIGINT NOT NULL,"
    " first_byte_at BIGINT,"
    " ended_at BIGINT,"
    " latency_ms BIGINT,"
    " ttft_ms BIGINT,"
    " login TEXT, display_name TEXT, node TEXT, stable_node_id TEXT, tags TEXT,"
    " identity_source TEXT, source_addr TEXT,"
    " method TEXT, path TEXT, endpoint TEXT, dialect TEXT,"
    " model_requested TEXT, model_served TEXT, provider TEXT, stream BIGINT,"
    " status BIGINT, upstream_status BIGINT, error_class TEXT, error_message TEXT,"
    " usage_known BIGINT, input_tokens BIGINT, output_tokens BIGINT, cache_read_tokens BIGINT,"
    " cache_write_tokens BIGINT, reasoning_tokens BIGINT,"
    " cost_known BIGINT, cost_nanodollars BIGINT,"
    " bytes_in BIGINT, bytes_out BIGINT,"
    " tool_calls BIGINT, tool_names TEXT, stop_reason TEXT, session_id TEXT, user_agent TEXT,"
    " request_headers TEXT, response_headers TEXT, request_body %s, response_body %s);"
    "CREATE INDEX IF NOT EXISTS requests_session ON requests (session_id);";
/* Migration 1 also indexed (state, instance) for every row, started_at and
 * (login, started_at); migrations 3, 4 and 9 dropped or replaced those
 * indexes, so they are no longer created here. */

/* Migration 3: only in-progress rows are ever looked up by state (at start-up,
 * to mark them interrupted), so only they are indexed: a row leaves this
 * index when its final record arrives, instead of every row's state being
 * indexed for ever (one index write less per row, and none when the final
 * record updates the row's state). */
const char *const kl_schema_v3_drop = "DROP INDEX IF EXISTS requests_state";
const char *const kl_schema_v3_index =
    "CREATE INDEX IF NOT EXISTS requests_in_progress ON requests (instance) WHERE state = 'in_progress'";

/* Migration 4: no index on started_at. A request's id is a UUIDv7 whose
 * leading 48 bits are its start in Unix ms (the same clock reading as
 * started_at), so the primary key already orders rows by start time: time
 * ranges are also bounded by id (kl_store_id_floor) and use it. One B-tree
 * less to write per row (bench/recbench.c: 17.3-18.3 -> 15.8-16.7 us per
 * row over seven pairs). */
const char *const kl_schema_v4 = "DROP INDEX IF EXISTS requests_started";

/* Migration 5: the export queue. With an exporter configured, the writer
 * adds a final row's id here in the same transaction as the row, and the
 * exporter removes ids once their rows are in the bucket: the exact set of
 * records not exported yet, without an index or a column on requests (whose
 * every write the proxy's core pays for). No index on id: retention's
 * "not exported yet" test reads the queue's oldest id once per purge
 * (writer.c) instead of looking up every old row. seq never repeats (AUTOINCREMENT,
 * BIGSERIAL), so an object named by its first and last seq is never
 * overwritten by a later one. */
const char *const kl_schema_v5_sqlite =
    "CREATE TABLE IF NOT EXISTS export_queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL)";
const char *const kl_schema_v5_pg =
    "CREATE TABLE IF NOT EXISTS export_queue (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL)";

/* Migrations 6, 7 and 10 each add a column of text, NULL when there is
 * nothing to say: attempts, the providers a request failed over from
 * (route/failover.h), and guardrails, what the guardrails and hooks did to
 * it (guard/notes.h), both JSON; and response_id, the id of the stored
 * Responses answer a request received, whose owner it names
 * (authorize/chained.h). Only a missing one is added
 * (kl_store_add_late_columns); a reader of an older store leaves them out
 * (kl_store_has_column). */
const char *const kl_schema_late_columns[KL_SCHEMA_NLATE] = {"attempts", "guardrails", "response_id"};

/* Migration 8: the capacity a saved quota balance had (NULL in rows saved
 * before). A restart whose configuration raised it then refills the bucket
 * only to the old capacity for the time before the restart, as a live reload
 * does: a bucket that sat full had earned nothing more (admit/persist.c).
 * Added by kl_store_add_column, as SQLite has no ADD COLUMN IF NOT EXISTS. */
const char *const kl_schema_v8_table = "quota_buckets";
const char *const kl_schema_v8_column = "capacity";

/* Migration 9: a caller's records by (login, id), not (login, started_at).
 * A user's /api/requests is "login = ? ORDER BY id DESC LIMIT n": SQLite
 * found their rows by the old index and sorted all of them for each page
 * (1.3 s for a user with 500k records, on the one query thread everybody's
 * reports wait for); this index has them in that order already, and serves
 * a user's time range by id as the primary key does. Still one index. */
const char *const kl_schema_v9_drop = "DROP INDEX IF EXISTS requests_login";
const char *const kl_schema_v9_index = "CREATE INDEX IF NOT EXISTS requests_login_id ON requests (login, id)";

/* Migration 10: the stored Responses answers by id, for the owner of one a
 * request chains onto (authorize/chained.h); only the rows that have one are
 * indexed, so other requests write no more than before. */
const char *const kl_schema_v10 =
    "CREATE INDEX IF NOT EXISTS requests_response ON requests (response_id) WHERE response_id IS NOT NULL";
