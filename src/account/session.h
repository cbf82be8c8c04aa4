/* Which conversation a request belongs to, so the records of one agent
 * session can be grouped.
 *
 * In order, the first that gives a usable id (1..128 visible ASCII bytes):
 *   1. header x-claude-code-session-id   (Claude Code >= 2.1.86)
 *   2. header session-id                 (Codex CLI)
 *   3. header x-session-id               (other clients)
 *   4. header x-codex-turn-metadata      JSON, its "session_id"
 *   5. body metadata.user_id             Claude Code: "..._session_<uuid>",
 *                                        or a JSON string with "session_id"
 *   6. "fp:" + hex SHA-256 of the login and the text of the conversation's
 *      first user message (messages[], Responses input, Gemini contents[]),
 *      as the body spells it (JSON escapes included), at most 4 KiB of each
 *      part: every turn resends that message, so all turns share the id.
 * Header ids are returned as sent; they are scoped by the caller's login
 * wherever they are stored. */
#ifndef KL_SESSION_H
#define KL_SESSION_H

#include <stddef.h>

#include "core/arena.h"
#include "dialect/dialect.h"
#include "listen/http.h"

struct evp_md_st;

/* The session id (arena string), or NULL when there is no id and nothing
 * to fingerprint. body (with bm, where its members are) and login may be
 * NULL; sha256 is the worker's fetched digest (NULL: OpenSSL's default). */
const char *kl_session_id(kl_arena *a, const struct kl_header *headers, size_t nheaders,
                          const char *body, const struct kl_body_map *bm, const char *login,
                          const struct evp_md_st *sha256);

#endif
