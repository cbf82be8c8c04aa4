#include "record/record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "account/account.h"
#include "core/log.h"
#include "core/text.h"
#include "guard/notes.h"
#include "identity/identity.h"
#include "admit/persist.h"
#include "admit/quotas.h"
#include "listen/server.h"
#include "record/export.h"
#include "record/metrics.h"
#include "record/query.h"
#include "record/writer.h"
#include "route/failover.h"
#include "route/route.h"

static int64_t wall_at(const kl_exchange *ex, int64_t ns)
{
    return ns ? ex->wall_start_ms + (ns - ex->t_start_ns) / 1000000 : 0;
}

/* The most bytes of the caller's own free text (the path, the User-Agent)
 * a record keeps (KL_CALLER_TEXT_MAX), and of its captured request
 * headers. Up to a 64 KiB head of it, three times that once bytes that are
 * not UTF-8 are U+FFFD, would let one caller make each row of its own
 * hundreds of KB, and a page of /api/requests (1,000 rows) hundreds of MB
 * built in memory and held for a client that does not read it; the S3
 * exporter sizes its objects for 16 KiB of headers a row. */
#define KL_REC_HEADERS_MAX 8192

/* Request headers as "Name: value" lines, credentials replaced, the first
 * KL_REC_HEADERS_MAX bytes of them. */
static const char *captured_headers(kl_exchange *ex)
{
    size_t total = 1;
    for (size_t i = 0; i < ex->req.nheaders; i++)
        total += strlen(ex->req.headers[i].name) + strlen(ex->req.headers[i].value) + 16;
    char *out = kl_arena_alloc(&ex->arena, total);
    size_t o = 0;
    for (size_t i = 0; i < ex->req.nheaders; i++) {
        const struct kl_header *h = &ex->req.headers[i];
        o += (size_t)sprintf(out + o, "%s: %s\n", h->name, kl_route_credential_header(h->name) ? "[redacted]" : h->value);
    }
    return kl_text_prefix(&ex->arena, out, KL_REC_HEADERS_MAX);
}

void kl_record_response_headers(kl_exchange *ex, const char *headers)
{
    if (ex->cfg->store->captures == KL_CAPTURE_NONE || !headers)
        return;
    /* a copy: the provider's head lives in a buffer its connection reuses */
    char *out = kl_arena_alloc(&ex->arena, strlen(headers) + 1);
    size_t o = 0;
    for (const char *p = headers; *p; p++)
        if (*p != '\r')
            out[o++] = *p;
    out[o] = '\0';
    ex->response_headers = out;
}

/* A record of the exchange as it stands. An in-progress one carries only
 * what was known when the request was forwarded: written 100 ms in, it
 * would otherwise hold part of the answer (tokens that usage reports would
 * add up, an upstream error counted as a failure while the request runs). */
