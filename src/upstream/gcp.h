/* Google service-account credentials: Vertex AI's raw predict endpoint (the
 * one Anthropic's models are served on) takes an OAuth access token, not an
 * API key. The token is minted from a service account's key file — a JWT
 * signed with its RSA key, exchanged at its token_uri — and lives an hour.
 * One thread keeps every configured account's token fresh ahead of its
 * expiry, so no request waits for Google's token endpoint; a request reads
 * the current token under a lock. */
#ifndef KL_GCP_H
#define KL_GCP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"

struct kl_gcp_sa {
    const char *email;          /* client_email: the JWT's issuer */
    const char *key_id;         /* private_key_id (the JWT's kid), or NULL */
    const char *token_uri;      /* where the JWT is exchanged */
    const char *private_key;    /* PEM */
    const char *project_id;     /* the account's project, or NULL: Vertex paths are sent to it */
};

/* text: a provider's resolved apikey. 1 with *out filled (strings in a)
 * when it holds a service account key: Aperture's "keyfile::" followed by
 * the key file's JSON or its base64, or the JSON itself (as "file:/path"
 * reads it); 0 when it is an ordinary key; -1 with *why when it is a key
 * file that cannot be used (not JSON, a field missing, a private key that
 * does not load). */
int kl_gcp_sa_parse(const char *text, kl_arena *a, struct kl_gcp_sa *out, const char **why);

typedef struct kl_gcp_tokens kl_gcp_tokens;

kl_gcp_tokens *kl_gcp_tokens_start(void);
/* Keep the tokens of these n accounts fresh from now on, and stop renewing
 * any other (its token is still handed out until it expires, to requests
 * of the configuration before). An account kept already (the same email,
 * key and token_uri) keeps its token. */
void kl_gcp_tokens_keep(kl_gcp_tokens *t, const struct kl_gcp_sa *const *sas, size_t n);
/* Wait up to ms for every account kept to have had its first try. */
void kl_gcp_tokens_wait(kl_gcp_tokens *t, int ms);
/* The current access token for sa, copied into a; NULL with *problem (in a)
 * when there is none yet or it expired. */
const char *kl_gcp_token(kl_gcp_tokens *t, const struct kl_gcp_sa *sa, kl_arena *a, const char **problem);
/* Each account the configuration uses, for /metrics: how many seconds its
 * token is still handed out (0: none) and its failed tries in a row. fn
 * runs under the keeper's lock. */
void kl_gcp_tokens_each(kl_gcp_tokens *t, void (*fn)(void *arg, const char *account, int64_t seconds_left,
                                                      int failures), void *arg);
void kl_gcp_tokens_stop(kl_gcp_tokens *t);

#endif
