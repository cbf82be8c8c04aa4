/* Query-string parameters (application/x-www-form-urlencoded) and
 * percent-encoded path segments. */
#ifndef KL_URLQUERY_H
#define KL_URLQUERY_H

#include "core/arena.h"

/* The decoded value of the first parameter called name, or NULL. "%00" is
 * left as it is: a C string cannot hold the byte, and cutting the value
 * there would turn "user%00,other" into "user". */
const char *kl_query_param(kl_arena *a, const char *query, const char *name);

/* The decoded value of the next parameter called name from *query on, or
 * NULL; *query is moved past it. For a parameter a caller may give more
 * than once, each of which some reader may take. */
const char *kl_query_param_next(kl_arena *a, const char **query, const char *name);

/* The bytes s[0..n) of one parameter's name or value decoded as a server
 * reads them ('+' is a space, "%XX" a byte, "%00" left as it is), in the
 * arena. */
char *kl_query_decode(kl_arena *a, const char *s, size_t n);

/* The first of names[0..n) that the query gives more than once, or NULL:
 * kl_query_param reads the first, another reader the last. */
const char *kl_query_repeated(const char *query, const char *const *names, size_t n);

/* A path segment's bytes s[0..n) decoded ("%3A" -> ':'; '+' stays '+'), in
 * the arena; NULL when it holds "%00", a malformed escape, or a control
 * character once decoded. */
char *kl_path_segment_decode(kl_arena *a, const char *s, size_t n);

/* s as one path segment: every byte but A-Z a-z 0-9 - . _ ~ escaped (so a
 * Bedrock model id's ':' and an ARN's '/' stay inside the segment). */
char *kl_path_segment_encode(kl_arena *a, const char *s);

#endif
