#include "authorize/chained.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "account/account.h"
#include "account/usage.h"
#include "admit/referenced.h"
#include "core/config.h"
#include "core/log.h"
#include "core/lossymap.h"
#include "core/text.h"
#include "identity/identity.h"
#include "pipeline.h"
#include "record/query.h"
#include "record/record.h"

struct chained_job {
    struct kl_query_job job;    /* first: the query thread's view */
    char *id;                   /* the answer asked for (malloc) */
    char *owner;                /* the login its record names (malloc), NULL when none does */
    bool failed;                /* the store could not say */
};

static uint64_t hash(const char *s, size_t n)
{
    return kl_lossy_key(KL_FNV64_START, s, n);
}

/* A login as the owners' table keeps it: 64 bits of its SHA-256 (never 0,
 * which is none), so that no login can be made to pass for another's (one
 * an OIDC template builds from a claim its caller chooses), as one could
 * against a 64-bit FNV hash. */
static uint64_t login_key(const kl_exchange *ex, const char *login)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    const EVP_MD *md = ex->worker->sha256 ? ex->worker->sha256 : EVP_sha256();
    if (EVP_Digest(login, strlen(login), d, &n, md, NULL) != 1 || n < 8)
        abort();
    uint64_t k;
    memcpy(&k, d, sizeof(k));
    return k ? k : 1;
}

/* The login hash remembered for id, or 0. */
static uint64_t owner_of(struct kl_lossy_map *owners, uint64_t id)
{
    uint64_t login;
    return kl_lossy_map_get(owners, id, &login) ? login : 0;
}

static const char *login_of(const kl_exchange *ex)
{
    return ex->ident && ex->ident->login ? ex->ident->login : "";
}

/* The previous_response_id the provider will read (escapes decoded), as
 * admit.c reads it to price the chain, or NULL when there is none. */
static const char *previous_id(kl_exchange *ex)
{
    size_t len;
    const char *id = kl_referenced_id(&ex->arena, ex->body, ex->body_map.previous_response_id, &len);
    return id && len ? kl_arena_strndup(&ex->arena, id, len) : NULL;
}

static enum kl_step refuse(kl_exchange *ex, const char *id)
{
    kl_info("%s: %s asked to carry on the stored answer %s, which another caller received: refused", ex->id,
            login_of(ex), id);
    return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST, "Previous response with id '%s' not found.", id);
}

static void run(struct kl_store *s, struct kl_query_job *job)
{
    struct chained_job *j = (struct chained_job *)job;
    const char *params[] = {j->id};
    cJSON *rows = NULL;
    char err[256];
    if (kl_store_exec(s, "SELECT login FROM requests WHERE response_id = ? LIMIT 1", params, 1, &rows, err,
                      sizeof(err)) < 0) {
        kl_warn("stored answers: looking up the owner of %s failed: %s", j->id, err);
        j->failed = true;
    } else if (cJSON_GetArraySize(rows) == 1) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(rows, 0), "login");
        j->owner = strdup(cJSON_IsString(l) ? l->valuestring : "");
        if (!j->owner)
            abort();
    }
    cJSON_Delete(rows);
}

static void job_free(struct chained_job *j)
{
    free(j->id);
    free(j->owner);
    free(j);
}

static void done(struct kl_query_job *job)
{
    struct chained_job *j = (struct chained_job *)job;
    kl_exchange *ex = kl_query_waiter(job);
    if (ex) {
        enum kl_step step = KL_NEXT;
        if (j->failed) {
            step = kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
                           "cannot check whose the previous response is: the record store failed");
        } else if (j->owner) {
            kl_lossy_map_put(ex->worker->server->answer_owners, hash(j->id, strlen(j->id)),
                             login_key(ex, j->owner));
            if (strcmp(j->owner, login_of(ex)) != 0)
                step = refuse(ex, j->id);
        }
        kl_pipeline_continue(ex, step);
    }
    job_free(j);
}

enum kl_step kl_chained_run(kl_exchange *ex)
{
    if (ex->ep->id != KL_EP_RESPONSES || !ex->body)
        return KL_NEXT;
    const char *id = previous_id(ex);
    if (!id)
        return KL_NEXT;
    kl_server *srv = ex->worker->server;
    const char *me = login_of(ex);
    uint64_t owner = owner_of(srv->answer_owners, hash(id, strlen(id)));
    if (owner)
        return owner == login_key(ex, me) ? KL_NEXT : refuse(ex, id);
    if (!srv->answers || ex->cfg->store->zero_retention)
        return KL_NEXT; /* no record to ask */
    struct chained_job *j = calloc(1, sizeof(*j));
    if (!j || !(j->id = strdup(id)))
        abort();
    j->job.run = run;
    j->job.done = done;
    kl_query_wait(srv->answers, &j->job, ex);
    return KL_WAIT;
}

void kl_chained_note(kl_exchange *ex)
{
    if (!ex->ep || ex->ep->id != KL_EP_RESPONSES || !ex->ident)
        return;
    const struct kl_usage *u = kl_account_usage(ex);
    if (!u || !u->response_id)
        return;
    const char *me = login_of(ex);
    kl_lossy_map_put(ex->worker->server->answer_owners, hash(u->response_id, strlen(u->response_id)),
                     login_key(ex, me));
}
