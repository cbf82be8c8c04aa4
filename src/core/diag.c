#include "core/diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void kl_diags_add(kl_diags *d, enum kl_severity sev, int line, int col,
                  const char *fmt, ...)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->v = realloc(d->v, d->cap * sizeof(*d->v));
        if (!d->v)
            abort();
    }
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    d->v[d->n++] = (struct kl_diag){sev, line, col, msg};
    if (sev == KL_SEV_ERROR)
        d->errors++;
    else if (sev == KL_SEV_WARNING)
        d->warnings++;
}

void kl_diags_print(const kl_diags *d, const char *path, void *fp)
{
    static const char *names[] = {"error", "warning", "note"};
    FILE *f = fp;
    for (size_t i = 0; i < d->n; i++) {
        const struct kl_diag *g = &d->v[i];
        if (g->line > 0)
            fprintf(f, "%s:%d:%d: %s: %s\n", path, g->line, g->col, names[g->sev], g->msg);
        else
            fprintf(f, "%s: %s: %s\n", path, names[g->sev], g->msg);
    }
}

void kl_diags_free(kl_diags *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].msg);
    free(d->v);
    *d = (kl_diags){0};
}
