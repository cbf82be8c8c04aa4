/* Query-string parameters (application/x-www-form-urlencoded). */
#ifndef KL_URLQUERY_H
#define KL_URLQUERY_H

#include "core/arena.h"

/* The decoded value of the first parameter called name, or NULL. */
const char *kl_query_param(kl_arena *a, const char *query, const char *name);

#endif
