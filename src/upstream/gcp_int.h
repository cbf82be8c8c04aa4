/* What gcp.c (key files, the metadata server, the keeper) and
 * gcp_external.c (workload identity federation) share; not for other
 * modules. */
#ifndef KL_GCP_INT_H
#define KL_GCP_INT_H

#include <stdatomic.h>
#include <stdbool.h>

#include <cjson/cJSON.h>

#include "core/arena.h"
#include "upstream/gcp.h"
#include "upstream/syncfetch.h"

#define KL_GCP_SCOPE "https://www.googleapis.com/auth/cloud-platform"

/* o's string member k, or NULL when absent, not a string, or empty. */
const char *kl_gcp_field(const cJSON *o, const char *k);
/* Whether a URL that credentials are sent to is https://, or http:// to
 * this machine (an emulator, the tests). */
bool kl_gcp_url_safe(const char *u);
/* s percent-encoded for a form, in a. */
char *kl_gcp_url_escaped(kl_arena *a, const char *s);
/* An OAuth token endpoint's answer (Google's, or its STS's) to verb url
 * (as the log may name it: kl_sync_url_shown):
 * 0 with *token (malloc) and *lifetime_s, or -1 with err. */
int kl_gcp_oauth_answer(const char *verb, const char *url, const struct kl_sync_reply *r, char **token,
                        long *lifetime_s, char *err, size_t errlen);
/* Wipes s (a credential) and frees it; NULL is fine. */
void kl_gcp_wipe_free(char *s);

/* The service account at url (IAM credentials' generateAccessToken, for
 * cloud-platform, asked for lifetime_s, through delegates: a JSON array
 * of service account names, or NULL) acting for the holder of bearer (an
 * access token): 0 with *token (malloc) and *lifetime_s, or -1 with err. */
int kl_gcp_impersonate(const char *url, const char *bearer, const cJSON *delegates, long lifetime_s_asked,
                       const atomic_bool *stop, char **token, long *lifetime_s, char *err, size_t errlen);

/* An external_account file (o): 1 with *out filled (strings in a), or -1
 * with *why. */
int kl_gcp_external_parse(const cJSON *o, kl_arena *a, struct kl_gcp_cred *out, const char **why);
/* A fresh token for an external account, as mint() in gcp.c for the
 * others: 0 with *token (malloc) and *lifetime_s, or -1 with err. */
int kl_gcp_external_mint(const struct kl_gcp_cred *cred, const atomic_bool *stop, char **token, long *lifetime_s,
                         char *err, size_t errlen);

/* How many credentials the keeper holds, those kept and those whose token
 * is still handed out to requests of a configuration before (tests). */
size_t kl_gcp_tokens_held(kl_gcp_tokens *t);

#endif
