/* Diagnostics collected while reading a configuration: each names its
 * severity, where in the file it is, and what is wrong, so `keyless check`
 * can print them all at once instead of stopping at the first. */
#ifndef KL_DIAG_H
#define KL_DIAG_H

#include <stddef.h>

enum kl_severity { KL_SEV_ERROR, KL_SEV_WARNING, KL_SEV_NOTE };

struct kl_diag {
    enum kl_severity sev;
    int line, col;              /* 0 when not tied to a place */
    char *msg;
};

typedef struct kl_diags {
    struct kl_diag *v;
    size_t n, cap;
    int errors, warnings;
} kl_diags;

void kl_diags_add(kl_diags *d, enum kl_severity sev, int line, int col,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Writes "path:line:col: error: msg" lines to f. */
void kl_diags_print(const kl_diags *d, const char *path, void *f);
void kl_diags_free(kl_diags *d);

#endif
