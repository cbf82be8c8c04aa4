/* The configuration snapshot: an immutable, reference-counted view of one
 * keyless.hujson. Workers take a reference per exchange; a reload builds a
 * new snapshot and swaps it in (see kl_config_holder), so an exchange always
 * sees one consistent configuration from start to end.
 *
 * Sections are read by small functions, one per section, listed in
 * config.c. A section keyless does not enforce yet is still parsed and
 * reported as "not enforced yet" — never silently ignored. */
#ifndef KL_CONFIG_H
#define KL_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include "core/arena.h"
#include "core/diag.h"
#include "core/hujson.h"

/* Which API families a provider speaks (Aperture's compatibility flags). */
enum kl_compat {
    KL_COMPAT_OPENAI_CHAT        = 1 << 0,
    KL_COMPAT_OPENAI_RESPONSES   = 1 << 1,
    KL_COMPAT_ANTHROPIC_MESSAGES = 1 << 2,
    KL_COMPAT_GEMINI_GENERATE    = 1 << 3,
    KL_COMPAT_BEDROCK_INVOKE     = 1 << 4,
    KL_COMPAT_BEDROCK_CONVERSE   = 1 << 5,
    KL_COMPAT_GOOGLE_GENERATE    = 1 << 6,
    KL_COMPAT_GOOGLE_RAW_PREDICT = 1 << 7,
};

enum kl_auth_style {
    KL_AUTH_BEARER,
    KL_AUTH_X_API_KEY,
    KL_AUTH_X_GOOG_API_KEY,
    KL_AUTH_HEC,    /* hooks only: Splunk's HTTP Event Collector, "Authorization: Splunk <token>" */
    KL_AUTH_CF_AIG, /* hooks only: Cloudflare AI Gateway's "cf-aig-authorization: Bearer <token>" */
};
enum kl_auth_mode { KL_AUTHMODE_OVERRIDE, KL_AUTHMODE_PASSTHROUGH, KL_AUTHMODE_NONE };

struct kl_gcp_cred;
struct kl_sigv4_cred;

struct kl_provider {
    const char *id;             /* its key under "providers" */
    const char *name, *description;
    const char *baseurl;        /* no trailing slash */
    const char **models;
    size_t nmodels;
    const char *apikey;         /* resolved secret, or NULL */
    const char *const *key_spellings;   /* apikey as an answer may spell it (kl_route_key_spellings), or NULL */
    const char *key_problem;    /* why there is no key (unset ${ENV}, unreadable file) */
    const struct kl_gcp_cred *gcp_cred;  /* Google credentials (apikey held a key file or "gcp-metadata"), or NULL */
    const struct kl_sigv4_cred *aws;     /* IAM credentials that sign each request (SigV4), or NULL */
    enum kl_auth_style auth_style;
    enum kl_auth_mode auth_mode;
    unsigned compat;            /* enum kl_compat bits */
    int preference;
    bool disabled;
    const char **add_headers;   /* "Name: value" */
    size_t nadd_headers;
    const char *cost_basis;     /* price only with this provider's entries, or NULL */
    const struct kl_cost_map *cost_map;  /* Aperture's model_cost_map, or NULL */
};

struct kl_timeouts {            /* all in milliseconds; 0 = none */
    uint32_t header;            /* whole request head must arrive within */
    uint32_t body;              /* between body reads */
    uint32_t idle;              /* keep-alive connection with no request */
    uint32_t send;              /* a client that reads nothing for this long is dropped */
    uint32_t upstream_connect;
    uint32_t upstream_first_byte;
    uint32_t upstream_idle;     /* between bytes of an upstream response */
    uint32_t shutdown;          /* in-flight grace on SIGTERM */
};

struct kl_listen_cfg {
    const char **addresses;     /* "host:port" */
    size_t naddresses;
    int workers;                /* 0 = number of cores */
    size_t max_body_size;
    size_t max_header_size;
    size_t max_connections;     /* client connections at once, over all workers; 0 = what the descriptor
                                   limit leaves room for (kl_server.fd_conns) */
    size_t max_body_memory;     /* request bodies held at once, over all workers; 0 = half the memory
                                   (kl_server.body_memory) */
    struct kl_timeouts timeouts;
};

/* keyless `failover`: when the provider chosen for a request fails before
 * the caller got anything, the request goes to the next provider that
 * serves the same model under the same policy (src/route/failover.c). */
struct kl_failover_cfg {
    int max_attempts;           /* providers tried per request, the first included; 1 = off */
    bool on_status[200];        /* statuses 400..599 that fail over, by status - 400 */
    uint32_t cooldown_after;    /* failures in a row that make a provider cool down */
    uint32_t cooldown_ms;       /* for this long (0 = never) (route/health.h) */
};

struct kl_identity_cfg;
struct kl_grants;
struct kl_store_cfg;
struct kl_prices;
struct kl_quotas;
struct kl_hooks;
struct kl_guardrails;
struct kl_cost_map;

