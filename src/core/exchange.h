/* The exchange: one request and everything the pipeline learns about it.
 * Owned by the worker that accepted it; every allocation it makes comes from
 * its arena and ends with it. Each stage fills in its own part (see
 * src/pipeline.c for the order); stage-private state hangs off the opaque
 * pointers at the end. */
#ifndef KL_EXCHANGE_H
#define KL_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/arena.h"
#include "core/config.h"
#include "core/worker.h"
#include "dialect/dialect.h"
#include "listen/http.h"

struct kl_conn;
struct kl_upstream_xfer;
struct kl_h1_xfer;
struct kl_account;
struct kl_identity;
struct kl_whois_entry;
struct kl_grant_set;
struct kl_query_job;
struct kl_admission;
struct kl_attempt;
struct event;
struct kl_guard_run;
struct kl_guard_note;
struct kl_hook_ref;
struct kl_tool_rules;

/* Why an exchange ended other than with the provider's own answer. */
enum kl_error_class {
    KL_EC_NONE = 0,
    KL_EC_BAD_REQUEST,          /* malformed JSON, missing model, bad HTTP */
    KL_EC_NOT_FOUND,            /* unknown path or model */
    KL_EC_METHOD,
    KL_EC_TOO_LARGE,
    KL_EC_UNAUTHENTICATED,
    KL_EC_FORBIDDEN,
    KL_EC_RATE_LIMITED,
    KL_EC_QUOTA,
    KL_EC_UNAVAILABLE,          /* gateway cannot serve now (no key, queue full, identity down) */
    KL_EC_UPSTREAM_UNREACHABLE,
    KL_EC_UPSTREAM_RESET,
    KL_EC_UPSTREAM_TIMEOUT,
    KL_EC_UPSTREAM_ERROR,       /* provider answered with an error status */
    KL_EC_CLIENT_CLOSED,
    KL_EC_STREAM_INTERRUPTED,   /* upstream failed after the response began */
    KL_EC_SHUTDOWN,
    KL_EC_INTERNAL,
    KL_EC_BLOCKED,              /* a guardrail hook said block */
    KL_EC_PROVIDER_DOWN,        /* a provider cooling down after failures was passed over (route/health.h) */
    KL_EC_CLIENT_TIMEOUT,       /* the request body stalled for timeouts.body */
};

const char *kl_error_class_name(enum kl_error_class ec);

