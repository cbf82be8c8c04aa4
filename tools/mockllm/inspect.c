/* Inspection API for tests: the request log and the stream counters.
 *
 * The log is the one shared mutable structure besides the counters: a ring
 * of the last ML_LOG_CAP requests behind a mutex. Each entry is rendered to
 * JSON when recorded (outside the lock), so reading the log is a copy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "mockllm.h"

typedef struct ml_log_entry {
    long seq;
    char *json;     /* the entry's fields after "seq", closing brace included */
    size_t len;
} ml_log_entry;

struct ml_log {
    pthread_mutex_t mu;
    long next_seq;
    size_t head;    /* oldest entry */
    size_t count;
    ml_log_entry ring[ML_LOG_CAP];
};

ml_log *ml_log_new(void)
{
    ml_log *log = calloc(1, sizeof(*log));

    if (log && pthread_mutex_init(&log->mu, NULL) != 0) {
        free(log);
        return NULL;
    }
    return log;
}

static void clear_locked(ml_log *log)
{
    size_t i;

    for (i = 0; i < log->count; i++)
        free(log->ring[(log->head + i) % ML_LOG_CAP].json);
    log->head = 0;
    log->count = 0;
}

void ml_log_free(ml_log *log)
{
    if (!log)
        return;
    clear_locked(log);
    pthread_mutex_destroy(&log->mu);
    free(log);
}

void ml_log_record(ml_log *log, struct evhttp_request *req, const char *body, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *hdrs = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;
    const char *uri = evhttp_request_get_uri(req);
    ml_log_entry e;
    int first = 1;

    if (!b)
        return;
    evbuffer_add_printf(b, "\"method\":\"%s\",\"path\":", ml_method_name(evhttp_request_get_command(req)));
    ml_json_escape(b, uri, strlen(uri));
    evbuffer_add(b, ",\"headers\":[", 12);
    TAILQ_FOREACH(kv, hdrs, next) {
        evbuffer_add(b, first ? "[" : ",[", first ? 1 : 2);
        ml_json_escape(b, kv->key, strlen(kv->key));
        evbuffer_add(b, ",", 1);
        ml_json_escape(b, kv->value, strlen(kv->value));
        evbuffer_add(b, "]", 1);
        first = 0;
    }
    evbuffer_add(b, "],\"body\":", 9);
    ml_json_escape(b, body, len < ML_LOG_BODY_CAP ? len : ML_LOG_BODY_CAP);
    evbuffer_add_printf(b, ",\"body_len\":%zu}", len);

    e.len = evbuffer_get_length(b);
    e.json = malloc(e.len);
    if (e.json)
        evbuffer_remove(b, e.json, e.len);
    evbuffer_free(b);
    if (!e.json)
        return;

    pthread_mutex_lock(&log->mu);
    e.seq = ++log->next_seq;
    if (log->count == ML_LOG_CAP) {
        free(log->ring[log->head].json);
        log->ring[log->head] = e;
        log->head = (log->head + 1) % ML_LOG_CAP;
    } else {
        log->ring[(log->head + log->count) % ML_LOG_CAP] = e;
        log->count++;
    }
    pthread_mutex_unlock(&log->mu);
}

static void reply(struct evhttp_request *req, int status, struct evbuffer *b)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, ml_status_reason(status), b);
}

static void list_requests(ml_log *log, struct evbuffer *out, long since)
{
    size_t i;
    int first = 1;

    evbuffer_add(out, "[", 1);
    if (log) {
        pthread_mutex_lock(&log->mu);
        for (i = 0; i < log->count; i++) {
            const ml_log_entry *e = &log->ring[(log->head + i) % ML_LOG_CAP];
            if (e->seq <= since)
                continue;
            evbuffer_add_printf(out, "%s{\"seq\":%ld,", first ? "" : ",", e->seq);
            evbuffer_add(out, e->json, e->len);
            first = 0;
        }
        pthread_mutex_unlock(&log->mu);
    }
    evbuffer_add(out, "]", 1);
}

void ml_inspect_handle(ml_worker *w, struct evhttp_request *req, const char *path,
                       const char *query)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    ml_shared *sh = w->sh;
    struct evbuffer *out = evbuffer_new();
    char since[32];

    if (!out) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    if (strcmp(path, "/_mock/requests") == 0 && cmd == EVHTTP_REQ_GET) {
        long s = ml_query_param(query, "since", since, sizeof(since)) ? strtol(since, NULL, 10) : 0;
        list_requests(sh->log, out, s);
        reply(req, 200, out);
    } else if (strcmp(path, "/_mock/requests") == 0 && cmd == EVHTTP_REQ_DELETE) {
        size_t n = 0;
        if (sh->log) {
            pthread_mutex_lock(&sh->log->mu);
            n = sh->log->count;
            clear_locked(sh->log);
            pthread_mutex_unlock(&sh->log->mu);
        }
        evbuffer_add_printf(out, "{\"cleared\":%zu}", n);
        reply(req, 200, out);
    } else if (strcmp(path, "/_mock/stats") == 0 && cmd == EVHTTP_REQ_GET) {
        evbuffer_add_printf(out,
                            "{\"requests\":%ld,\"active_streams\":%ld,\"streams_completed\":%ld,"
                            "\"streams_aborted\":%ld}",
                            atomic_load(&sh->requests), atomic_load(&sh->active_streams),
                            atomic_load(&sh->streams_completed), atomic_load(&sh->streams_aborted));
        reply(req, 200, out);
    } else {
        cJSON *e = ml_error_body(ML_OPENAI, 404, "Unknown /_mock endpoint", NULL);
        ml_add_json(out, e);
        cJSON_Delete(e);
        reply(req, 404, out);
    }
    evbuffer_free(out);
}
