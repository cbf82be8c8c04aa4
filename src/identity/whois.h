/* Internal to src/identity: the WhoIs cache and asynchronous lookups. */
#ifndef KL_WHOIS_H
#define KL_WHOIS_H

#include <stdatomic.h>

#include "identity/identity.h"

enum kl_whois_state {
    KL_WHOIS_IDENTIFIED,        /* a user node or a tagged node */
    KL_WHOIS_NOT_TAILNET,       /* tailscaled: "no match for IP:port" */
    KL_WHOIS_NO_OWNER,          /* a node with neither a user nor tags */
};

/* One cached answer, immutable once published; exchanges hold references. */
struct kl_whois_entry {
    atomic_int refs;
    struct kl_whois_entry *next;
    char ip[96];                /* what it is cached by: an address, or an address and port (whois.c) */
    int64_t expires_ms;
    enum kl_whois_state state;
    kl_arena arena;             /* the identity's strings */
    struct kl_identity ident;
    cJSON *caps;
};

struct kl_whois_cache *kl_whois_cache_new(void);
void kl_whois_cache_free(struct kl_whois_cache *c);
void kl_whois_entry_unref(struct kl_whois_entry *e);

/* The address WhoIs is asked about ("IP:port", "[IPv6]:port") in addr, and
 * what its answer is cached and shared by in key. tailscaled answers for an
 * address and port: with userspace networking (the official container
 * image's default) every tailnet connection reaches keyless from 127.0.0.1
 * (or from tailscaled's container), each from its own port, and only the
 * port tells the callers apart. So an answer holds for its address alone
 * only when that is a tailnet address (100.64.0.0/10, fd7a:115c:a1e0::/48:
 * one node each); for any other it holds for that address and port, that
 * is one connection, and is kept on it: cached by address, one user's
 * identity, admin included, went to the next caller; cached by address and
 * port, to the next connection from that port. */
void kl_whois_key(const char *ip, int port, char *addr, size_t addrlen, char *key, size_t keylen);

/* A fresh answer for ex's peer (new reference), or NULL: from the cache for
 * a tailnet address, else the one kept on ex's connection. */
struct kl_whois_entry *kl_whois_cached(kl_exchange *ex);
/* Ask tailscaled; kl_whois_resume(ex, entry or NULL, error) follows. */
int kl_whois_lookup(kl_exchange *ex, const struct kl_identity_cfg *cfg);
/* ex no longer waits (client gone). */
void kl_whois_forget(kl_exchange *ex);

/* Defined in identity.c: continue ex with a lookup's result (entry is a new
 * reference the exchange takes over; NULL with err on failure). */
void kl_whois_resume(kl_exchange *ex, struct kl_whois_entry *e, const char *err);

#endif
