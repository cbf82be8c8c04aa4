/* mockllm -- upstream LLM simulator for keyless tests and benchmarks.
 *
 * One process, N worker threads. Each worker owns an event_base and an evhttp
 * listening on the same port (SO_REUSEPORT). A request is routed by path suffix
 * to a dialect handler (openai.c, anthropic.c, gemini.c, bedrock.c; Vertex AI's
 * paths lead to the Anthropic and Gemini ones) which describes the answer as
 * an ml_reply; reply.c then sends it, applying the per-request
 * control directives (control.c): delays, resets, stalls, malformed events.
 * inspect.c keeps the request log and the counters behind /_mock/. */
#ifndef ML_MOCKLLM_H
#define ML_MOCKLLM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#define ML_DEFAULT_TEXT "Hello from mockllm."
#define ML_TOOL_ARGS "{\"path\":\"README.md\"}"
#define ML_TOOL_ARG_PIECES 3
#define ML_MAX_TOOLS 16
#define ML_LOG_CAP 1000
#define ML_LOG_BODY_CAP (4u * 1024u * 1024u)
#define ML_SIZE_MAX (512L * 1024 * 1024)

enum ml_dialect { ML_OPENAI, ML_ANTHROPIC, ML_GEMINI, ML_BEDROCK };

/* ---- control.c: per-request directives ---------------------------------- */

typedef struct ml_directives {
    long in, out, cache_read, cache_write, reasoning;
    char *text;             /* decoded reply text; NULL = ML_DEFAULT_TEXT */
    long size;              /* -1, or reply text length: text repeated */
    long events;            /* text deltas in a stream */
    char *model;            /* model the response claims; NULL = requested */
    char *tool_buf;         /* storage for tool[] */
    const char *tool[ML_MAX_TOOLS];
    int ntools;
    int tools_from_header;  /* header tools are never suppressed */
    int status;             /* 0 = success */
    int stream_error;       /* 0, or the status of an in-stream error */
    long stream_error_at;   /* the piece it replaces: -1 the middle (where malformed goes) */
    long retry_after;       /* -1 = no Retry-After header */
    long delay_headers_ms, delay_events_ms;
    long reset_after;       /* -1 = never */
    int malformed, stall;
} ml_directives;

void ml_directives_init(ml_directives *d);
void ml_directives_free(ml_directives *d);
int ml_directives_apply(ml_directives *d, const char *spec, size_t len, int from_header);
int ml_directives_scan_body(ml_directives *d, const char *body, size_t len);
const char *ml_directives_text(const ml_directives *d);
int ml_directives_expand(ml_directives *d);

/* ---- process-wide shared state ----------------------------------------- */

typedef struct ml_log ml_log;

typedef struct ml_shared {
    char **models;
    int nmodels;
    ml_log *log;            /* NULL with --no-log */
    atomic_long requests;
    atomic_long active_streams;
    atomic_long streams_completed;
    atomic_long streams_aborted;
} ml_shared;

typedef struct ml_worker {
    ml_shared *sh;
    struct event_base *base;
    struct evhttp *http;
    int fd;
    uint64_t rng;
    struct evbuffer *scratch;   /* one stream piece at a time */
    pthread_t thread;
} ml_worker;

/* ---- util.c ------------------------------------------------------------ */

extern const char ml_alnum[];
extern const char ml_hex[];

uint64_t ml_rand(ml_worker *w);
uint64_t ml_mix(uint64_t x);
int ml_hexval(char c);
size_t ml_percent_decode(const char *s, size_t n, char *out, size_t cap, int underscore_space);
void ml_make_id(uint64_t seed, char *out, size_t cap, const char *prefix,
                const char *alphabet, int n);
void ml_piece(const char *s, size_t len, long i, long n, size_t *start, size_t *plen);
void ml_add_json(struct evbuffer *b, cJSON *j);
void ml_add_sse(struct evbuffer *b, const char *event, cJSON *j, const char *sep);
void ml_json_escape(struct evbuffer *b, const char *s, size_t n);
const char *ml_method_name(enum evhttp_cmd_type t);
void ml_display_name(const char *id, char *out, size_t cap);
cJSON *ml_last_message_content(cJSON *body);
int ml_query_param(const char *query, const char *name, char *out, size_t cap);
cJSON *ml_obj_add_str(cJSON *o, const char *k, const char *v);
cJSON *ml_obj_add_num(cJSON *o, const char *k, double v);
cJSON *ml_obj_add_strn(cJSON *o, const char *k, const char *v, size_t n);
cJSON *ml_obj_add_bool(cJSON *o, const char *k, int v);
cJSON *ml_obj_add_null(cJSON *o, const char *k);
cJSON *ml_obj_add_obj(cJSON *o, const char *k);
cJSON *ml_obj_add_arr(cJSON *o, const char *k);

/* ---- reply.c: sending an answer, with delays and faults ------------------ */

typedef struct ml_reply ml_reply;

/* Appends stream piece i (0-based, i < npieces) to out. */
typedef void (*ml_piece_fn)(ml_reply *r, long i, struct evbuffer *out);

