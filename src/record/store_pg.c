/* PostgreSQL driver (libpq): several gateways share one record store. The
 * schema is migrated under an advisory lock so gateways starting together
 * do not race; records are written with prepared statements (insert for
 * in-progress rows, update for the final row of a request already on
 * record, upsert otherwise) inside a transaction per batch. */
#include "record/store_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libpq-fe.h>

#include "core/log.h"
#include "record/schema.h"

#define KL_PG_LOCK 0x6b65796c657373 /* "keyless" */
#define KL_PG_WAIT_MS 15000         /* the longest a statement's answer is waited for */
#define KL_PG_CONNECT_TIMEOUT "10"  /* seconds; the URL may say otherwise */
/* After a server that did not answer, calls fail at once for this long:
 * otherwise every lease queued behind the first would wait out a reconnect
 * of its own, one after another. */
#define KL_PG_DOWN_MS 5000
/* A name another session held (a twin, or the session of a gateway that
 * died with its host, until PostgreSQL notices) is asked for again this
 * often: a gateway that does not hold its name has its requests in flight
 * marked interrupted by any other that starts (record.c). */
#define KL_PG_CLAIM_AGAIN_MS 5000
/* The longest the idle writer's upkeep (pg_keep) waits on the server. */
#define KL_PG_KEEP_MS 1000
/* The server stops a statement itself a little before keyless gives up on
 * it: one waiting on a lock (not a dead server) is then rolled back there,
 * rather than left to commit after keyless answered 503 (a lease taken from
 * the pool for nobody) and to hold a backend meanwhile. */
#define KL_PG_STATEMENT_TIMEOUT "SET statement_timeout = '14s'"

struct pg_store {
    struct kl_store base;
    PGconn *conn;
    char *conninfo;
    bool prepared;
    bool refused;               /* the last statement failed on the data, not the server */
    bool timed_out;             /* ... got no answer in KL_PG_WAIT_MS */
    int64_t down_until;         /* mono_ms: after a time-out or a failed reconnect, calls fail at once until then */
    int64_t wait_ms;            /* how long an answer is waited for: KL_PG_WAIT_MS, longer for migrations */
    char *instance;             /* the instance name this connection holds (pg_claim), or NULL */
    bool held;                  /* ... and whether this session holds it now */
    int64_t claim_again;        /* mono_ms: when a name another session held is asked for again (0: not asked yet) */
    int64_t keep_again;         /* mono_ms: when pg_keep, having failed to reopen the session, tries again */
    size_t update_map[64], nupdate;
};

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The result of the statement just sent (sent: what PQsend* returned),
 * waited for at most KL_PG_WAIT_MS. A server that stops answering without
 * closing (a frozen host, a partition that drops packets: the kernel there
 * may even acknowledge what is sent) would otherwise hold this thread, and
 * with it leases, queries and shutdown, for ever. On time out the socket is
 * shut, so libpq takes the connection as broken and ensure() opens another
 * (within connect_timeout). NULL when no result came: pg_error says why. */
static PGresult *result_of(struct pg_store *p, int sent)
{
    PGconn *c = p->conn;
    p->timed_out = false;
    if (!sent)
        return NULL;
    int64_t deadline = mono_ms() + p->wait_ms;
    for (;;) {
        int f = PQflush(c); /* non-blocking: 1 while some of the statement is still to go */
        if (f < 0 || (f == 0 && !PQisBusy(c)))
            break;
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            p->timed_out = true;
            shutdown(PQsocket(c), SHUT_RDWR);
            break;
        }
        /* short waits, reading each time: over TLS an answer may already
         * sit decrypted in OpenSSL's buffer, which poll does not see */
        struct pollfd pfd = {PQsocket(c), (short)(POLLIN | (f ? POLLOUT : 0)), 0};
        if (poll(&pfd, 1, left < 50 ? (int)left : 50) < 0 && errno != EINTR)
            break;
        if (!PQconsumeInput(c))
            break;
    }
    if (p->timed_out)
        p->down_until = mono_ms() + KL_PG_DOWN_MS;
    PGresult *last = NULL, *r;
    while ((r = PQgetResult(c))) {
        PQclear(last);
        last = r;
    }
    return last;
}