typedef struct kl_config {
    atomic_int refs;
    kl_arena arena;             /* owns every string and array below */
    const char *path;
    kl_json_doc doc;            /* the parsed file, for sections read later */
    struct kl_listen_cfg listen;
    struct kl_failover_cfg failover;
    struct kl_provider *providers;
    size_t nproviders;
    int log_level;              /* enum kl_log_level */
    bool access_log;
    struct kl_identity_cfg *identity;   /* src/identity (never NULL after parsing) */
    struct kl_grants *grants;           /* src/authorize (never NULL after parsing) */
    struct kl_store_cfg *store;         /* src/record (never NULL after parsing) */
    const struct kl_prices *prices;     /* src/account price table, or NULL (costs unknown) */
    struct kl_quotas *quotas;           /* src/admit (never NULL after parsing) */
    struct kl_hooks *hooks;             /* src/guard, or NULL when none is configured */
    struct kl_guardrails *guardrails;   /* src/guard built-in scanning, or NULL when off */
    const char *prices_path;
    struct kl_cleanup {                 /* run when the snapshot is freed */
        void (*fn)(void *);
        void *arg;
    } cleanups[8];
    size_t ncleanups;
} kl_config;

/* Register fn(arg) to run when cfg is freed (a section's own resources:
 * locks, key sets). */
void kl_config_on_free(kl_config *cfg, void (*fn)(void *), void *arg);

/* Context handed to each section reader: where to report, with positions. */
typedef struct kl_cfg_ctx {
    kl_config *cfg;
    kl_diags *diags;
    bool reader;                /* read to read records (keyless usage, export): a secret only the service is
                                   given (keyless.env, systemd credentials) is no error outside store/database */
    bool lenient;               /* ... and the section being read is not one of those */
} kl_cfg_ctx;

void kl_cfg_report(kl_cfg_ctx *c, enum kl_severity sev, const cJSON *at,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A secret such as an apikey: "${NAME}" from the environment, "file:/path"
 * (trailing newline dropped) or the text itself; owner names it in messages
 * ("provider openai"). NULL when it is malformed (reported as an error) or
 * unavailable: then *problem says why (an unset variable, an unreadable
 * file), for the caller to report or keep. */
const char *kl_cfg_secret(kl_cfg_ctx *c, const cJSON *v, const char *owner, const char **problem);
/* The same for a secret that is not an API key: noun names it in messages
 * ("secret access key"). */
const char *kl_cfg_secret_named(kl_cfg_ctx *c, const cJSON *v, const char *owner, const char *noun,
                                const char **problem);

/* "authorization": "bearer" (or ""), "x-api-key", "x-goog-api-key" into
 * *out, and for a hook (Aperture's webhook styles) also "hec" and
 * "cf-aig-authorization"; anything else is reported as an error (and *out
 * left alone). */
void kl_cfg_auth_style(kl_cfg_ctx *c, const cJSON *v, bool hook, enum kl_auth_style *out);
/* The header line's start for a key sent in that style ("x-api-key: "). */
const char *kl_auth_header_prefix(enum kl_auth_style s);

/* Parse text into a new snapshot (refs = 1). Problems go to diags; returns
 * NULL when there are errors. */
kl_config *kl_config_parse(const char *text, size_t len, const char *path, kl_diags *diags);
kl_config *kl_config_load(const char *path, kl_diags *diags);
/* The same for a reader of the record store (keyless usage, export): an
 * unset ${NAME} or unreadable secret outside "store" and "database" is a
 * note, since the service's secrets are the service's (keyless.env,
 * systemd credentials) and the reader needs none of them. */
kl_config *kl_config_load_reader(const char *path, kl_diags *diags);
kl_config *kl_config_ref(kl_config *cfg);
void kl_config_unref(kl_config *cfg);

/* "30s", "500ms", "5m", "1h", "2d" or a number of seconds. */
int kl_parse_duration_ms(const char *s, uint64_t *out_ms);
/* "32MiB", "64KB", "1048576" (bytes). */
int kl_parse_size(const char *s, size_t *out);
/* A duration or size member as docs/config.md promises every one: a string
 * as above, or a JSON number (seconds; bytes). -1 when it is neither. */
int kl_cfg_duration_value(const cJSON *v, uint64_t *out_ms);
int kl_cfg_size_value(const cJSON *v, size_t *out);

/* The current snapshot, swapped atomically on reload. */
typedef struct kl_config_holder {
    pthread_mutex_t lock;
    kl_config *cur;
} kl_config_holder;

void kl_config_holder_init(kl_config_holder *h, kl_config *cfg);
kl_config *kl_config_holder_get(kl_config_holder *h);   /* returns a new reference */
void kl_config_holder_swap(kl_config_holder *h, kl_config *cfg);
void kl_config_holder_destroy(kl_config_holder *h);

#endif