static void fill(kl_exchange *ex, struct kl_rec *r, enum kl_rec_state state)
{
    const struct kl_store_cfg *sc = ex->cfg->store;
    bool done = state == KL_REC_DONE;
    memset(r, 0, sizeof(*r));
    memcpy(r->id, ex->id, sizeof(r->id));
    r->state = state;
    r->instance = sc->instance;
    r->started_ms = ex->wall_start_ms;
    r->first_byte_ms = done ? wall_at(ex, ex->t_first_byte_ns) : 0;
    r->ended_ms = done ? wall_at(ex, ex->t_end_ns) : 0;
    r->latency_ms = done ? (ex->t_end_ns - ex->t_start_ns) / 1000000 : -1;
    r->ttft_ms = done && ex->t_first_byte_ns ? (ex->t_first_byte_ns - ex->t_start_ns) / 1000000 : -1;
    const struct kl_identity *id = ex->ident ? ex->ident : ex->refused_ident;
    if (id) {
        r->login = id->login;
        r->display_name = id->display_name;
        r->node = id->node;
        r->stable_node_id = id->stable_node_id;
        r->tags = kl_join(&ex->arena, id->tags, id->ntags, ',');
        r->identity_source = id->source;
    }
    char port[24];
    port[kl_fmt_u64(port, (uint64_t)(ex->peer_port > 0 ? ex->peer_port : 0))] = '\0';
    r->source_addr = ex->peer_ip ? kl_arena_concat(&ex->arena, ex->peer_ip, ":", port, NULL) : NULL;
    r->method = ex->req.method;
    r->path = kl_text_prefix(&ex->arena, ex->req.path, KL_CALLER_TEXT_MAX);
    r->endpoint = ex->ep ? ex->ep->name : NULL;
    static const char *const dialects[] = {
        [KL_DIALECT_OPENAI] = "openai", [KL_DIALECT_ANTHROPIC] = "anthropic", [KL_DIALECT_GEMINI] = "gemini",
        [KL_DIALECT_BEDROCK] = "bedrock"};
    r->dialect = dialects[ex->dialect];
    r->model_requested = ex->model_requested;
    r->provider = ex->provider ? ex->provider->id : NULL;
    r->stream = ex->stream;
    r->bytes_in = (int64_t)ex->bytes_in;
    r->user_agent = kl_text_prefix(&ex->arena, kl_http_header(&ex->req, "user-agent"), KL_CALLER_TEXT_MAX);
    if (sc->captures != KL_CAPTURE_NONE)
        r->request_headers = captured_headers(ex);
    /* with guardrails, a body they have not read (a request refused before
     * them: malformed, a model not granted) is not kept: what they would
     * have redacted or refused would be in the store as the caller wrote it */
    bool unread = ex->cfg->guardrails && !ex->body_scanned && !(ex->ep && !ex->ep->inference);
    if (sc->captures == KL_CAPTURE_FULL && ex->body && !ex->body_withheld && !unread) {
        r->request_body = ex->body;
        r->request_body_len = ex->body_len < sc->capture_max ? ex->body_len : sc->capture_max;
    }
    if (!done) {
        r->session_id = kl_account_session_id(ex);
        return;
    }
    r->status = ex->status;
    r->upstream_status = ex->upstream_status;
    r->error_class = ex->error_class ? kl_error_class_name(ex->error_class) : NULL;
    r->error_message = ex->error_message;
    r->bytes_out = (int64_t)ex->bytes_out;
    r->attempts = kl_failover_attempts_json(ex);
    r->guardrails = kl_guard_notes_json(ex);
    kl_account_fill_record(ex, r);
    if (sc->captures != KL_CAPTURE_NONE)
        r->response_headers = ex->response_headers;
}

static const char *or_dash(const char *s)
{
    return s ? s : "-";
}

/* What the access line keeps of a method, a login and a model once escaped:
 * with a path's 1 KiB and the other fields, a line stays within its 2 KiB */
#define KL_ACCESS_METHOD_MAX 32
#define KL_ACCESS_LOGIN_MAX 384
#define KL_ACCESS_MODEL_MAX 256

/* The access log line, built without printf (it is written once per
 * request):
 *   ID IP:PORT "METHOD PATH" STATUS ok|ERROR_CLASS login=L model=M provider=P in=N out=N 1.2ms */
static void access_log(kl_exchange *ex)
{
    struct kl_log_line l;
    l.len = 0;
    kl_log_line_str(&l, ex->id);
    kl_log_line_str(&l, " ");
    kl_log_line_str(&l, or_dash(ex->peer_ip));
    kl_log_line_str(&l, ":");
    kl_log_line_i64(&l, ex->peer_port);
    kl_log_line_str(&l, " \"");
    kl_log_line_str(&l, or_dash(kl_text_prefix(&ex->arena, ex->req.method, KL_ACCESS_METHOD_MAX)));
    kl_log_line_str(&l, " ");
    /* as the record keeps it, and no more than that once escaped: a long
     * path (or method, login, model) would push the fields after it
     * (status, login, model) off the line */
    kl_log_line_path(&l, or_dash(kl_text_prefix(&ex->arena, ex->req.path, KL_CALLER_TEXT_MAX)), KL_CALLER_TEXT_MAX);
    kl_log_line_str(&l, "\" ");
    kl_log_line_i64(&l, ex->status);
    kl_log_line_str(&l, " ");
    kl_log_line_str(&l, ex->error_class ? kl_error_class_name(ex->error_class) : "ok");
    kl_log_line_str(&l, " login=");
    kl_log_line_word(&l, ex->ident ? ex->ident->login : "-", KL_ACCESS_LOGIN_MAX);
    kl_log_line_str(&l, " model=");
    kl_log_line_word(&l, or_dash(ex->model_requested), KL_ACCESS_MODEL_MAX);
    kl_log_line_str(&l, " provider=");
    kl_log_line_str(&l, ex->provider ? ex->provider->id : "-");
    kl_log_line_str(&l, " in=");
    kl_log_line_u64(&l, ex->bytes_in);
    kl_log_line_str(&l, " out=");
    kl_log_line_u64(&l, ex->bytes_out);
    kl_log_line_str(&l, " ");
    kl_log_line_ms(&l, ex->t_end_ns - ex->t_start_ns);
    kl_log_line_str(&l, "ms");
    kl_server_access_log(ex->worker, &l);
}