static const char *pg_error(const struct pg_store *p)
{
    return p->timed_out ? "no answer in time (15 s; the connection is dropped, the next statement opens another)"
                        : PQerrorMessage(p->conn);
}

static const char *dollar(size_t i, char *buf)
{
    snprintf(buf, 16, "$%zu", i + 1);
    return buf;
}

static char *strdup_or_die(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static void pg_close(struct kl_store *s)
{
    struct pg_store *p = (struct pg_store *)s;
    if (p->conn)
        PQfinish(p->conn);
    free(p->conninfo);
    free(p->instance);
    free(p);
}

static int cmd(struct pg_store *p, const char *sql, char *err, size_t errlen)
{
    PGresult *r = result_of(p, PQsendQuery(p->conn, sql));
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, errlen, "postgres: %s", pg_error(p));
    PQclear(r);
    return ok ? 0 : -1;
}

/* Take the advisory lock on p->instance for this session: 1 held, 0 held
 * by another session, -1 on error. */
static int lock_instance(struct pg_store *p, char *err, size_t errlen)
{
    const char *const params[] = {p->instance};
    PGresult *r = result_of(p, PQsendQueryParams(p->conn, "SELECT pg_try_advisory_lock(" KL_STORE_INSTANCE_LOCK
                                                 ", hashtext($1))", 1, NULL, params, NULL, NULL, 0));
    int held = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        held = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    else
        snprintf(err, errlen, "postgres: %s", pg_error(p));
    PQclear(r);
    p->held = held == 1;
    p->claim_again = mono_ms() + KL_PG_CLAIM_AGAIN_MS;
    return held;
}

/* Is the session still open? A server that closed an idle session
 * (restart, pg_terminate_backend) has said so only in the socket: read
 * what is there first (libpq notices the close only when it reads); twice:
 * the termination notice, then the end of the stream. */
static bool session_open(struct pg_store *p)
{
    return PQstatus(p->conn) == CONNECTION_OK && PQconsumeInput(p->conn) && PQconsumeInput(p->conn) &&
           PQstatus(p->conn) == CONNECTION_OK;
}

/* A name another session held is asked for again once it is time. */
static void claim_again(struct pg_store *p)
{
    char ignore[64];
    if (p->instance && !p->held && p->claim_again && mono_ms() >= p->claim_again &&
        lock_instance(p, ignore, sizeof(ignore)) == 1)
        kl_info("store.instance \"%s\" is held by this gateway now", p->instance);
}

/* What a session just opened again needs: the settings, and the instance's
 * lock, which went with the old session; taken meanwhile by a gateway
 * started with the same name, it says so (records still go). */
static void reopened(struct pg_store *p)
{
    PQsetnonblocking(p->conn, 1);
    char ignore[64];
    cmd(p, KL_PG_STATEMENT_TIMEOUT, ignore, sizeof(ignore));
    if (p->instance && lock_instance(p, ignore, sizeof(ignore)) == 0)
        kl_warn("store.instance \"%s\" was taken by another gateway while this one reconnected to PostgreSQL: "
                "a restart of either marks the other's requests in flight interrupted", p->instance);
}

/* A dropped connection (server restart) is reopened once per call, so the
 * call after a server closed an idle session goes to a new connection
 * instead of failing (session_open). */
static int ensure(struct pg_store *p, char *err, size_t errlen)
{
    if (mono_ms() < p->down_until) {
        snprintf(err, errlen, "postgres: the server did not answer a moment ago; not asked again for 5 s");
        return -1;
    }
    if (session_open(p)) {
        claim_again(p);
        return 0;
    }
    PQreset(p->conn);
    p->prepared = false;
    if (PQstatus(p->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "postgres: %s", PQerrorMessage(p->conn));
        p->down_until = mono_ms() + KL_PG_DOWN_MS;
        return -1;
    }
    reopened(p);
    return 0;
}

static int pg_claim(struct kl_store *s, const char *instance, char *err, size_t errlen)
{
    struct pg_store *p = (struct pg_store *)s;
    free(p->instance);
    p->instance = strdup_or_die(instance);
    return ensure(p, err, errlen) < 0 ? -1 : lock_instance(p, err, errlen);
}

