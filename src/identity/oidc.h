/* OIDC workload tokens (GitHub Actions, GitLab CI, Kubernetes service
 * accounts): `Authorization: Bearer <JWT>` verified offline against each
 * issuer's JWKS file, then mapped to an identity by claim templates. */
#ifndef KL_OIDC_H
#define KL_OIDC_H

#include "core/config.h"
#include "core/exchange.h"

struct kl_oidc_cfg;

/* Read identity.oidc (an object with "issuers": [...]). NULL on errors. */
struct kl_oidc_cfg *kl_oidc_read_config(kl_cfg_ctx *c, const cJSON *v);
void kl_oidc_free(struct kl_oidc_cfg *o);

/* 0: identified (ex->ident set). -1: not an OIDC request (no bearer JWT,
 * or only JWTs of issuers not configured: a provider's own credential), or
 * refused — then the 401 has been answered and ex->status is set. */
int kl_oidc_identify(kl_exchange *ex, struct kl_oidc_cfg *o);

/* Does the request carry a JWT of a configured issuer in any form a
 * passthrough provider would read: any credential header after any scheme
 * or none, any credential query parameter, with bytes added before or
 * after it, encoded in base64 (Basic's user:password), too large to
 * verify, or too malformed to name its issuer but holding a configured
 * issuer's name? (Wider than what kl_oidc_identify checks: whatever it
 * holds is stripped, never checked.) */
bool kl_oidc_token_present(kl_exchange *ex, const struct kl_oidc_cfg *o);

/* Re-read JWKS files that changed on disk (called periodically off the
 * workers). */
void kl_oidc_refresh(struct kl_oidc_cfg *o);

#endif
