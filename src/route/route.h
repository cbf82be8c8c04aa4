/* Stage 6, route: pick the provider for the requested model, and build the
 * upstream request — URL, headers with the provider's key instead of the
 * caller's credentials, and the body (rewritten only where it must be). */
#ifndef KL_ROUTE_H
#define KL_ROUTE_H

#include <stdbool.h>

#include "core/exchange.h"
#include "pipeline.h"

enum kl_step kl_route_run(kl_exchange *ex);

/* Resolve a model name, bare ("gpt-4o") or qualified ("openai/gpt-4o"), to
 * the provider that serves it for the given compatibility bit (0 = any):
 * enabled, listing the model, highest preference; first in file order on a
 * tie. *bare receives the model id without the provider prefix. */
const struct kl_provider *kl_route_resolve(const kl_config *cfg, const char *model,
                                           unsigned compat, const char **bare,
                                           size_t *bare_len);

/* The same, considering only providers for which allowed(arg, p, bare)
 * holds (the caller's grants). */
const struct kl_provider *kl_route_resolve_filtered(const kl_config *cfg, const char *model,
                                                    unsigned compat,
                                                    bool (*allowed)(void *, const struct kl_provider *,
                                                                    const char *),
                                                    void *arg, const char **bare, size_t *bare_len);

/* Does p list this (bare) model id? */
bool kl_route_serves(const struct kl_provider *p, const char *model);

/* True when a caller's request header must not reach the provider:
 * credentials, hop-by-hop headers, framing curl redoes, identity headers. */
bool kl_route_drop_request_header(const char *name);
/* Is it one of the caller's credentials (also replaced in captures)? */
bool kl_route_credential_header(const char *name);
/* A header that chooses who pays (OpenAI-Organization, OpenAI-Project,
 * x-goog-user-project): it goes with the credential, so a caller's is
 * forwarded only with its own key (passthrough), never beside the
 * gateway's (a provider's add_headers may set one). */
bool kl_route_billing_header(const char *name);

/* Remove the parameters a caller may not set from a query string: the
 * field mask that could hide usage (`fields`), and with credentials, the
 * credentials (Gemini's `key`, Google's `$key`, `access_token` and
 * `oauth_token`, a presigned AWS request's X-Amz-*) and who pays
 * (`userProject`). Returns an arena string, or NULL when nothing remains. */
const char *kl_route_strip_key_param(kl_arena *a, const char *query, bool credentials);
/* Does the query carry a credential of the caller's own (`key`, `$key`,
 * `access_token`, `oauth_token`, a presigned AWS request's X-Amz-*)? */
bool kl_route_query_credential(const char *query);
/* The decoded values of the query's credential parameters, as named for
 * kl_route_query_credential (any case, the name percent-encoded or not),
 * in the arena and NULL-terminated. */
const char **kl_route_query_credentials(kl_arena *a, const char *query);

/* A provider's response headers ("Name: value\r\n" lines) as the caller
 * gets them: without the gateway's own x-keyless- names (a provider's
 * would pass for ours) and without any line that holds the provider's key
 * (of KL_MASK_MIN_KEY bytes or more)
 * (a provider echoing what it was sent must not hand it to the caller;
 * *had_key is then set). head itself when nothing goes. */
#define KL_MASK_MIN_KEY 8
const char *kl_route_response_headers(kl_arena *a, const char *head, const char *const *keys, bool *had_key);

/* A key as an answer may spell it, NULL-terminated (arena): as it is, with
 * '/' escaped as JSON encoders that escape it write it (PHP's, "\/"), and
 * percent-encoded as a URL holding it is (either case of hex digits, or
 * with '/' kept as Python's quote() keeps it). NULL
 * for a key shorter than KL_MASK_MIN_KEY: a placeholder is no secret. */
const char *const *kl_route_key_spellings(kl_arena *a, const char *key);

/* The same for the answer's body, as it arrives in any split: every
 * occurrence of the provider's key in any of its spellings (keys, from
 * kl_route_key_spellings) becomes as many '*' (the length stays,
 * so a Content-Length still holds), and a tail that may begin the key
 * waits (*carry, arena) for the next piece; data NULL at the end gives what
 * waited. Returns the bytes to relay (data itself when nothing changed or
 * waits) and their length in *out_len; *masked set when a key was found. */
const char *kl_route_mask_key(kl_arena *a, const char *const *keys, char **carry, size_t *carry_len,
                              const char *data, size_t len, size_t *out_len, bool *masked);

#endif