/* Reopen the session without blocking past ms: true once it is open. One
 * not open by then is left half-open, for the next statement's PQreset
 * (ensure) to start again. */
static bool reopen_within(struct pg_store *p, int64_t ms)
{
    if (!PQresetStart(p->conn))
        return false;
    int64_t deadline = mono_ms() + ms;
    /* as libpq says: first wait until the socket takes what is to be sent */
    for (PostgresPollingStatusType st = PGRES_POLLING_WRITING;;) {
        if (st == PGRES_POLLING_OK)
            return true;
        int64_t left = deadline - mono_ms();
        if (st == PGRES_POLLING_FAILED || left <= 0)
            return false;
        struct pollfd pfd = {PQsocket(p->conn), (short)(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            return false;
        if (pfd.revents)
            st = PQresetPoll(p->conn);
    }
}

/* Idle: only a session that holds (or asks for) a name needs replacing at
 * once. The writer calls this every idle second, so nothing here waits
 * longer than KL_PG_KEEP_MS (not connect_timeout, not KL_PG_WAIT_MS): a
 * server gone silent would otherwise hold the writer, and with it the
 * gateway's shutdown, that long while there is nothing to write. A session
 * not reopened in time is left to the next statement (ensure), and tried
 * here again KL_PG_DOWN_MS later. */
static void pg_keep(struct kl_store *s)
{
    struct pg_store *p = (struct pg_store *)s;
    if (!p->instance || mono_ms() < p->down_until || mono_ms() < p->keep_again)
        return;
    int64_t wait = p->wait_ms;
    p->wait_ms = KL_PG_KEEP_MS;
    if (session_open(p)) {
        claim_again(p);
    } else {
        p->prepared = false;
        if (reopen_within(p, KL_PG_KEEP_MS))
            reopened(p);
        else
            p->keep_again = mono_ms() + KL_PG_DOWN_MS;
    }
    p->wait_ms = wait;
}

static int prepare_one(struct pg_store *p, const char *name, char *sql, size_t nparams, char *err, size_t errlen)
{
    PGresult *r = result_of(p, PQsendPrepare(p->conn, name, sql, (int)nparams, NULL));
    free(sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "postgres: preparing %s: %s", name, pg_error(p));
    PQclear(r);
    return ok ? 0 : -1;
}

static int prepare(struct pg_store *p, char *err, size_t errlen)
{
    if (p->prepared)
        return 0;
    p->nupdate = kl_update_map(p->update_map);
    char ignore[64];
    cmd(p, "DEALLOCATE ALL", ignore, sizeof(ignore)); /* what an attempt that failed halfway left */
    p->prepared = prepare_one(p, "kl_upsert", kl_upsert_sql(dollar), kl_store_ncolumns, err, errlen) == 0 &&
                  prepare_one(p, "kl_insert", kl_insert_sql(dollar), kl_store_ncolumns, err, errlen) == 0 &&
                  prepare_one(p, "kl_update", kl_update_sql(dollar), p->nupdate, err, errlen) == 0 &&
                  prepare_one(p, "kl_enqueue", strdup_or_die("INSERT INTO export_queue (id) VALUES ($1)"), 1, err,
                              errlen) == 0;
    return p->prepared ? 0 : -1;
}

/* libpq's text parameters for a record's values. */
struct pg_params {
    const char *v[64];
    int len[64], fmt[64];
    char nums[64][24];
};

static void param(struct pg_params *pp, size_t i, const struct kl_value *v)
{
    pp->fmt[i] = 0;
    pp->len[i] = 0;
    switch (v->t) {
    case KL_V_NULL:
        pp->v[i] = NULL;
        break;
    case KL_V_INT:
        snprintf(pp->nums[i], sizeof(pp->nums[i]), "%lld", (long long)v->i);
        pp->v[i] = pp->nums[i];
        break;
    case KL_V_TEXT:
        pp->v[i] = v->s;
        break;
    case KL_V_BLOB:
        pp->v[i] = v->s;
        pp->len[i] = (int)v->len;
        pp->fmt[i] = 1; /* binary bytea */
        break;
    }
}

/* Run a prepared statement; the number of rows it changed, or -1. */
static long exec_prepared(struct pg_store *p, const char *name, const struct pg_params *pp, size_t n, char *err,
                          size_t errlen)
{
    PGresult *r = result_of(p, PQsendQueryPrepared(p->conn, name, (int)n, pp->v, pp->len, pp->fmt, 0));
    long changed = -1;
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        changed = strtol(PQcmdTuples(r), NULL, 10);
    } else {
        snprintf(err, errlen, "postgres: %s: %s", name, pg_error(p));
        /* SQLSTATE classes 22 (data exception), 23 (integrity) and 54
         * (a limit, as an index entry too large): this row, not the server;
         * anything else may pass. A row taken for a passing fault would
         * hold up every record behind it. */
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        p->refused = state && (!strncmp(state, "22", 2) || !strncmp(state, "23", 2) || !strncmp(state, "54", 2));
    }
    PQclear(r);
    return changed;
}

/* A final row goes on the export queue with it, when an exporter runs. */
static int enqueue(struct pg_store *p, const struct kl_rec *rec, struct pg_params *pp, char *err, size_t errlen)
{
    if (!p->base.export_queue || rec->state == KL_REC_IN_PROGRESS)
        return 0;
    pp->v[0] = rec->id;
    pp->len[0] = 0;
    pp->fmt[0] = 0;
    return exec_prepared(p, "kl_enqueue", pp, 1, err, errlen) < 0 ? -1 : 0;
}

static int write_one(struct pg_store *p, const struct kl_rec *rec, struct pg_params *pp, char *err, size_t errlen)
{
    struct kl_value vals[64];
    kl_rec_values(rec, vals);
    if (rec->state == KL_REC_DONE && rec->begun) {
        for (size_t k = 0; k < p->nupdate; k++)
            param(pp, k, &vals[p->update_map[k]]);
        long changed = exec_prepared(p, "kl_update", pp, p->nupdate, err, errlen);
        if (changed != 0)
            return changed < 0 ? -1 : enqueue(p, rec, pp, err, errlen);
        /* the in-progress row is not there after all: write the whole row */
    }
    for (size_t i = 0; i < kl_store_ncolumns; i++)
        param(pp, i, &vals[i]);
    const char *st = rec->state == KL_REC_IN_PROGRESS ? "kl_insert" : "kl_upsert";
    if (exec_prepared(p, st, pp, kl_store_ncolumns, err, errlen) < 0)
        return -1;
    return enqueue(p, rec, pp, err, errlen);
}

static int pg_write(struct kl_store *s, struct kl_rec *const *v, size_t n, char *err, size_t errlen)
{
    struct pg_store *p = (struct pg_store *)s;
    if (ensure(p, err, errlen) < 0 || prepare(p, err, errlen) < 0 || cmd(p, "BEGIN", err, errlen) < 0)
        return -1;
    struct pg_params pp;
    p->refused = false;
    for (size_t k = 0; k < n; k++) {
        if (write_one(p, v[k], &pp, err, errlen) < 0) {
            char ignore[64];
            cmd(p, "ROLLBACK", ignore, sizeof(ignore));
            return p->refused ? KL_STORE_REFUSED : -1;
        }
    }
    return cmd(p, "COMMIT", err, errlen);
}

/* '?' placeholders become $1, $2, ... (queries never contain a literal '?'). */
static char *dollarize(const char *sql)
{
    size_t n = strlen(sql), q = 0;
    for (size_t i = 0; i < n; i++)
        q += sql[i] == '?';
    char *out = malloc(n + q * 4 + 1);
    if (!out)
        abort();
    size_t o = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        if (sql[i] == '?')
            o += (size_t)sprintf(out + o, "$%zu", ++k);
        else
            out[o++] = sql[i];
    }
    out[o] = '\0';
    return out;
}

