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

/* name is lowercase. Four names are looked for in every request's headers:
 * the first byte (| 0x20 folds an ASCII letter's case) turns most away
 * before strcasecmp. */
static const char *header(const struct kl_header *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (h[i].name && h[i].value && (h[i].name[0] | 0x20) == name[0] && !strcasecmp(h[i].name, name))
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
 * writes the same message the same way on every turn). v starts with the
 * string; where it ends need not be known: only its first
 * KL_FINGERPRINT_BYTES are looked at. */
static bool hash_text(EVP_MD_CTX *md, const char *v, size_t n)
{
    const char *raw;
    size_t rl;
    if (!kl_json_string_prefix(v, n, KL_FINGERPRINT_BYTES, &raw, &rl) || rl == 0)
        return false;
    EVP_DigestUpdate(md, raw, rl);
    EVP_DigestUpdate(md, "\n", 1);
    return true;
}

/* Feed the text of one message's content: a string, or an array of parts
 * whose "text" members count (text, input_text, Gemini parts). Each part is
 * hashed as a string would be: "hi" and [{"type":"text","text":"hi"}] agree.
 * v starts with the content; n may run past its end. */
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

static bool key_is(const char *k, size_t kl, const char *want)
{
    return strlen(want) == kl && memcmp(k, want, kl) == 0;
}

/* One message m[0..n) (n may run past its end): 1 when it is a user
 * message whose text was hashed, else 0 with *end just past it. When the
 * role comes before the content (as every client writes it), the content
 * is hashed where it starts and the rest of the message is never scanned:
 * a megabyte first message costs 4 KiB of reading, not a megabyte. */
static int user_text(EVP_MD_CTX *md, const char *m, size_t n, const char *content_key,
                     bool role_optional, size_t *end)
{
    int role = -1;                      /* unknown, 0 other, 1 user */
    size_t pos = 0, v, content = 0;
    bool have_content = false, tried = false;
    const char *k;
    size_t kl;
    while (kl_json_member_next(m, n, &pos, &k, &kl, &v)) {
        if (key_is(k, kl, "role")) {
            role = n - v >= 6 && memcmp(m + v, "\"user\"", 6) == 0;
        } else if (key_is(k, kl, content_key)) {
            content = v;
            have_content = true;
            if (role == 1) {
                tried = true;
                if (hash_content(md, m + v, n - v))
                    return 1;
            }
        }
    }
    *end = pos;
    bool user = role == 1 || (role == -1 && role_optional);
    if (user && have_content && !tried && hash_content(md, m + content, pos - content))
        return 1;
    return 0;
}

/* The first user message with any text: OpenAI chat / Anthropic messages[],
 * Responses input (a string or items), Gemini contents[] (role optional). */
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
    if (!list.end || body[list.start] != '[')
        return false;
    const char *arr = body + list.start;
    size_t n = list.end - list.start, i = 1;
    for (;;) {
        while (i < n && (unsigned char)arr[i] <= 0x20)
            i++;
        if (i >= n || arr[i] == ']')
            return false;
        size_t end = 0;
        if (arr[i] == '{') {
            if (user_text(md, arr + i, n - i, content_key, role_optional, &end))
                return true;
            end += i;
        } else {
            end = kl_json_skip_value(arr, n, i);
        }
        if (end <= i || end > n)
            return false;
        i = end;
        while (i < n && (unsigned char)arr[i] <= 0x20)
            i++;
        if (i < n && arr[i] == ',')
            i++;
    }
}

static const char *fingerprint(kl_arena *a, const char *body, const struct kl_body_map *bm,
                               const char *login, const EVP_MD *sha256)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        return NULL;
    static const char domain[] = "keyless-session-v2";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    const char *r = NULL;
    if (EVP_DigestInit_ex(md, sha256 ? sha256 : EVP_sha256(), NULL) == 1) {
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
                          const char *body, const struct kl_body_map *bm, const char *login,
                          const EVP_MD *sha256)
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
        id = fingerprint(a, body, bm, login, sha256);
    return id;
}
