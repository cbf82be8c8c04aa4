/* mTLS / SPIFFE identity source (see spiffe.h for the ID rules). */
#ifndef KL_MTLS_H
#define KL_MTLS_H

#include "identity/identity.h"

/* Read identity.mtls: listener addresses and the TLS context (server
 * certificate and key, client CA bundle). */
bool kl_mtls_read_config(kl_cfg_ctx *c, const cJSON *v, struct kl_identity_cfg *ic);

/* Do two configurations accept the same client certificates (the same CAs,
 * each trust domain with the same bundle)? A TLS connection verified under
 * one stays good under the other: a reload that changed only grants or
 * quotas, or the server's own certificate, does not drop mTLS callers. */
bool kl_mtls_same_trust(const struct kl_identity_cfg *a, const struct kl_identity_cfg *b);

/* 1 identified; 0 not a TLS connection; -1 refused (401 answered). */
int kl_mtls_identify(kl_exchange *ex);

#endif