static bool is_int_type(Oid t)
{
    return t == 20 || t == 21 || t == 23 || t == 1700; /* int8, int2, int4, numeric */
}

static void add_bytea(cJSON *row, const char *name, const char *hex)
{
    size_t n = 0;
    unsigned char *b = PQunescapeBytea((const unsigned char *)hex, &n);
    if (!b)
        abort();
    kl_add_blob_text(row, name, b, n);
    PQfreemem(b);
}

static int pg_exec(struct kl_store *s, const char *sql, const char *const *params, size_t nparams,
                   cJSON **rows, char *err, size_t errlen)
{
    struct pg_store *p = (struct pg_store *)s;
    if (ensure(p, err, errlen) < 0)
        return -1;
    char *q = dollarize(sql);
    PGresult *r = result_of(p, PQsendQueryParams(p->conn, q, (int)nparams, NULL, params, NULL, NULL, 0));
    free(q);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "postgres: %s", pg_error(p));
        PQclear(r);
        return -1;
    }
    if (rows) {
        cJSON *out = cJSON_CreateArray();
        int nr = PQntuples(r), nf = PQnfields(r);
        for (int i = 0; i < nr; i++) {
            cJSON *row = cJSON_CreateObject();
            for (int c = 0; c < nf; c++) {
                const char *name = PQfname(r, c);
                if (PQgetisnull(r, i, c))
                    cJSON_AddNullToObject(row, name);
                else if (is_int_type(PQftype(r, c)))
                    cJSON_AddNumberToObject(row, name, strtod(PQgetvalue(r, i, c), NULL));
                else if (PQftype(r, c) == 17) /* bytea, which text results spell in hex */
                    add_bytea(row, name, PQgetvalue(r, i, c));
                else
                    cJSON_AddStringToObject(row, name, PQgetvalue(r, i, c));
            }
            cJSON_AddItemToArray(out, row);
        }
        *rows = out;
    }
    p->base.changed = strtoll(PQcmdTuples(r), NULL, 10); /* "" for a SELECT */
    PQclear(r);
    return 0;
}

