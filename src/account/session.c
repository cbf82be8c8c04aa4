#include "account/session.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "core/jsonscan.h"

#define MAX_ID 128

/* A client-supplied id ends up in records and on the dashboard: accept only
 * short runs of visible ASCII. */
static bool usable(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] <= 0x20 || (unsigned char)s[n] >= 0x7f || n >= MAX_ID)
            return false;
    return n > 0;
}

static const char *header(const struct kl_header *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (h[i].name && h[i].value && !strcasecmp(h[i].name, name))
            return h[i].value;
    return NULL;
}

static const char *json_session_id(kl_arena *a, const char *text)
{
    cJSON *j = cJSON_Parse(text);
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(j, "session_id");
    const char *r = cJSON_IsString(sid) && usable(sid->valuestring)
                        ? kl_arena_strdup(a, sid->valuestring) : NULL;
    cJSON_Delete(j);
    return r;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* 8-4-4-4-12 hex digits. */
static bool is_uuid(const char *s)
{
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return true;
}

/* Claude Code's metadata.user_id: "user_<hash>_account_<uuid>_session_<uuid>"
 * before v2.1.78, a JSON string {"device_id",…,"session_id"} since. */
static const char *claude_user_id_session(kl_arena *a, const char *body, struct kl_body_span md)
{
    cJSON *meta = md.end ? cJSON_ParseWithLength(body + md.start, md.end - md.start) : NULL;
    const cJSON *uid = cJSON_GetObjectItemCaseSensitive(meta, "user_id");
    const char *r = NULL;
    if (cJSON_IsString(uid)) {
        const char *s = uid->valuestring;
        if (s[0] == '{') {
            r = json_session_id(a, s);
        } else {
            for (const char *p = s; !r && (p = strstr(p, "session_")); p++)
                if (strnlen(p + 8, 36) == 36 && is_uuid(p + 8))
                    r = kl_arena_strndup(a, p + 8, 36);
        }
    }
    cJSON_Delete(meta);
    return r;
}

/* A fingerprint needs only the start of a message to tell conversations
 * apart; hashing a whole megabyte prompt costs ~1 ms for nothing. */
#define KL_FINGERPRINT_BYTES 4096

/* Feed one piece of text as the body wrote it (escapes included: a client
 * writes the same message the same way on every turn). */
static bool hash_text(EVP_MD_CTX *md, const char *v, size_t n)
{
    const char *raw;
    size_t rl;
    if (!kl_json_string_raw(v, n, &raw, &rl) || rl == 0)
        return false;
    EVP_DigestUpdate(md, raw, rl > KL_FINGERPRINT_BYTES ? KL_FINGERPRINT_BYTES : rl);
    EVP_DigestUpdate(md, "\n", 1);
    return true;
}

/* Feed the text of one message's content: a string, or an array of parts
 * whose "text" members count (text, input_text, Gemini parts). Each part is
 * hashed as a string would be: "hi" and [{"type":"text","text":"hi"}] agree. */
static bool hash_content(EVP_MD_CTX *md, const char *v, size_t n)
{
    if (hash_text(md, v, n))
        return true;
    bool any = false;
    struct kl_json_want text = {.key = "text"};
    size_t pos = 0, s, e;
    while (kl_json_array_next(v, n, &pos, &s, &e, &text, 1)) {
        if (v[s] == '"')
            any |= hash_text(md, v + s, e - s);
        else if (text.end)
            any |= hash_text(md, v + s + text.start, text.end - text.start);
    }
    return any;
}

/* The first user message with any text: OpenAI chat / Anthropic messages[],
 * Responses input (a string or items), Gemini contents[] (role optional).
 * Each message is read in one pass: its role and content together. */
static bool hash_first_user_text(EVP_MD_CTX *md, const char *body, const struct kl_body_map *bm)
{
    struct kl_body_span list = bm->messages;
    const char *content_key = "content";
    bool role_optional = false;
    if (!list.end || body[list.start] != '[') {
        list = bm->input;
        if (list.end && body[list.start] == '"')
            return hash_text(md, body + list.start, list.end - list.start);
    }
    if (!list.end || body[list.start] != '[') {
        list = bm->contents;
        content_key = "parts";
        role_optional = true;
    }
    if (!list.end)
        return false;
    const char *arr = body + list.start;
    size_t n = list.end - list.start, pos = 0, s, e;
    struct kl_json_want w[] = {{.key = "role"}, {.key = content_key}};
    while (kl_json_array_next(arr, n, &pos, &s, &e, w, 2)) {
        if (arr[s] != '{' || !w[1].end)
            continue;
        bool user = w[0].end ? w[0].end - w[0].start == 6 && !memcmp(arr + s + w[0].start, "\"user\"", 6)
                             : role_optional;
        if (user && hash_content(md, arr + s + w[1].start, w[1].end - w[1].start))
            return true;
    }
    return false;
}

static const char *fingerprint(kl_arena *a, const char *body, const struct kl_body_map *bm,
                               const char *login)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        return NULL;
    static const char domain[] = "keyless-session-v2";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    const char *r = NULL;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
        EVP_DigestUpdate(md, domain, sizeof(domain));           /* NUL included */
        if (login)
            EVP_DigestUpdate(md, login, strlen(login) + 1);
        else
            EVP_DigestUpdate(md, "", 1);
        if (hash_first_user_text(md, body, bm) && EVP_DigestFinal_ex(md, digest, &dlen) == 1) {
            char *hex = kl_arena_alloc(a, 3 + 2 * dlen + 1);
            memcpy(hex, "fp:", 3);
            for (unsigned i = 0; i < dlen; i++) {
                hex[3 + 2 * i] = "0123456789abcdef"[digest[i] >> 4];
                hex[3 + 2 * i + 1] = "0123456789abcdef"[digest[i] & 15];
            }
            r = hex;
        }
    }
    EVP_MD_CTX_free(md);
    return r;
}

const char *kl_session_id(kl_arena *a, const struct kl_header *headers, size_t nheaders,
                          const char *body, const struct kl_body_map *bm, const char *login)
{
    static const char *const direct[] = {"x-claude-code-session-id", "session-id", "x-session-id"};
    for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++) {
        const char *v = header(headers, nheaders, direct[i]);
        if (v && usable(v))
            return kl_arena_strdup(a, v);
    }
    const char *meta = header(headers, nheaders, "x-codex-turn-metadata");
    const char *id = meta ? json_session_id(a, meta) : NULL;
    if (!id && body && bm)
        id = claude_user_id_session(a, body, bm->metadata);
    if (!id && body && bm)
        id = fingerprint(a, body, bm, login);
    return id;
}