struct ml_reply {
    ml_worker *w;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;    /* set once we watch for close */
    ml_directives d;

    int status;
    const char *reason;
    struct evbuffer *body;              /* whole body, non-streams */

    int is_stream;
    long npieces;
    ml_piece_fn piece;
    const char *malformed_piece;
    ml_piece_fn malformed_fn;           /* binary framings: builds the bad piece */
    ml_piece_fn error_fn;               /* the dialect's in-stream error, if any */

    /* Facts the dialect generators share. */
    char *model;
    char id[80];
    char item_id[80];
    char previous_response_id[128];     /* Responses: echoed from the request, "" when none */
    char conversation[128];
    uint64_t seed;
    long created;
    int include_usage;                  /* OpenAI chat stream_options */
    int sse;                            /* Gemini alt=sse */
    const char *platform;               /* Claude's id tag: "", "bdrk_", "vrtx_" */
    long long t0_ms, first_ms;          /* monotonic: reply made, first piece */
    int has_text;
    const char *text;
    size_t text_len;
    long text_pieces;

    /* Progress. */
    long next;                          /* next dialect piece */
    long sent;                          /* pieces written, malformed included */
    long malformed_at;                  /* also where stream_error goes */
    int malformed_done;
    int phase;
    int polls;
    struct event *timer;
};

ml_reply *ml_reply_new(ml_worker *w, struct evhttp_request *req, ml_directives *d);
void ml_reply_header(ml_reply *r, const char *name, const char *value);
void ml_reply_json(ml_reply *r, int status, cJSON *json);
void ml_reply_stream(ml_reply *r, const char *content_type, long npieces,
                     ml_piece_fn fn, const char *malformed_piece);
void ml_reply_stream_hooks(ml_reply *r, ml_piece_fn malformed, ml_piece_fn error);
void ml_reply_start(ml_reply *r);
long long ml_now_ms(void);
void ml_reply_set_model(ml_reply *r, const char *requested);
const char *ml_status_reason(int status);

/* ---- router.c ---------------------------------------------------------- */

typedef struct ml_call {
    ml_worker *w;
    struct evhttp_request *req;
    const char *body;
    size_t body_len;
    ml_directives d;                    /* moved into the reply */
    char path_model[256];               /* Gemini, Bedrock, Vertex: {model} from the path */
    int alt_sse;
} ml_call;

void ml_on_request(struct evhttp_request *req, void *arg);
ml_reply *ml_begin(ml_call *c, enum ml_dialect dl, const char *model);
void ml_send_error(ml_call *c, enum ml_dialect dl, int status, const char *message);
cJSON *ml_parse_body(ml_call *c, enum ml_dialect dl);
void ml_drop_tools_after_result(ml_directives *d, int last_is_result);

/* ---- errors.c ---------------------------------------------------------- */

cJSON *ml_error_body(enum ml_dialect dl, int status, const char *message,
                     const char *request_id);
const char *ml_error_default_message(enum ml_dialect dl, int status);
const char *ml_bedrock_error_type(int status);
const char *ml_bedrock_exception_type(int status);

/* ---- dialects ---------------------------------------------------------- */

void ml_openai_chat(ml_call *c);
void ml_openai_responses(ml_call *c);
void ml_openai_embeddings(ml_call *c);
void ml_openai_models(ml_call *c, const char *one);
void ml_openai_request_id(ml_worker *w, char *out, size_t cap);

void ml_anthropic_messages(ml_call *c);
void ml_anthropic_count_tokens(ml_call *c);
void ml_anthropic_models(ml_call *c, const char *one);
void ml_anthropic_request_id(ml_worker *w, char *out, size_t cap);
void ml_anthropic_vertex(ml_call *c, int stream);
/* Shared with Anthropic on Bedrock (bedrock.c). */
int ml_anthropic_after_tool_result(cJSON *body);
void ml_anthropic_ids(ml_reply *r, const char *platform);
cJSON *ml_anthropic_message(const ml_reply *r, int done);
long ml_anthropic_npieces(const ml_reply *r);
cJSON *ml_anthropic_event(ml_reply *r, long i, const char **name);

void ml_bedrock_invoke(ml_call *c, int stream);
void ml_bedrock_converse(ml_call *c, int stream);
void ml_bedrock_count_tokens(ml_call *c);
void ml_bedrock_scan_count_body(ml_directives *d, const char *body, size_t len);
void ml_bedrock_request_id(ml_worker *w, char *out, size_t cap);

void ml_gemini_generate(ml_call *c, int stream);
void ml_gemini_count_tokens(ml_call *c);
void ml_gemini_models(ml_call *c, const char *one);

/* ---- inspect.c --------------------------------------------------------- */

ml_log *ml_log_new(void);
void ml_log_free(ml_log *log);
void ml_log_record(ml_log *log, struct evhttp_request *req, const char *body, size_t len);
void ml_inspect_handle(ml_worker *w, struct evhttp_request *req, const char *path,
                       const char *query);

#endif