/* Run under a long deadline and no statement_timeout: a schema change on a
 * large store (an index) may take minutes, and waiting for another gateway
 * that migrates is right. */
static int migrate_long(struct pg_store *p, char *err, size_t errlen);

static int migrate(struct pg_store *p, char *err, size_t errlen)
{
    char ignore[64];
    p->wait_ms = 10 * 60 * 1000;
    cmd(p, "SET statement_timeout = 0", ignore, sizeof(ignore));
    int rc = migrate_long(p, err, errlen);
    p->wait_ms = KL_PG_WAIT_MS;
    cmd(p, KL_PG_STATEMENT_TIMEOUT, ignore, sizeof(ignore));
    return rc;
}

/* The migrations in three transactions, none holding an exclusive lock on
 * requests for long: other gateways go on reading and writing it while one
 * migrates (a rolling upgrade). In one transaction, the ACCESS EXCLUSIVE
 * lock of ADD COLUMN (or of a DROP INDEX) was held for as long as the
 * index builds after it (13-20 s over 2M rows): every other gateway's
 * /api/ reads and stored-answer lookups timed out and its writes waited.
 * Tables and columns first (quick: a nullable column without a default is
 * only a catalog change), then the indexes (a SHARE lock: reads go on,
 * writes wait for the build), then the old indexes' drops with the
 * versions. Every statement is idempotent, and the versions are recorded
 * last: a start cut short between two transactions is completed by the
 * next. (CREATE INDEX CONCURRENTLY would let writes go on too, but it waits
 * for every open snapshot, among them a starting gateway's that waits in
 * pg_advisory_lock for this one: a deadlock.) */
