/* SPIFFE X.509 identities for the mTLS listener (PROTOCOLS.md section 5):
 * the caller is the single spiffe:// URI SAN of a verified, non-CA leaf. */
#include "identity/spiffe.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <openssl/x509v3.h>

static bool td_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

int kl_spiffe_id_check(const char *id, size_t len, const char **why)
{
    if (len > 2048) {
        *why = "SPIFFE ID longer than 2048 bytes";
        return -1;
    }
    if (len < 10 || strncmp(id, "spiffe://", 9) != 0) {
        *why = "URI SAN is not a spiffe:// ID";
        return -1;
    }
    size_t i = 9, td = i;
    while (i < len && id[i] != '/') {
        if (!td_char(id[i])) {
            *why = "SPIFFE trust domain may only contain a-z 0-9 . - _";
            return -1;
        }
        i++;
    }
    if (i == td) {
        *why = "SPIFFE ID has an empty trust domain";
        return -1;
    }
    if (i - td > 255) {
        *why = "SPIFFE trust domain longer than 255 bytes";
        return -1;
    }
    while (i < len) { /* at '/' */
        size_t seg = ++i;
        while (i < len && id[i] != '/') {
            if (!path_char(id[i])) {
                *why = "SPIFFE path segments may only contain A-Z a-z 0-9 . - _";
                return -1;
            }
            i++;
        }
        size_t sl = i - seg;
        if (sl == 0) {
            *why = "SPIFFE ID has an empty path segment or a trailing /";
            return -1;
        }
        if ((sl == 1 && id[seg] == '.') || (sl == 2 && id[seg] == '.' && id[seg + 1] == '.')) {
            *why = "SPIFFE path segments may not be . or ..";
            return -1;
        }
    }
    return 0;
}

const char *kl_spiffe_from_cert(X509 *leaf, kl_arena *a, const char **trust_domain, const char **why)
{
    if (X509_check_ca(leaf) != 0) {
        *why = "the client certificate is a CA certificate";
        return NULL;
    }
    /* X509-SVID section 4.3: a leaf may not sign certificates or CRLs */
    uint32_t ku = X509_get_key_usage(leaf);
    if (ku != UINT32_MAX && (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN))) {
        *why = "the client certificate may sign certificates or CRLs (keyCertSign, cRLSign), which an SVID may not";
        return NULL;
    }
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    const char *uri = NULL;
    size_t urilen = 0;
    int nuri = 0;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_URI)
            continue;
        nuri++;
        uri = (const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        urilen = (size_t)ASN1_STRING_length(gn->d.uniformResourceIdentifier);
    }
    const char *out = NULL;
    if (nuri == 0) {
        *why = "the client certificate has no URI SAN (no SPIFFE ID)";
    } else if (nuri > 1) {
        *why = "the client certificate has more than one URI SAN";
    } else if (memchr(uri, '\0', urilen)) {
        *why = "the client certificate's URI SAN contains a NUL byte";
    } else if (kl_spiffe_id_check(uri, urilen, why) < 0) {
        /* why says */
    } else if (!memchr(uri + 9, '/', urilen - 9)) {
        *why = "the client certificate's SPIFFE ID names only a trust domain (an SVID's has a path)";
    } else {
        out = kl_arena_strndup(a, uri, urilen);
        const char *slash = strchr(out + 9, '/');
        *trust_domain = kl_arena_strndup(a, out + 9, slash ? (size_t)(slash - out - 9) : strlen(out + 9));
    }
    GENERAL_NAMES_free(names);
    return out;
}
