#include "account/session.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

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
static const char *claude_user_id_session(kl_arena *a, const cJSON *body)
{
    const cJSON *uid = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(body, "metadata"), "user_id");
    if (!cJSON_IsString(uid))
        return NULL;
    const char *s = uid->valuestring;
    if (s[0] == '{')
        return json_session_id(a, s);
    for (const char *p = s; (p = strstr(p, "session_")); p++)
        if (strnlen(p + 8, 36) == 36 && is_uuid(p + 8))
            return kl_arena_strndup(a, p + 8, 36);
    return NULL;
}

/* A fingerprint needs only the start of a message to tell conversations
 * apart; hashing a whole megabyte prompt costs ~1 ms for nothing. */
#define KL_FINGERPRINT_BYTES 4096

/* Feed the text of one message's content: a string, or an array of parts
 * whose "text" members count (text, input_text, Gemini parts). */
static bool hash_content(EVP_MD_CTX *md, const cJSON *content)
{
    bool any = false;
    if (cJSON_IsString(content)) {
        size_t n = strlen(content->valuestring);
        if (n > KL_FINGERPRINT_BYTES)
            n = KL_FINGERPRINT_BYTES;
        if (n) {
            EVP_DigestUpdate(md, content->valuestring, n);
            EVP_DigestUpdate(md, "\n", 1);
            any = true;
        }
        return any;
    }
    /* each part as a string would be: "hi" and [{"type":"text","text":"hi"}] agree */
    for (const cJSON *pt = cJSON_IsArray(content) ? content->child : NULL; pt; pt = pt->next) {
        const cJSON *t = cJSON_IsString(pt) ? pt : cJSON_GetObjectItemCaseSensitive(pt, "text");
        if (!cJSON_IsString(t) || !t->valuestring[0])
            continue;
        size_t n = strlen(t->valuestring);
        EVP_DigestUpdate(md, t->valuestring, n > KL_FINGERPRINT_BYTES ? KL_FINGERPRINT_BYTES : n);
        EVP_DigestUpdate(md, "\n", 1);
        any = true;
    }
    return any;
}

static bool is_user(const cJSON *m, bool role_optional)
{
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    if (!role)
        return role_optional;
    return cJSON_IsString(role) && !strcmp(role->valuestring, "user");
}

/* The first user message with any text: OpenAI chat / Anthropic messages[],
 * Responses input (a string or items), Gemini contents[] (role optional). */
static bool hash_first_user_text(EVP_MD_CTX *md, const cJSON *body)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
    const char *content_key = "content";
    bool role_optional = false;
    if (!cJSON_IsArray(msgs)) {
        msgs = cJSON_GetObjectItemCaseSensitive(body, "input");
        if (cJSON_IsString(msgs))
            return hash_content(md, msgs);
    }
    if (!cJSON_IsArray(msgs)) {
        msgs = cJSON_GetObjectItemCaseSensitive(body, "contents");
        content_key = "parts";
        role_optional = true;
    }
    for (const cJSON *m = cJSON_IsArray(msgs) ? msgs->child : NULL; m; m = m->next)
        if (cJSON_IsObject(m) && is_user(m, role_optional) &&
            hash_content(md, cJSON_GetObjectItemCaseSensitive(m, content_key)))
            return true;
    return false;
}

static const char *fingerprint(kl_arena *a, const cJSON *body, const char *login)
{
    if (!cJSON_IsObject(body))
        return NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        return NULL;
    static const char domain[] = "keyless-session-v1";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    const char *r = NULL;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
        EVP_DigestUpdate(md, domain, sizeof(domain));           /* NUL included */
        if (login)
            EVP_DigestUpdate(md, login, strlen(login) + 1);
        else
            EVP_DigestUpdate(md, "", 1);
        if (hash_first_user_text(md, body) && EVP_DigestFinal_ex(md, digest, &dlen) == 1) {
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
                          const cJSON *body, const char *login)
{
    static const char *const direct[] = {"x-claude-code-session-id", "session-id", "x-session-id"};
    for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++) {
        const char *v = header(headers, nheaders, direct[i]);
        if (v && usable(v))
            return kl_arena_strdup(a, v);
    }
    const char *meta = header(headers, nheaders, "x-codex-turn-metadata");
    const char *id = meta ? json_session_id(a, meta) : NULL;
    if (!id)
        id = claude_user_id_session(a, body);
    return id ? id : fingerprint(a, body, login);
}
