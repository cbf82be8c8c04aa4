/* Byte-level JSON scanning without building a tree: find the span of a
 * top-level member so the route stage can splice a request body (rewrite a
 * qualified model name, add stream_options) without re-serializing
 * megabytes of prompt. The input must already be valid JSON. */
#ifndef KL_JSONSCAN_H
#define KL_JSONSCAN_H

#include <stddef.h>

/* Index just past the JSON value starting at i (after leading white space),
 * or (size_t)-1 when the text ends first. */
size_t kl_json_skip_value(const char *s, size_t len, size_t i);

/* Find member `key` of the top-level object. On success sets [*vstart,*vend)
 * to the value's bytes and returns 0; returns -1 when absent. */
int kl_json_find_member(const char *s, size_t len, const char *key,
                        size_t *vstart, size_t *vend);

/* Offset just after the opening '{' of the top-level object, or -1. */
size_t kl_json_object_open(const char *s, size_t len);

#endif
