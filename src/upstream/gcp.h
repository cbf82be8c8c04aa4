/* Google credentials for Vertex AI, whose raw predict endpoint (the one
 * Anthropic's models are served on) takes an OAuth access token, not an API
 * key. A token lives an hour and comes from one of four sources: a service
 * account's key file (a JWT signed with its RSA key, exchanged at its
 * token_uri), gcloud's application default credentials of a user (a
 * refresh token, exchanged likewise; or, impersonating a service account,
 * the user's or a key's token exchanged for the account's), the metadata
 * server of the VM or GKE pod keyless runs on (its service account,
 * workload identity on GKE),
 * or an external account (workload identity federation: a token another
 * platform gave keyless, such as a Kubernetes service account's or a CI
 * job's OIDC token, exchanged at Google's STS, and optionally for a service
 * account's). The last three need no key at all, which organisations that
 * forbid key files need. A
 * thread keeps every configured credential's token fresh ahead of its
 * expiry, each try in a thread of its own (one that hangs holds up no
 * other), so no request waits for Google; a request reads the current
 * token under a lock. */
#ifndef KL_GCP_H
#define KL_GCP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"

enum kl_gcp_source {
    KL_GCP_SERVICE_ACCOUNT,     /* "type": "service_account" key file */
    KL_GCP_AUTHORIZED_USER,     /* "type": "authorized_user" (gcloud auth application-default login) */
    KL_GCP_METADATA,            /* apikey "gcp-metadata" or "gcp-metadata:ACCOUNT" */
    KL_GCP_EXTERNAL_ACCOUNT,    /* "type": "external_account" (workload identity federation) */
    KL_GCP_IMPERSONATED,        /* "type": "impersonated_service_account" (a user's or a key's, acting as an account) */
};

struct kl_gcp_cred {
    enum kl_gcp_source source;
    const char *email;          /* who, in logs and /metrics: client_email; an authorized user's client_id;
                                   "metadata:" and the metadata server's account ("default" or an email) */
    const char *key_id;         /* private_key_id (the JWT's kid), or NULL */
    const char *token_uri;      /* where tokens come from (the metadata server's token URL for KL_GCP_METADATA) */
    const char *private_key;    /* service account: PEM */
    const char *client_id, *client_secret, *refresh_token;      /* authorized user */
    const char *project_id;     /* the key file's project, or NULL: Vertex paths are sent to it (the metadata
                                   server's project is learnt with the first token, kl_gcp_token) */
    const char *external;       /* external account, impersonated: its file's JSON, compact; read again for each
                                   token */
};

/* text: a provider's resolved apikey. 1 with *out filled (strings in a)
 * when it holds Google credentials: Aperture's "keyfile::" followed by a
 * key file's JSON or its base64, the JSON itself (as "file:/path" reads
 * it) of a service account, an authorized user, an impersonated service
 * account (a user's or a key's credentials acting as it) or an external
 * account (its credential source a file, a URL, an executable or AWS),
 * or "gcp-metadata[:ACCOUNT]";
 * 0 when it is an ordinary key; -1 with *why when it is a credentials file
 * that cannot be used (not JSON, a field missing, a private key that does
 * not load, a type keyless does not read). metadata_host is where
 * "gcp-metadata" asks (host or host:port; NULL: 169.254.169.254, as on GCE
 * and GKE; the GCE_METADATA_HOST environment variable, as Google's
 * libraries read it, is passed here by the configuration). */
int kl_gcp_cred_parse(const char *text, const char *metadata_host, kl_arena *a, struct kl_gcp_cred *out,
                      const char **why);

typedef struct kl_gcp_tokens kl_gcp_tokens;

kl_gcp_tokens *kl_gcp_tokens_start(void);
/* Keep the tokens of these n credentials fresh from now on, and stop
 * renewing any other (its token is still handed out until it expires, to
 * requests of the configuration before). A credential kept already (every
 * field the same) keeps its token. */
void kl_gcp_tokens_keep(kl_gcp_tokens *t, const struct kl_gcp_cred *const *creds, size_t n);
/* Wait up to ms for every credential kept to have had its first try. */
void kl_gcp_tokens_wait(kl_gcp_tokens *t, int ms);
/* The current access token for cred, copied into a; NULL with *problem (in
 * a) when there is none yet or it expired. *project (in a, or NULL) is the
 * project Vertex paths go to: the key file's, or the metadata server's. */
const char *kl_gcp_token(kl_gcp_tokens *t, const struct kl_gcp_cred *cred, kl_arena *a, const char **problem,
                         const char **project);
/* Each credential the configuration uses, for /metrics: how many seconds its
 * token is still handed out (0: none) and its failed tries in a row. fn
 * runs under the keeper's lock. */
void kl_gcp_tokens_each(kl_gcp_tokens *t, void (*fn)(void *arg, const char *account, int64_t seconds_left,
                                                      int failures), void *arg);
void kl_gcp_tokens_stop(kl_gcp_tokens *t);

#endif