/* The writer that takes this exchange's records; NULL when none are kept
 * (with zero retention the writer may still run, for quota balances). */
static struct kl_writer *records_writer(const kl_exchange *ex)
{
    const struct kl_store_cfg *sc = ex->cfg->store;
    return sc->zero_retention && !sc->exporter ? NULL : ex->worker->server->writer;
}

bool kl_record_admit(kl_exchange *ex)
{
    struct kl_writer *w = records_writer(ex);
    if (!w)
        return true;
    ex->rec_slots = kl_writer_admit(w) ? 1 : 0;
    return ex->rec_slots == 1;
}

/* An exchange's in-progress record is a safety net for a crash (and shows
 * what is running now). Most requests that end within KL_BEGIN_DELAY_MS of
 * being forwarded (errors, token counts, embeddings, cached answers) would
 * only have it overwritten, so it is written for those still running then:
 * one row write per quick request instead of two, and no record built for
 * nothing. The price: a kill -9 loses the marker of requests forwarded less
 * than that before. */
#define KL_BEGIN_DELAY_MS 100

static void due_unlink(kl_worker *w, kl_exchange *ex)
{
    if (ex->rec_prev)
        ex->rec_prev->rec_next = ex->rec_next;
    else
        w->rec_due_head = ex->rec_next;
    if (ex->rec_next)
        ex->rec_next->rec_prev = ex->rec_prev;
    else
        w->rec_due_tail = ex->rec_prev;
    ex->rec_prev = ex->rec_next = NULL;
    ex->rec_due_ns = 0;
}

static void arm_begin_timer(kl_worker *w, int64_t in_ns)
{
    if (in_ns < 0)
        in_ns = 0;
    struct timeval tv = {(time_t)(in_ns / 1000000000), (suseconds_t)(in_ns % 1000000000 / 1000)};
    evtimer_add(w->rec_timer, &tv);
}

/* The in-progress record now; none when the queue is full (the final
 * record keeps the slot it reserved on arrival). */
static void write_in_progress(kl_exchange *ex)
{
    struct kl_writer *w = records_writer(ex);
    if (!kl_writer_reserve(w, 1))
        return;
    struct kl_rec r;
    fill(ex, &r, KL_REC_IN_PROGRESS);
    kl_writer_push(w, kl_rec_pack(&r));
    ex->rec_begun = true;
}

/* Exchanges join the list as they are forwarded, each due a fixed delay
 * later, so the due ones are at its head. (Due times count from the
 * forwarding, not the arrival: a request held up by a hook or a WhoIs
 * lookup joins the list late, and its place must still be in due order.) */
static void on_begin_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kl_worker *w = arg;
    int64_t now = kl_now_ns();
    while (w->rec_due_head && w->rec_due_head->rec_due_ns <= now) {
        kl_exchange *ex = w->rec_due_head;
        due_unlink(w, ex);
        write_in_progress(ex);
    }
    if (w->rec_due_head)
        arm_begin_timer(w, w->rec_due_head->rec_due_ns - now);
}

void kl_record_begin(kl_exchange *ex)
{
    kl_worker *w = ex->worker;
    if (!records_writer(ex) || !ex->rec_slots || ex->rec_due_ns || ex->rec_begun)
        return;
    if (!w->rec_timer)
        w->rec_timer = evtimer_new(w->base, on_begin_due, w);
    ex->rec_prev = w->rec_due_tail;
    ex->rec_next = NULL;
    if (w->rec_due_tail)
        w->rec_due_tail->rec_next = ex;
    else
        w->rec_due_head = ex;
    w->rec_due_tail = ex;
    int64_t now = kl_now_ns();
    ex->rec_due_ns = now + (int64_t)KL_BEGIN_DELAY_MS * 1000000;
    if (!evtimer_pending(w->rec_timer, NULL))
        arm_begin_timer(w, w->rec_due_head->rec_due_ns - now);
}

void kl_record_worker_free(kl_worker *w)
{
    while (w->rec_due_head)
        due_unlink(w, w->rec_due_head);
    if (w->rec_timer)
        event_free(w->rec_timer);
    w->rec_timer = NULL;
}

