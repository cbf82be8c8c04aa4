/* What a hook is sent, and the call itself: shared by the pre_request chain
 * (guard.c) and the hooks told after the answer (after.c). The payload is
 * Aperture's HookCallData: "metadata" always, the other fields as the
 * grant's `send` lists. */
#ifndef KL_HOOKCALL_H
#define KL_HOOKCALL_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "core/exchange.h"
#include "guard/hooks.h"
#include "upstream/fetch.h"

/* The last user turn of a request body, whatever the dialect calls it
 * (arena string, or NULL when it has none). -1 for a body whose parsed tree
 * would hide from a hook what the provider sees (a \u0000 escape, a key's
 * second value). */
int kl_hook_user_message(kl_exchange *ex, const char **out);

/* {"metadata": {...}} with metadata.grants when send asks for it, plus
 * user_message and request_body (the body as forwarded) when asked. */
cJSON *kl_hook_payload(kl_exchange *ex, unsigned send, const char *user_message);

/* payload's compact text (cJSON_free it), every byte that is not UTF-8
 * replaced by U+FFFD (kl_utf8_clean), so that it is always JSON a strict
 * reader takes; its length in *len. */
char *kl_hook_text(const cJSON *payload, size_t *len);

/* POST payload to hook h on the worker's curl multi, its answer read up
 * to max_reply bytes (0: read and dropped, only its status counts). NULL
 * when the call could not start (done is then not called). */
struct kl_fetch *kl_hook_call(kl_worker *w, const struct kl_hook *h, const cJSON *payload, size_t max_reply,
                              kl_fetch_done done, void *arg);
/* The same with the payload as text already (body[0..len), copied). */
struct kl_fetch *kl_hook_post(kl_worker *w, const struct kl_hook *h, const char *body, size_t len, size_t max_reply,
                              kl_fetch_done done, void *arg);

#endif
