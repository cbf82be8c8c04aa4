/* Percent-decoding and query-string lookup with Go's net/url semantics.
 *
 * tailscaled reads its parameters with r.FormValue, i.e. url.ParseQuery:
 * pairs split on '&', a pair containing ';' is dropped, a pair with a bad
 * %-escape is dropped, '+' means space, and the first value wins. Mirroring
 * that exactly is what makes "missing" versus "invalid" addr answers match. */
#ifndef FTS_URLENC_H
#define FTS_URLENC_H

#include <stddef.h>

/* Go url.PathUnescape (plus_is_space=0) or url.QueryUnescape (1).
 * On success *out is a new NUL-terminated buffer (it may contain NULs; use
 * *outlen). Returns 0, or -1 for a malformed %-escape. */
int fts_unescape(const char *s, size_t n, int plus_is_space, char **out, size_t *outlen);

/* First value of key in an application/x-www-form-urlencoded string, as
 * url.Values.Get after url.ParseQuery. Returns 1 and a new buffer in *val
 * when found, 0 when absent. */
int fts_form_lookup(const char *q, size_t n, const char *key, char **val, size_t *vlen);

#endif
