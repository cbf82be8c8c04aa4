/* A request body the caller compressed (Content-Encoding), made plain
 * before anything reads it.
 *
 * Codex CLI sends its Responses requests zstd-compressed when it talks to
 * OpenAI with a ChatGPT login, and other clients compress large bodies with
 * gzip: OpenAI's API takes both. Everything after the connection stage
 * (request facts, guardrails, hooks, sessions, records, the provider) reads
 * the plain body; the provider gets it uncompressed, without the header. */
#ifndef KL_BODY_H
#define KL_BODY_H

#include <stddef.h>

#include "dialect/dialect.h"

/* Decode body[0..len) as coding (the Content-Encoding value): gzip,
 * x-gzip, deflate (zlib's or raw) or zstd, one coding. On success returns 0
 * with *out (malloc, NUL-terminated, the caller frees) and *out_len; a
 * result larger than max is refused. -1 otherwise, with *kind (400 or 413)
 * and why (a static or snprintf'd message in msg[msglen]). */
int kl_body_decode(const char *coding, const char *body, size_t len, size_t max, char **out, size_t *out_len,
                   enum kl_err_kind *kind, char *msg, size_t msglen);

#endif