void kl_record_exchange(kl_exchange *ex)
{
    struct kl_writer *w = records_writer(ex);
    if (ex->rec_due_ns)
        due_unlink(ex->worker, ex); /* ended before its in-progress record was due */
    /* An exchange that ended before its pipeline started (a body too large,
     * malformed or stalled, a client gone mid-body) has no slot yet. */
    if (w && !ex->rec_slots)
        ex->rec_slots = kl_writer_reserve(w, 1) ? 1 : 0;
    if (w && ex->rec_slots) {
        struct kl_rec r;
        fill(ex, &r, KL_REC_DONE);
        r.begun = ex->rec_begun;
        kl_writer_push(w, kl_rec_pack(&r));
        ex->rec_slots = 0;
    }
    kl_metrics_exchange(ex);
    if (ex->cfg->access_log && kl_log_enabled(KL_LOG_INFO))
        access_log(ex);
}

/* Is a store opened at all? Not with zero retention, unless quotas need it
 * for their balances. */
static bool store_opened(const kl_config *cfg)
{
    return !cfg->store->zero_retention || cfg->store->exporter || (cfg->quotas && cfg->quotas->n > 0);
}

const char *kl_record_restart_only(const kl_config *a, const kl_config *b)
{
    const struct kl_store_cfg *x = a->store, *y = b->store;
    if (store_opened(a) != store_opened(b))
        return store_opened(a) ? "whether a store is opened (zero retention, no quotas)"
                               : "whether a store is opened (quotas with zero retention)";
    if (x->driver != y->driver || strcmp(x->target, y->target) != 0)
        return "store.driver, store.path or store.url";
    if (strcmp(x->instance, y->instance) != 0)
        return "store.instance";
    if (x->queue != y->queue || x->batch != y->batch || x->queue_bytes != y->queue_bytes)
        return "store.queue, store.queue_bytes or store.batch";
    if (x->retention_ms != y->retention_ms || x->zero_retention != y->zero_retention ||
        x->purge_captures_only != y->purge_captures_only || x->require_export != y->require_export)
        return "database.retention";
    if (kl_export_cfg_differs(x->exporter, y->exporter))
        return "exporters";
    return NULL;
}

#define KL_MARK_INTERRUPTED                                                                                  \
    "UPDATE requests SET state = 'interrupted', ended_at = ?, "                                              \
    "error_class = COALESCE(error_class, 'interrupted'), "                                                   \
    "error_message = COALESCE(error_message, 'the gateway stopped while this request was in flight') "       \
    "WHERE state = 'in_progress' AND instance = ?"

/* Whether any gateway has ever exported from this PostgreSQL database: the
 * export queue's sequence has been used (kl_record_server_start uses it
 * once for a gateway with an exporter, before its first record). */
#define KL_PG_EXPORTED "pg_sequence_last_value(pg_get_serial_sequence('export_queue', 'seq')::regclass) IS NOT NULL"

/* This instance's in-progress rows become interrupted; with an exporter they
 * are queued at once, so another gateway's exporter never sends such a row
 * while it still says in progress, and none is marked but never queued:
 * one statement on PostgreSQL (a transaction there could be cut silently by
 * the driver's reconnect), a transaction on SQLite (UPDATE ... RETURNING
 * cannot feed an INSERT there). On PostgreSQL the rows marked may be another
 * gateway's (mark_gone_instances), and a gateway of the fleet configured
 * with an exporter may restart to find its rows marked by one without: so
 * there they are queued whenever some gateway ever exported from the
 * database, whatever this one's configuration. A database no gateway ever
 * exported from gets nothing queued (no queue that nobody drains). */
static int mark_interrupted(struct kl_store *s, const struct kl_store_cfg *sc, const char *instance, char *err,
                            size_t errlen)
{
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)kl_wall_ms());
    const char *params[] = {now, instance};
    if (kl_store_driver(s) == KL_STORE_POSTGRES)
        return kl_store_exec(s, "WITH u AS (" KL_MARK_INTERRUPTED " RETURNING id) "
                             "INSERT INTO export_queue (id) SELECT id FROM u WHERE (SELECT " KL_PG_EXPORTED ") "
                             "ORDER BY id", params, 2, NULL, err, errlen);
    if (!sc->exporter)
        return kl_store_exec(s, KL_MARK_INTERRUPTED, params, 2, NULL, err, errlen);
    const char *queue_params[] = {instance, now};
    char ignore[128];
    if (kl_store_exec(s, "BEGIN", NULL, 0, NULL, err, errlen) < 0)
        return -1;
    if (kl_store_exec(s, KL_MARK_INTERRUPTED, params, 2, NULL, err, errlen) < 0 ||
        kl_store_exec(s, "INSERT INTO export_queue (id) SELECT id FROM requests WHERE state = 'interrupted' AND "
                      "instance = ? AND ended_at = ? ORDER BY id", queue_params, 2, NULL, err, errlen) < 0 ||
        kl_store_exec(s, "COMMIT", NULL, 0, NULL, err, errlen) < 0) {
        kl_store_exec(s, "ROLLBACK", NULL, 0, NULL, ignore, sizeof(ignore));
        return -1;
    }
    return 0;
}

