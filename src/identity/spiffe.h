/* SPIFFE IDs from client certificates (mTLS listener). */
#ifndef KL_SPIFFE_H
#define KL_SPIFFE_H

#include <stddef.h>

#include <openssl/x509.h>

#include "core/arena.h"

/* 0 when id[0..len) is a valid SPIFFE ID, else -1 with why. */
int kl_spiffe_id_check(const char *id, size_t len, const char **why);

/* The caller's SPIFFE ID from a verified leaf certificate: exactly one URI
 * SAN, a valid spiffe:// ID, and not a CA. NULL with why otherwise. */
const char *kl_spiffe_from_cert(X509 *leaf, kl_arena *a, const char **trust_domain, const char **why);

#endif
