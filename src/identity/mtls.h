/* mTLS / SPIFFE identity source (see spiffe.h for the ID rules). */
#ifndef KL_MTLS_H
#define KL_MTLS_H

#include "identity/identity.h"

/* Read identity.mtls: listener addresses and the TLS context (server
 * certificate and key, client CA bundle). */
bool kl_mtls_read_config(kl_cfg_ctx *c, const cJSON *v, struct kl_identity_cfg *ic);

/* 1 identified; 0 not a TLS connection; -1 refused (401 answered). */
int kl_mtls_identify(kl_exchange *ex);

#endif