/* PostgreSQL: the requests in flight of gateways that are gone. A gateway
 * replaced rather than restarted (a new host or pod name) never starts
 * again under its name, so its in-progress rows would stay so for ever:
 * never exported, never purged by retention (which spares rows in
 * progress), shown as running. A name no session holds
 * (kl_store_claim_instance's lock) has no gateway: its rows are marked
 * interrupted while this session holds the name for the moment. A name
 * still held (a live gateway, or one whose host died and PostgreSQL has not
 * noticed yet) is left alone. SQLite has no such locks (one file, one
 * host): only this instance's rows are marked there. */
static void mark_gone_instances(struct kl_store *s, const struct kl_store_cfg *sc)
{
    if (kl_store_driver(s) != KL_STORE_POSTGRES)
        return;
    char err[256];
    cJSON *names = NULL;
    /* the partial index requests_in_progress serves this */
    if (kl_store_exec(s, "SELECT DISTINCT instance FROM requests WHERE state = 'in_progress' AND instance IS NOT NULL",
                      NULL, 0, &names, err, sizeof(err)) < 0) {
        kl_warn("record store: cannot look for requests in flight of gateways no longer running: %s", err);
        return;
    }
    const cJSON *row;
    cJSON_ArrayForEach(row, names) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(row, "instance"));
        if (!name || strcmp(name, sc->instance) == 0)
            continue;
        const char *params[] = {name};
        cJSON *got = NULL;
        if (kl_store_exec(s, "SELECT pg_try_advisory_lock(" KL_STORE_INSTANCE_LOCK ", hashtext(?)) AS held", params,
                          1, &got, err, sizeof(err)) < 0) {
            kl_warn("record store: cannot tell whether store.instance \"%s\" still runs: %s", name, err);
            continue;
        }
        const cJSON *held = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(got, 0), "held");
        bool gone = cJSON_IsString(held) && strcmp(held->valuestring, "t") == 0;
        cJSON_Delete(got);
        if (!gone)
            continue;
        if (mark_interrupted(s, sc, name, err, sizeof(err)) < 0)
            kl_warn("record store: cannot mark the requests in flight of store.instance \"%s\" interrupted: %s", name,
                    err);
        else if (kl_store_changed(s) > 0)
            kl_warn("record store: %lld requests in flight of store.instance \"%s\", under which no gateway runs now, "
                    "marked interrupted", (long long)kl_store_changed(s), name);
        char ignore[128];
        kl_store_exec(s, "SELECT pg_advisory_unlock(" KL_STORE_INSTANCE_LOCK ", hashtext(?))", params, 1, NULL, ignore,
                      sizeof(ignore));
    }
    cJSON_Delete(names);
}

