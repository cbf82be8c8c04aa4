/* Query-string parameters (application/x-www-form-urlencoded). */
#ifndef KL_URLQUERY_H
#define KL_URLQUERY_H

#include "core/arena.h"

/* The decoded value of the first parameter called name, or NULL. "%00" is
 * left as it is: a C string cannot hold the byte, and cutting the value
 * there would turn "user%00,other" into "user". */
const char *kl_query_param(kl_arena *a, const char *query, const char *name);

#endif
