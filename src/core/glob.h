#ifndef KL_GLOB_H
#define KL_GLOB_H

#include <stdbool.h>

/* Globs over '/'-separated names ("provider/model", a token's "acme/app" or
 * "refs/heads/main"): `*` matches within one segment, `**` across any
 * number of them; every other character matches itself. */
bool kl_glob_match(const char *pattern, const char *name);

/* Larger is more specific: literal characters count, wildcards do not. */
int kl_glob_specificity(const char *pattern);

#endif