typedef struct kl_exchange {
    kl_arena arena;
    kl_worker *worker;
    struct kl_conn *conn;           /* NULL once the client has gone */
    kl_config *cfg;                 /* reference held for the whole exchange */
    char id[40];                    /* time-ordered request id (UUIDv7 text) */

    int64_t t_start_ns;             /* monotonic */
    int64_t t_first_byte_ns;        /* first response byte to the client */
    int64_t t_end_ns;
    int64_t wall_start_ms;

    /* listen */
    kl_http_request req;
    const char *peer_ip;
    int peer_port;
    bool peer_self;                 /* one of this host's own addresses, not loopback: a local caller */
    char *body;                     /* whole request body, malloc'd (may be NULL) */
    size_t body_len;
    /* bytes of body's buffer, of the copy sent upstream, and of the answer
     * the account stage holds before relaying it (tool limits, guardrails),
     * counted in the worker's body_bytes (kl_exchange_charge) */
    size_t body_charged, up_body_charged, answer_charged;

    /* identity and authorize */
    const struct kl_identity *ident;    /* NULL until identified */
    /* what a source learnt of a caller it refused, for the record alone: a
     * tailnet device with neither a user nor tags (its node, no login), a
     * serve caller whose capabilities cannot be read (its login) */
    const struct kl_identity *refused_ident;
    int id_next;                    /* next identity source to try */
    /* a credential header or ?key= holds a JWT of a configured OIDC issuer:
     * a token for keyless, which no provider gets, whichever source
     * identified the caller */
    bool workload_token;
    struct kl_whois_entry *whois;   /* cache entry ident points into */
    cJSON *id_caps;                 /* capabilities from serve headers (owned) */
    bool peer_loopback;
    int role;                       /* enum kl_role */
    const struct kl_grant_set *grant_set;

    /* dialect facts */
    const struct kl_endpoint_info *ep;
    enum kl_dialect dialect;        /* the caller's dialect, for errors */
    struct kl_body_map body_map;    /* where the members we read are in body */
    const char *model_requested;    /* as the caller wrote it */
    const char *model;              /* bare model id */
    const char *model_provider;     /* provider id from "provider/model", or NULL */
    bool stream;
    int64_t max_output_tokens;      /* -1 when not given; the cap of each answer when it asks for several */
    int64_t thinking_budget;        /* Gemini's thinkingConfig.thinkingBudget; -1 when not given */
    bool reasons;                   /* OpenAI and Gemini: the request asks for reasoning (kl_request_facts) */
    bool reasoning_declined;        /* ... or said none or minimal */
    int64_t reasoning_room;         /* ... and the room its output cap makes for it; -1: the default */
    int64_t choices;                /* answers asked for (chat's n, Gemini's candidateCount), at least 1 */
    bool include_usage;             /* OpenAI chat: stream_options.include_usage */

    /* guard: hooks told after the answer (entire_request,
     * tool_call_entire_request), in the arena */
    const struct kl_hook_ref *after_hooks;
    size_t n_after_hooks;
    bool keep_answer;               /* one of them is sent the answer: account keeps it */
    bool pre_hooks_asked;           /* pre_request hooks judged it for its provider (no failover) */
    struct kl_guard_note *guard_notes;  /* what guardrails and hooks did, for the record (guard/notes.h) */
    const struct kl_tool_rules *tool_rules;     /* the tool policy that applies, or NULL */

    /* route */
    const struct kl_provider *provider;
    const char *upstream_url;
    const char **up_headers;        /* "Name: value" lines for the provider */
    size_t n_up_headers;
    const char *up_body;            /* body sent upstream (may differ from body) */
    size_t up_body_len;
    bool added_include_usage;       /* we asked for stream usage; strip it downstream */
    const char *const *sent_keys;   /* the credentials sent upstream, as answers may spell them: masked (route.c) */
    char *key_carry;                /* the answer's tail that may begin the provider's key (kl_route_mask_key) */
    size_t key_carry_len;
    bool key_masked;                /* the provider echoed its key in the answer: masked, warned once */
    bool forwarded;                 /* it reached the upstream stage */
    /* failover (route/failover.h) */
    struct kl_attempt *attempts;    /* providers that failed before the current one */
    int nattempts;
    const struct kl_provider *failover_to;  /* next provider, once the failed answer's body is read */
    size_t failover_drained;        /* bytes of that body read and dropped */
    int64_t failover_at_ns;         /* when it was decided */
    const struct kl_provider *probe;    /* the provider this request is to probe after its cool-down, until */
    int64_t probe_until;                /* its outcome is observed (kl_health_probe_unused) */
    bool upstream_unsent;           /* the failed attempt did not send the whole request */
    bool upstream_sent;             /* this attempt's whole request went out: the provider may bill it */

    /* admit */
    struct kl_admission *admission;     /* reservations to settle at the end */
    int64_t inject_max_output_tokens;   /* ask the provider for at most this (quota bound) */
    const char *fail_headers;           /* extra headers for a gateway error */
    int64_t fail_retry;                 /* a 429's seconds until it may fit (Retry-After), -1: never, 0: unknown */
    int fail_status;                    /* the status of a gateway error when not its kind's (a hook's) */

    /* account */
    bool cost_known;
    int64_t cost_nd;
    bool cut_off;                       /* account stopped the answer (quota, tool policy) */
    enum kl_err_kind cut_kind;          /* why, for the caller's error */
    enum kl_error_class cut_class;      /* and for the record */
    int tool_calls_relayed;             /* calls that reached the caller (tool-call limits charge these) */

    /* record */
    int rec_slots;                  /* record queue slots reserved for this exchange */
    bool rec_begun;                 /* its in-progress record was queued */
    int64_t rec_due_ns;             /* on the worker's list: when it is due (kl_now_ns clock), else 0 */
    struct kl_exchange *rec_prev, *rec_next;
    const char *session_id;
    bool body_withheld;             /* the body held something guardrails blocked: not captured */
    bool body_scanned;              /* the guardrails read the body (and redacted it): it may be captured */
    const char *response_headers;   /* the provider's, as relayed, for captures */

    /* response */
    int status;                     /* status sent (or to be sent) to the client */
    int upstream_status;
    bool head_sent;
    uint64_t bytes_in, bytes_out;
    enum kl_error_class error_class;
    const char *error_message;

    /* pipeline bookkeeping */
    int stage;                      /* index of the running stage */
    void (*cancel)(struct kl_exchange *);  /* stops an asynchronous stage */
    bool ending_apart;              /* the answer ended; its last bytes wait for a read of their own
                                       (kl_respond_last_apart) */

    /* stage-private */
    struct kl_upstream_xfer *xfer;     /* a libcurl transfer, or */
    struct kl_h1_xfer *h1;              /* a request on keyless's own HTTP/1.1 client */
    struct kl_account *acct;
    struct kl_guard_run *guard;         /* hooks being asked */
    struct kl_query_job *query_job;     /* a store query it waits on (record/query.h): an /api/ read, a quota
                                           lease, whose a stored answer is */
} kl_exchange;

