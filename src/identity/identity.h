/* Stage 2, identity: who is calling. Callers hold no keys, so the gateway
 * learns who they are from the network or a workload credential, trying the
 * configured sources in order:
 *
 *   oidc       Authorization: Bearer <JWT> from a configured issuer (jwt.c)
 *   mtls       the SPIFFE ID of a client certificate on the TLS listener
 *   tailscale  WhoIs over the LocalAPI unix socket for the TCP peer (whois.c)
 *   serve      `tailscale serve` headers, only from a loopback peer (serve.c)
 *   cidr       a static address-range map (cidr.c)
 *   loopback   127.0.0.0/8 and ::1 are "(loopback)"
 *
 * The first source that identifies the caller wins; a request no source
 * identifies is refused with 401 and never forwarded. A source that cannot
 * answer (tailscaled down, garbage) fails closed with 503; a credential that
 * is presented and invalid is refused with 401, never skipped (a JWT of an
 * issuer not configured is no credential for keyless: oidc.c). */
#ifndef KL_IDENTITY_H
#define KL_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/config.h"
#include "core/exchange.h"
#include "pipeline.h"

struct kl_identity {
    const char *login;          /* LoginName; sorted tags "tag:a,tag:b"; OIDC template; "(loopback)" */
    const char *display_name;
    const char *node;           /* node name without the trailing dot */
    const char *stable_node_id;
    const char *const *tags;    /* sorted */
    size_t ntags;
    const char *const *groups;
    size_t ngroups;
    const char *source;         /* "tailscale", "serve", "oidc", "mtls", "cidr", "loopback" */
    const char *issuer;         /* OIDC issuer or mTLS trust domain, else NULL */
    const cJSON *caps;          /* capabilities granted by the tailnet policy (CapMap), or NULL */
    bool tagged;
};

enum kl_id_source {
    KL_SRC_OIDC, KL_SRC_MTLS, KL_SRC_TAILSCALE, KL_SRC_SERVE, KL_SRC_CIDR, KL_SRC_LOOPBACK,
    KL_SRC_COUNT,
};

struct kl_cidr_rule {
    int family;                 /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix;
    struct kl_identity ident;
};

struct kl_identity_cfg {
    enum kl_id_source order[KL_SRC_COUNT];
    size_t norder;
    /* tailscale */
    const char *ts_socket;
    uint32_t ts_timeout_ms, ts_ttl_ms, ts_negative_ttl_ms;
    /* cidr */
    struct kl_cidr_rule *cidr;
    size_t ncidr;
    /* oidc */
    struct kl_oidc_cfg *oidc;
    /* mtls: extra TLS listeners whose callers are their SPIFFE ID */
    const char **mtls_addresses;
    size_t nmtls;
    void *mtls_ctx;             /* SSL_CTX */
    unsigned char mtls_trust[32]; /* SHA-256 of what accepts a client certificate (kl_mtls_same_trust) */
};

/* Config: the `identity` section (NULL v = absent: loopback only). */
void kl_identity_read_config(kl_cfg_ctx *c, const cJSON *v);
const char *kl_id_source_name(enum kl_id_source s);

enum kl_step kl_identity_run(kl_exchange *ex);
/* Drop what the exchange holds of identity (cache references). */
void kl_identity_release(kl_exchange *ex);

/* Process-wide state (the WhoIs cache), created before workers start. */
int  kl_identity_server_init(kl_server *srv);
void kl_identity_server_free(kl_server *srv);
void kl_identity_worker_free(kl_worker *w);

/* Is sa one of this host's own addresses, as a process on the machine
 * connecting to its tailnet address is? Such a peer is never a tailnet or
 * CIDR caller (selfaddr.c). True as well when the host's addresses could
 * not be read: then kl_self_addrs_error says why (an errno), else 0. */
struct sockaddr;
bool kl_self_address(kl_worker *w, const struct sockaddr *sa);
int  kl_self_addrs_error(const kl_worker *w);
void kl_self_addrs_free(kl_worker *w);

/* ---- pieces, exposed for unit tests ---- */

/* Parse a WhoIs body. Returns 1 identified, 0 a node with neither user nor
 * tags, -1 not WhoIs JSON (why set). Strings go to the arena; *caps gets
 * the CapMap object (caller owns it), or NULL. */
int kl_whois_parse(const char *body, size_t len, kl_arena *a, struct kl_identity *id,
                   cJSON **caps, const char **why);

/* RFC 2047 "encoded-word" decoding of a tailscale serve header value, as
 * tailscaled encodes one (serve.c); NULL when the decoded text holds a
 * control character (NUL, LF, DEL, ...). */
const char *kl_rfc2047_decode(kl_arena *a, const char *v);

/* Parse "10.0.0.0/8" or "fd7a::/48". Returns 0 on success. */
int kl_cidr_parse(const char *s, int *family, unsigned char addr[16], int *prefix);
bool kl_cidr_contains(int family, const unsigned char addr[16], int prefix, const char *ip);
bool kl_ip_is_loopback(const char *ip);

#endif