static int migrate_steps(struct pg_store *p, const char *v1, char *err, size_t errlen)
{
    /* tables and columns */
    if (cmd(p, "BEGIN", err, errlen) < 0 || cmd(p, v1, err, errlen) < 0 || cmd(p, kl_schema_v2, err, errlen) < 0 ||
        cmd(p, kl_schema_v5_pg, err, errlen) < 0 || kl_store_add_late_columns(&p->base, err, errlen) < 0 ||
        cmd(p, "COMMIT", err, errlen) < 0)
        return -1;
    /* indexes */
    if (cmd(p, "BEGIN", err, errlen) < 0 || cmd(p, kl_schema_v3_index, err, errlen) < 0 ||
        cmd(p, kl_schema_v9_index, err, errlen) < 0 || cmd(p, kl_schema_v10, err, errlen) < 0 ||
        cmd(p, "COMMIT", err, errlen) < 0)
        return -1;
    /* the indexes they replace, and the versions */
    if (cmd(p, "BEGIN", err, errlen) < 0 || cmd(p, kl_schema_v3_drop, err, errlen) < 0 ||
        cmd(p, kl_schema_v4, err, errlen) < 0 || cmd(p, kl_schema_v9_drop, err, errlen) < 0 ||
        cmd(p, "INSERT INTO schema_migrations VALUES (1, (extract(epoch from now()) * 1000)::bigint), "
               "(2, (extract(epoch from now()) * 1000)::bigint), "
               "(3, (extract(epoch from now()) * 1000)::bigint), "
               "(4, (extract(epoch from now()) * 1000)::bigint), "
               "(5, (extract(epoch from now()) * 1000)::bigint), "
               "(6, (extract(epoch from now()) * 1000)::bigint), "
               "(7, (extract(epoch from now()) * 1000)::bigint), "
               "(8, (extract(epoch from now()) * 1000)::bigint), "
               "(9, (extract(epoch from now()) * 1000)::bigint), "
               "(10, (extract(epoch from now()) * 1000)::bigint) ON CONFLICT DO NOTHING", err, errlen) < 0 ||
        cmd(p, "COMMIT", err, errlen) < 0)
        return -1;
    return 0;
}

static int migrate_long(struct pg_store *p, char *err, size_t errlen)
{
    char lock[96], sql[4096];
    snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%lld)", (long long)KL_PG_LOCK);
    if (cmd(p, lock, err, errlen) < 0)
        return -1;
    snprintf(sql, sizeof(sql), kl_schema_v1, "BYTEA", "BYTEA");
    int rc = 0;
    if (cmd(p, "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT)",
            err, errlen) < 0) {
        rc = -1;
    } else if (kl_store_refuse_newer(&p->base, err, errlen) < 0) {
        rc = -1;
    } else if (kl_store_schema_version(&p->base, err, errlen) >= KL_SCHEMA_VERSION) {
        /* up to date: no statement that would lock requests (CREATE INDEX IF
         * NOT EXISTS takes a SHARE lock before it looks), so a gateway that
         * starts never holds up the others' writes */
    } else if (migrate_steps(p, sql, err, errlen) < 0) {
        char ignore[64];
        cmd(p, "ROLLBACK", ignore, sizeof(ignore));
        rc = -1;
    }
    snprintf(lock, sizeof(lock), "SELECT pg_advisory_unlock(%lld)", (long long)KL_PG_LOCK);
    char ignore[64];
    cmd(p, lock, ignore, sizeof(ignore));
    return rc;
}

struct kl_store *kl_pg_open(const char *url, bool do_migrate, char *err, size_t errlen)
{
    struct pg_store *p = calloc(1, sizeof(*p));
    if (!p)
        abort();
    p->base = (struct kl_store){.driver = KL_STORE_POSTGRES, .close = pg_close, .write = pg_write, .exec = pg_exec,
                                .claim = pg_claim, .keep = pg_keep};
    p->wait_ms = KL_PG_WAIT_MS;
    /* connect_timeout before the URL, which may set its own: a server that
     * accepts and never answers would hold the connect (PQreset's too) */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const vals[] = {KL_PG_CONNECT_TIMEOUT, url, NULL};
    p->conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(p->conn) != CONNECTION_OK) {
        /* libpq's message never echoes the password */
        snprintf(err, errlen, "postgres: cannot connect: %s", PQerrorMessage(p->conn));
        pg_close(&p->base);
        return NULL;
    }
    PQsetnonblocking(p->conn, 1); /* statements are sent and waited for within KL_PG_WAIT_MS (result_of) */
    if ((cmd(p, "SET client_min_messages = warning", err, errlen) < 0 ||
         cmd(p, KL_PG_STATEMENT_TIMEOUT, err, errlen) < 0) && p->timed_out) {
        pg_close(&p->base);
        return NULL;
    }
    if (do_migrate && migrate(p, err, errlen) < 0) {
        pg_close(&p->base);
        return NULL;
    }
    return &p->base;
}