int64_t kl_now_ns(void);
int64_t kl_wall_ms(void);
/* CLOCK_MONOTONIC ms from now, as pthread_cond_timedwait wants it from a
 * condition variable created with that clock (the helper threads' are). */
struct timespec kl_mono_deadline(int64_t ms);

/* A request id: UUIDv7 (RFC 9562), 48-bit Unix milliseconds (ms clamped to
 * 0 .. 2^48 - 1), version 7, the low 12 bits of rand_a, the variant, and 62
 * bits of rand_b; so ids sort by start time (record queries rely on it, see
 * kl_store_id_floor). */
void kl_request_id(char out[40], int64_t ms, uint16_t rand_a, uint64_t rand_b);

/* A new exchange for worker w with a reference to w's config snapshot. */
kl_exchange *kl_exchange_new(kl_worker *w);
/* An exchange that began ms earlier than it was made (a head that never
 * came whole): its start and its id, whose first 48 bits are that start. */
void kl_exchange_backdate(kl_exchange *ex, uint32_t ms);
void kl_exchange_free(kl_exchange *ex);
/* Count one of ex's buffers (held: &ex->body_charged, &ex->up_body_charged
 * or &ex->answer_charged) as now taking bytes of its worker's memory for
 * bodies (listen.max_body_memory). With limit > 0, a growth that would take
 * the worker past limit is refused (false) and nothing changes; a copy made
 * of a body already let in passes 0. */
bool kl_exchange_charge(kl_exchange *ex, size_t *held, size_t bytes, size_t limit);
/* Worker w's share of listen.max_body_memory, or of half the memory
 * (kl_server.body_memory): the limit kl_exchange_charge is given; never
 * less than one body of max_body_size. */
size_t kl_body_memory(const kl_worker *w);
/* Bytes once counted by kl_exchange_charge, handed over to a buffer that
 * outlives the exchange (an answer in the client's output), given back
 * when that buffer is freed. */
void kl_body_memory_return(kl_worker *w, size_t bytes);
/* A request body or held answer refused for want of room in w's share:
 * logged, at most every 10 s. */
void kl_body_memory_full(kl_worker *w);

/* What the request body says (kl_dialect_request_facts) that later stages
 * use: read when the request arrives, again when a hook or a guardrail
 * rewrote the body. */
void kl_exchange_take_facts(kl_exchange *ex, const struct kl_request_facts *f);

#endif