int kl_record_server_start(kl_server *srv, kl_config *cfg, char *err, size_t errlen)
{
    const struct kl_store_cfg *sc = cfg->store;
    if (!store_opened(cfg)) {
        kl_info("database.retention.duration is \"0\": no request records are kept");
        return 0;
    }
    /* With zero retention and quotas the store still holds the balances
     * (and, on PostgreSQL, the shared pool): a restart must not refill
     * every budget. Nothing else is written to it. */
    if (sc->zero_retention && sc->exporter)
        kl_info("database.retention.duration is \"0\": request records are kept only until they are exported");
    else if (sc->zero_retention)
        kl_info("database.retention.duration is \"0\": no request records are kept; the store holds quota "
                "balances only");
    struct kl_store *s = kl_store_open(sc->driver, sc->target, true, err, errlen);
    if (!s)
        return -1;
    /* Two gateways under one name each take the other's requests in
     * flight for their own, cut short by a crash, when they start. Only
     * said, not refused: a session that died with its host holds the name
     * until PostgreSQL notices (hours, without TCP keepalives), and the
     * gateway must start after that crash all the same. */
    int claimed = kl_store_claim_instance(s, sc->instance, err, errlen);
    if (claimed == 0)
        kl_warn("store.instance \"%s\" is held by another session on this PostgreSQL database: another gateway "
                "runs under this name (give each its own; it is the host name by default), or one that died with "
                "its host has not been noticed yet. Its requests in flight are now marked interrupted",
                sc->instance);
    else if (claimed < 0)
        kl_warn("cannot hold store.instance \"%s\": %s", sc->instance, err);
    /* A database a gateway exports from says so before that gateway's first
     * record: one killed before it finished any request still has its rows
     * in flight queued by whichever gateway marks them (mark_interrupted). */
    if (sc->exporter && sc->driver == KL_STORE_POSTGRES &&
        kl_store_exec(s, "SELECT nextval(pg_get_serial_sequence('export_queue', 'seq')) WHERE NOT " KL_PG_EXPORTED,
                      NULL, 0, NULL, err, errlen) < 0) {
        kl_store_close(s);
        return -1;
    }
    /* Whatever this instance left in progress was cut short by a crash (and
     * is final now). */
    if (mark_interrupted(s, sc, sc->instance, err, errlen) < 0) {
        kl_store_close(s);
        return -1;
    }
    mark_gone_instances(s, sc);
    if (srv->buckets && kl_admit_load(s, srv->buckets, err, errlen) < 0) {
        kl_store_close(s);
        return -1;
    }
    /* require_export without an exporter: nothing is exported, so nothing
     * may go (kl_record_check_config warns) */
    struct kl_writer_opts o = {
        .queue = sc->queue, .queue_bytes = sc->queue_bytes, .batch = sc->batch,
        .retention_ms = sc->require_export && !sc->exporter ? 0 : sc->retention_ms,
        .purge_captures_only = sc->purge_captures_only, .spare_queued = sc->require_export,
        .tick = srv->buckets ? kl_admit_save : NULL, .tick_arg = srv->buckets,
    };
    /* A second connection for reads, so /api/ queries never wait behind a
     * write batch (and the writer never behind a report). */
    struct kl_store *r = kl_store_open(sc->driver, sc->target, false, err, errlen);
    if (!r) {
        kl_store_close(s);
        return -1;
    }
    /* On PostgreSQL, a third for quota leases: a request waiting for its
     * lease waits one round trip, never behind a caller's report (which may
     * run for the whole statement time-out). */
    struct kl_store *l = NULL;
    if (sc->driver == KL_STORE_POSTGRES && !(l = kl_store_open(sc->driver, sc->target, false, err, errlen))) {
        kl_store_close(r);
        kl_store_close(s);
        return -1;
    }
    /* And one for looking up whose a stored answer is (authorize/chained.h):
     * a request waits on it, never behind a report. */
    struct kl_store *a = kl_store_open(sc->driver, sc->target, false, err, errlen);
    if (!a) {
        kl_store_close(l);
        kl_store_close(r);
        kl_store_close(s);
        return -1;
    }
    struct kl_store *x = NULL;
    if (sc->exporter) {
        x = kl_store_open(sc->driver, sc->target, false, err, errlen);
        if (!x) {
            kl_store_close(a);
            kl_store_close(l);
            kl_store_close(r);
            kl_store_close(s);
            return -1;
        }
        kl_store_set_export_queue(s, true);
    }
    srv->writer = kl_writer_start(s, &o);
    srv->query = kl_query_start(r, "kl-query");
    srv->leases = l ? kl_query_start(l, "kl-leases") : NULL;
    srv->answers = kl_query_start(a, "kl-answers");
    if (x)
        srv->exporter = kl_exporter_start(x, sc);
    return 0;
}

void kl_record_server_reloaded(kl_server *srv, const kl_config *cfg)
{
    if (srv->exporter && cfg->store->exporter)
        kl_exporter_set_credentials(srv->exporter, cfg->store->exporter);
}

void kl_record_server_stop_queries(kl_server *srv)
{
    kl_query_stop(srv->query);
    srv->query = NULL;
    kl_query_stop(srv->leases);
    srv->leases = NULL;
    kl_query_stop(srv->answers);
    srv->answers = NULL;
}

void kl_record_server_stop(kl_server *srv)
{
    kl_record_server_stop_queries(srv);
    kl_exporter_stop(srv->exporter);
    srv->exporter = NULL;
    kl_writer_stop(srv->writer);
    srv->writer = NULL;
}
