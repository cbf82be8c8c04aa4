/* Built-in guardrails: Hyperscan (Intel's on amd64, Vectorscan elsewhere;
 * see vectorscan_549) finds every built-in kind and configured pattern in
 * one pass over the body; the few kinds a regular expression cannot judge
 * alone (card numbers, social security numbers, IBANs) are checked in C
 * before they count. */
#include "guard/scan.h"

#include <ctype.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hs/hs.h>
#include <libpsl.h>

#include "core/decoded.h"
#include "guard/attach.h"

enum check { CHECK_NONE, CHECK_TOKEN, CHECK_LUHN, CHECK_SSN, CHECK_IBAN, CHECK_NOT_ANTHROPIC, CHECK_PRIVATE_KEY, CHECK_EMAIL };

/* Findings never contain '"' or '\\' (private keys aside, see extend_key),
 * so they never cross a JSON string's boundary. A token (CHECK_TOKEN, and
 * openai_key) is not part of a run of base64 (glued): "AIza" + 35 or "_sk-"
 * + 32 turn up by chance in the base64 a request carries (Codex's encrypted
 * reasoning, one in ~1,000 blobs of 8 KB; images, one in ~30 of 1 MiB). */
static const struct builtin {
    const char *kind, *regex;
    enum check check;
    bool pii;
} builtins[] = {
    {"aws_access_key", "(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}", CHECK_TOKEN, false},
    {"github_token", "gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,}", CHECK_TOKEN, false},
    {"anthropic_key", "sk-ant-[A-Za-z0-9_-]{32,}", CHECK_TOKEN, false},
    {"openai_key", "sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}", CHECK_NOT_ANTHROPIC, false},
    {"google_api_key", "AIza[0-9A-Za-z_-]{35}", CHECK_TOKEN, false},
    {"slack_token", "xox[abposr]-[0-9A-Za-z-]{10,}", CHECK_TOKEN, false},
    {"stripe_key", "(?:sk|rk)_live_[0-9A-Za-z]{20,}", CHECK_TOKEN, false},
    {"private_key", "-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", CHECK_PRIVATE_KEY, false},
    {"jwt", "eyJ[A-Za-z0-9_-]{8,}\\.eyJ[A-Za-z0-9_-]{8,}\\.[A-Za-z0-9_-]{8,}", CHECK_TOKEN, false},
    /* its start is found in C (CHECK_EMAIL): Vectorscan's leftmost-start
     * tracking for an unbounded local part cost 5 us of a 5.4 us scan of a
     * 1 KB body, and a bounded one does not compile; a local part may hold
     * UTF-8 (RFC 6531: "rené@") */
    {"email", "[A-Za-z0-9._%+\\x80-\\xff-]@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*\\.(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9-]{1,59})",
     CHECK_EMAIL, true},
    /* 13-19 digits in groups of four (the last one shorter), or 4-6-5
     * (American Express) and 4-6-4 (Diners); spaces or dashes between groups
     * only: single digits with spaces are a table */
    {"credit_card",
     "[0-9]{4}(?:[ -]?[0-9]{4}){2}[ -]?[0-9]{1,7}|[0-9]{4}(?:[ -]?[0-9]{4}){3}[ -]?[0-9]{1,3}|"
     "[0-9]{4}[ -]?[0-9]{6}[ -]?[0-9]{4,5}",
     CHECK_LUHN, true},
    {"us_ssn", "[0-9]{3}-[0-9]{2}-[0-9]{4}", CHECK_SSN, true},
    {"iban", "[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}", CHECK_IBAN, true},
};
#define NBUILTINS (sizeof(builtins) / sizeof(builtins[0]))

struct rule {
    const char *kind;
    enum kl_scan_action action;
    enum check check;
};

/* A second, small database: each match ends where a base64 attachment may
 * begin (guard/attach.h), just inside the string value of a member named
 * data, bytes, file_data or body (Bedrock CountTokens' InvokeModel form), or
 * a data: URL (after "data:"). Its own
 * pass over a body costs ~50 us a MiB; the same two expressions in the
 * rules' database slowed that pass by ~190 us a MiB. */
static const char *const ATTACH_EXPRS[2] = {
    "\"(?:data|bytes|file_data|body)\"[ \\t\\r\\n]*:[ \\t\\r\\n]*\"",
    ":[ \\t\\r\\n]*\"data:",
};

struct kl_guardrails {
    psl_ctx_t *psl;                 /* the public suffix list: which labels end a domain (email_domain_ok) */
    hs_database_t *db;
    hs_database_t *attach_db;       /* ATTACH_EXPRS */
    struct rule *rules;
    size_t n;
    enum kl_scan_action strongest;  /* of every rule: what too many findings mean */
    bool answers;                   /* the provider's answers are scanned too */
    size_t stream_hold;             /* bytes of a streamed answer's text held back (guard/stream.h) */
};

struct kl_scan_scratch {
    hs_scratch_t *hs;
    char *copy;                 /* bodies up to KL_SCAN_COPY_KEEP, padded (see kl_scan) */
    size_t copy_cap;
};

/* Vectorscan 5.4.9 (Debian 12's) can miss a match that ends a few bytes
 * before the end of the buffer, depending on where the buffer lies in
 * memory: an address in "reply to sam@example.com ok\"}]}" was found at
 * 37 of 64 alignments. With KL_SCAN_PAD zero bytes after the body it is
 * found at every one (tests/unit/test_scan.c); matches that end in the
 * padding are dropped. Bodies up to KL_SCAN_COPY_KEEP are copied into the
 * thread's buffer, larger ones into one freed after the scan. */
#define KL_SCAN_PAD 64
#define KL_SCAN_COPY_KEEP (1u << 20)

static void guardrails_free(void *arg)
{
    struct kl_guardrails *g = arg;
    hs_free_database(g->db);
    hs_free_database(g->attach_db);
    psl_free(g->psl);
}

static int parse_action(const cJSON *v, enum kl_scan_action *out)
{
    static const char *const names[] = {"off", "log", "redact", "block"};
    for (int i = 0; i < 4; i++)
        if (cJSON_IsString(v) && strcmp(v->valuestring, names[i]) == 0) {
            *out = (enum kl_scan_action)i;
            return 0;
        }
    return -1;
}

/* "secrets" or "pii": "block" | {"action": "block", "kinds": ["aws_access_key", ...]} */
static void read_class(kl_cfg_ctx *c, const cJSON *v, bool pii, enum kl_scan_action *per_builtin)
{
    const char *what = pii ? "guardrails.pii" : "guardrails.secrets";
    const cJSON *action = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "action") : v;
    const cJSON *kinds = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "kinds") : NULL;
    enum kl_scan_action a;
    if (parse_action(action, &a) < 0) {
        kl_cfg_report(c, KL_SEV_ERROR, action ? action : v,
                      "%s: the action must be \"block\", \"redact\", \"log\" or \"off\"", what);
        return;
    }
    const cJSON *obj = cJSON_IsObject(v) ? v : NULL, *m;
    cJSON_ArrayForEach(m, obj) {
        if (strcmp(m->string, "action") != 0 && strcmp(m->string, "kinds") != 0)
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in %s (ignored)", m->string, what);
    }
    if (kinds && !cJSON_IsArray(kinds)) {
        kl_cfg_report(c, KL_SEV_ERROR, kinds, "%s.kinds must be an array of kind names", what);
        return;
    }
    for (size_t i = 0; i < NBUILTINS; i++)
        if (builtins[i].pii == pii && !kinds)
            per_builtin[i] = a;
    cJSON_ArrayForEach(m, kinds) {
        size_t i = 0;
        while (i < NBUILTINS && !(cJSON_IsString(m) && builtins[i].pii == pii && strcmp(m->valuestring, builtins[i].kind) == 0))
            i++;
        if (i == NBUILTINS) {
            char known[512];
            size_t o = 0;
            for (size_t k = 0; k < NBUILTINS; k++)
                if (builtins[k].pii == pii)
                    o += (size_t)snprintf(known + o, sizeof(known) - o, "%s%s", o ? ", " : "", builtins[k].kind);
            kl_cfg_report(c, KL_SEV_ERROR, m, "%s.kinds: unknown kind (known: %s)", what, known);
            continue;
        }
        per_builtin[i] = a;
    }
}

static bool pattern_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-' || *s == '.'))
            return false;
    return true;
}

/* Does a pattern anchor at the end of the body ('$', '\z', '\Z' outside
 * a class)? Every scan has padding after the body (kl_scan), so such an
 * anchor never matches there; a JSON body ends with '}' anyway. */
static bool ends_body(const char *re)
{
    bool in_class = false;
    for (const char *p = re; *p; p++) {
        if (*p == '\\') {
            if (!in_class && (p[1] == 'z' || p[1] == 'Z'))
                return true;
            if (p[1])
                p++;
        } else if (*p == '[') {
            in_class = true;
        } else if (*p == ']') {
            in_class = false;
        } else if (*p == '$' && !in_class) {
            return true;
        }
    }
    return false;
}

/* Is the Hyperscan library loaded Vectorscan 5.4.9 on x86? Configured
 * patterns are not safe with it (docs/design.md, "Guard"): a differential
 * run against PCRE2 found patterns whose matches it missed (z[a-z0-9],
 * s[a-z]{3}t) and 2 % of random ones on which hs_scan aborted the
 * process; Intel's Hyperscan 5.4.0, the same API, matched every one. The
 * built-in kinds' expressions were found alike on both. Asked of the
 * library itself, since it is loaded at run time. */
static bool vectorscan_549(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return strncmp(hs_version(), "5.4.9", 5) == 0;
#else
    return false;
#endif
}

void kl_guardrails_read_config(kl_cfg_ctx *c, const cJSON *v)
{
    kl_arena *a = &c->cfg->arena;
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "guardrails must be an object (\"secrets\", \"pii\", \"patterns\")");
        return;
    }
    enum kl_scan_action per_builtin[NBUILTINS] = {0};
    const cJSON *patterns = NULL, *m;
    bool answers = false;
    double hold = KL_STREAM_HOLD_DEFAULT;
    cJSON_ArrayForEach(m, v) {
        if (strcmp(m->string, "secrets") == 0)
            read_class(c, m, false, per_builtin);
        else if (strcmp(m->string, "pii") == 0)
            read_class(c, m, true, per_builtin);
        else if (strcmp(m->string, "patterns") == 0)
            patterns = m;
        else if (strcmp(m->string, "answers") == 0 && cJSON_IsBool(m))
            answers = cJSON_IsTrue(m);
        else if (strcmp(m->string, "answers") == 0)
            kl_cfg_report(c, KL_SEV_ERROR, m, "guardrails.answers must be true or false");
        else if (strcmp(m->string, "stream_hold") == 0 && cJSON_IsNumber(m) && m->valuedouble >= 64 &&
                 m->valuedouble <= 65536 && m->valuedouble == (double)(int)m->valuedouble)
            hold = m->valuedouble;
        else if (strcmp(m->string, "stream_hold") == 0)
            kl_cfg_report(c, KL_SEV_ERROR, m, "guardrails.stream_hold must be a whole number of bytes from 64 to 65536");
        else
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in guardrails (ignored)", m->string);
    }
    if (patterns && !cJSON_IsArray(patterns)) {
        kl_cfg_report(c, KL_SEV_ERROR, patterns, "guardrails.patterns must be an array of {\"name\", \"regex\", \"action\"}");
        patterns = NULL;
    }
    size_t cap = NBUILTINS + (size_t)cJSON_GetArraySize(patterns);
    struct kl_guardrails *g = kl_arena_alloc(a, sizeof(*g));
    memset(g, 0, sizeof(*g));
    g->answers = answers;
    g->stream_hold = (size_t)hold;
    g->rules = kl_arena_alloc(a, cap * sizeof(*g->rules));
    const char **exprs = kl_arena_alloc(a, (cap + 1) * sizeof(char *));
    const cJSON **where = kl_arena_alloc(a, (cap + 1) * sizeof(cJSON *));
    unsigned *flags = kl_arena_alloc(a, (cap + 1) * sizeof(unsigned));
    unsigned *ids = kl_arena_alloc(a, (cap + 1) * sizeof(unsigned));
    for (size_t i = 0; i < NBUILTINS; i++) {
        if (per_builtin[i] == KL_SCAN_OFF)
            continue;
        g->rules[g->n] = (struct rule){builtins[i].kind, per_builtin[i], builtins[i].check};
        if (per_builtin[i] > g->strongest)
            g->strongest = per_builtin[i];
        exprs[g->n] = builtins[i].regex;
        where[g->n] = v;
        g->n++;
    }
    cJSON_ArrayForEach(m, patterns) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        const cJSON *regex = cJSON_GetObjectItemCaseSensitive(m, "regex");
        enum kl_scan_action act;
        if (!cJSON_IsString(name) || !pattern_name_ok(name->valuestring) || !cJSON_IsString(regex) ||
            !regex->valuestring[0] || parse_action(cJSON_GetObjectItemCaseSensitive(m, "action"), &act) < 0) {
            kl_cfg_report(c, KL_SEV_ERROR, m,
                          "a guardrails pattern is {\"name\": \"ticket_id\" (letters, digits, _ - .), \"regex\": \"...\", "
                          "\"action\": \"block\"|\"redact\"|\"log\"|\"off\"}");
            continue;
        }
        if (act == KL_SCAN_OFF)
            continue;
        if (ends_body(regex->valuestring))
            kl_cfg_report(c, KL_SEV_WARNING, regex,
                          "guardrails pattern %s: '$' and '\\z' never match, since bodies are JSON and scanned "
                          "with padding after them (use \\b, or the '\"' that ends a string)", name->valuestring);
        g->rules[g->n] = (struct rule){kl_arena_strdup(a, name->valuestring), act, CHECK_NONE};
        if (act > g->strongest)
            g->strongest = act;
        exprs[g->n] = kl_arena_strdup(a, regex->valuestring);
        where[g->n] = regex;
        g->n++;
    }
    if (!g->n)
        return; /* everything off: no scan at all */
    if (cJSON_GetArraySize(patterns) > 0 && vectorscan_549())
        kl_cfg_report(c, KL_SEV_WARNING, patterns,
                      "guardrails: this keyless runs on Vectorscan 5.4.9 (Debian 12's libvectorscan5), which on x86 "
                      "misses matches of some patterns and aborts the process scanning text for others; install "
                      "libhyperscan-dev in its place (scripts/deps.sh does) and rebuild");
    for (size_t i = 0; i < g->n; i++) {
        flags[i] = g->rules[i].check == CHECK_EMAIL ? 0 : HS_FLAG_SOM_LEFTMOST;
        ids[i] = (unsigned)i;
    }
    hs_compile_error_t *err = NULL;
    if (hs_compile_multi(exprs, flags, ids, (unsigned)g->n, HS_MODE_BLOCK, NULL, &g->db, &err) != HS_SUCCESS) {
        size_t bad = err && err->expression >= 0 ? (size_t)err->expression : 0;
        kl_cfg_report(c, KL_SEV_ERROR, where[bad < g->n ? bad : 0], "guardrails: cannot compile %s: %s",
                      bad < g->n ? g->rules[bad].kind : "the patterns", err ? err->message : "unknown error");
        hs_free_compile_error(err);
        return;
    }
    static const unsigned attach_flags[2] = {0, 0}, attach_ids[2] = {0, 1};
    if (hs_compile_multi(ATTACH_EXPRS, attach_flags, attach_ids, 2, HS_MODE_BLOCK, NULL, &g->attach_db, &err) !=
        HS_SUCCESS) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "guardrails: cannot compile the attachment finder: %s",
                      err ? err->message : "unknown error");
        hs_free_compile_error(err);
        hs_free_database(g->db);
        g->db = NULL;
        return;
    }
    /* A stream's text is scanned with stream_hold bytes before where it
     * grew (guard/stream.c): a finding longer than that when it can first
     * match would never be seen whole, so the hold is at least the
     * shortest match of every rule that blocks or redacts. */
    for (size_t i = 0; answers && i < g->n; i++) {
        hs_expr_info_t *info = NULL;
        hs_compile_error_t *ierr = NULL;
        if (g->rules[i].action < KL_SCAN_REDACT)
            continue;
        if (hs_expression_info(exprs[i], flags[i], &info, &ierr) != HS_SUCCESS) {
            hs_free_compile_error(ierr);
            continue;
        }
        /* a bounded match is seen whole within its longest; an unbounded
         * one at least needs its shortest (the built-ins are recognised
         * early and followed as they grow, a JWT held back while it may be
         * under way: guard/stream.c) */
        bool bounded = info->max_width != UINT_MAX;
        unsigned need = bounded ? info->max_width : info->min_width;
        if (need > g->stream_hold) {
            kl_cfg_report(c, KL_SEV_NOTE, where[i], "guardrails: %s matches %s %u bytes, so streamed answers are "
                          "held back by %u bytes (stream_hold: %zu)", g->rules[i].kind,
                          bounded ? "up to" : "no fewer than", need, need, g->stream_hold);
            g->stream_hold = need;
        }
        if (!bounded && where[i] != v)
            kl_cfg_report(c, KL_SEV_NOTE, where[i], "guardrails: pattern %s has no longest match: in a streamed "
                          "answer, one recognised only once longer than stream_hold (%zu) is found when the stream "
                          "has ended, after the caller has had it", g->rules[i].kind, g->stream_hold);
        free(info);
        hs_free_compile_error(ierr);
    }
    /* Debian's publicsuffix file when newer than the list built into libpsl */
    g->psl = psl_latest(NULL);
    kl_config_on_free(c->cfg, guardrails_free, g);
    c->cfg->guardrails = g;
}

bool kl_guardrails_answers(const struct kl_guardrails *g)
{
    return g && g->answers;
}

bool kl_guardrails_redacts_answers(const struct kl_guardrails *g)
{
    for (size_t i = 0; g && g->answers && i < g->n; i++)
        if (g->rules[i].action == KL_SCAN_REDACT)
            return true;
    return false;
}

bool kl_guardrails_stops(const struct kl_guardrails *g, const char *kind)
{
    for (size_t i = 0; g && i < g->n; i++)
        if (g->rules[i].action >= KL_SCAN_REDACT && strcmp(g->rules[i].kind, kind) == 0)
            return true;
    return false;
}

size_t kl_guardrails_stream_hold(const struct kl_guardrails *g)
{
    return g ? g->stream_hold : KL_STREAM_HOLD_DEFAULT;
}

enum kl_scan_action kl_guardrails_strongest(const struct kl_guardrails *g)
{
    return g ? g->strongest : KL_SCAN_OFF;
}

/* ---- scanning ----------------------------------------------------------- */

/* Where the JSON escape that byte i belongs to begins (its backslash), or
 * NONE when i is not inside one (an escape's own backslash is not "inside").
 * Findings are bytes of the raw body, so they must neither start nor end
 * halfway through "\\n" or "\\u00e9". */
#define NONE ((size_t)-1)

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Is the backslash at b an escape's first (an odd run of backslashes ends there)? */
static bool escapes(const char *body, size_t b)
{
    size_t run = 0;
    for (size_t k = b + 1; k-- > 0 && body[k] == '\\';)
        run++;
    return run % 2 == 1;
}

static size_t escape_of(const char *body, size_t i)
{
    for (size_t k = 1; k <= 5 && k <= i; k++) {
        size_t b = i - k;
        if (body[b] != '\\')
            continue;
        if (!escapes(body, b))
            return NONE;
        if (k == 1)
            return b;
        if (body[b + 1] != 'u')
            return NONE;
        for (size_t j = b + 2; j <= i; j++)
            if (!is_hex(body[j]))
                return NONE;
        return b;
    }
    return NONE;
}

/* The end (exclusive) of the escape that begins at backslash b. */
static size_t escape_end(const char *body, size_t len, size_t b)
{
    size_t e = b + 1 < len && body[b + 1] == 'u' ? b + 6 : b + 2;
    return e < len ? e : len;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* A character of base64 in either alphabet (and so of every token). */
static bool is_b64(char c)
{
    return is_alnum(c) || c == '+' || c == '/' || c == '_' || c == '-';
}

#define KL_SCAN_GLUED 64

/* The characters glued to a match, by class. */
struct glue {
    size_t n, upper, lower, digit;
};

static void glue_add(struct glue *g, char c)
{
    g->n++;
    g->upper += c >= 'A' && c <= 'Z';
    g->lower += c >= 'a' && c <= 'z';
    g->digit += is_digit(c);
}

/* The length of a line break ending just before i, or starting at i: a
 * newline, or its JSON escape (MIME and PEM wrap base64 at 64 or 76). */
static size_t break_before(const char *body, size_t i)
{
    if (i >= 1 && (body[i - 1] == '\n' || body[i - 1] == '\r'))
        return 1;
    return i >= 2 && body[i - 2] == '\\' && (body[i - 1] == 'n' || body[i - 1] == 'r') ? 2 : 0;
}

static size_t break_at(const char *body, size_t len, size_t i)
{
    if (i < len && (body[i] == '\n' || body[i] == '\r'))
        return 1;
    return i + 1 < len && body[i] == '\\' && (body[i + 1] == 'n' || body[i + 1] == 'r') ? 2 : 0;
}

/* Is body[from, to) inside a run of base64: KL_SCAN_GLUED characters of it
 * around the match (across line breaks), and random-looking (letters of
 * both cases and digits, as base64 of any bytes has about 26, 26 and 10 of
 * each 64)? Base64 has thousands of characters on each side of what
 * matched in it by chance; text puts a key after a space, a quote, "=", or
 * glued to words ("hi+team+my+key+is+", a path, a snake_case name), which
 * are not random. */
static bool glued(const char *body, size_t len, size_t from, size_t to)
{
    struct glue g = {0};
    size_t i = from, k;
    while (i > 0 && g.n < KL_SCAN_GLUED) {
        if (is_b64(body[i - 1]) && !(i >= 2 && body[i - 2] == '\\'))
            glue_add(&g, body[--i]);
        else if ((k = break_before(body, i)) && i > k && is_b64(body[i - k - 1]))
            i -= k;
        else
            break;
    }
    i = to;
    while (i < len && g.n < KL_SCAN_GLUED) {
        if (is_b64(body[i]))
            glue_add(&g, body[i++]);
        else if ((k = break_at(body, len, i)) && i + k < len && is_b64(body[i + k]))
            i += k;
        else
            break;
    }
    return g.n >= KL_SCAN_GLUED && g.upper >= 8 && g.lower >= 8 && g.digit >= 3;
}

/* The byte before position i, for word-boundary checks: a letter that ends
 * an escape ("\\n", "\\u00e9") is a boundary, not part of a word. */
static char before(const char *body, size_t i)
{
    if (i == 0 || escape_of(body, i - 1) != NONE || body[i - 1] == '\\')
        return ' ';
    return body[i - 1];
}

/* An address's start: back from its last '@' over the local part's
 * characters (at most 64 bytes, RFC 5321's limit), not into an escape: ASCII
 * letters, digits and ._%+-, and Latin letters in UTF-8 (U+00C0-U+024F, two
 * bytes: "rené@"), whole; never other scripts or punctuation, so that
 * "邮箱：zhang@" keeps its label and a character is never cut in two. The
 * '@' itself when no local part precedes it. */
static size_t email_start(const char *body, size_t to)
{
    size_t at = to;
    while (at > 0 && body[at - 1] != '@')
        at--;
    size_t from = at - 1; /* at the '@' */
    while (from > 0 && at - 1 - from < 64) {
        char c = before(body, from);
        unsigned char lead = from >= 2 ? (unsigned char)body[from - 2] : 0;
        if (is_alnum(c) || (c && strchr("._%+-", c))) {
            from--;
        } else if (((unsigned char)c & 0xc0) == 0x80 && lead >= 0xc3 && lead <= 0xc9 && at - 1 - (from - 2) <= 64) {
            from -= 2;
        } else {
            break;
        }
    }
    return from;
}

static bool luhn(const char *s, size_t n)
{
    int sum = 0, digits = 0;
    for (size_t i = n; i-- > 0;) {
        if (!is_digit(s[i]))
            continue;
        int d = s[i] - '0';
        if (digits++ % 2 == 1) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    return digits >= 13 && digits <= 19 && sum % 10 == 0;
}

/* Does a number begin as a card network's do (ISO/IEC 7812 issuer ranges:
 * Visa 4; Mastercard 51-55, 2221-2720; American Express 34, 37; Diners 30,
 * 36, 38, 39; Discover 6011, 644-649, 65; JCB 3528-3589; UnionPay 62;
 * Maestro 50, 56-69)? A millisecond timestamp (17...) or a large id that
 * passes Luhn, as one in ten numbers do, is no card. */
static bool card_prefix(const char *s, size_t n)
{
    char d[4];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 4; i++)
        if (is_digit(s[i]))
            d[k++] = s[i];
    if (k < 4)
        return false;
    int two = (d[0] - '0') * 10 + (d[1] - '0');
    int four = two * 100 + (d[2] - '0') * 10 + (d[3] - '0');
    return d[0] == '4' || (two >= 51 && two <= 55) || (four >= 2221 && four <= 2720) || two == 34 || two == 37 ||
           two == 30 || two == 36 || two == 38 || two == 39 || (two >= 50 && two <= 69) ||
           (four >= 3528 && four <= 3589);
}

/* A token that is a placeholder, not a secret: AWS's documentation marks
 * its example keys with EXAMPLE (AKIAIOSFODNN7EXAMPLE), and "ghp_" + 36 x,
 * "sk-" + 40 x fill templates and .env.example files, which agents read all
 * day; a real token's last 16 characters hold 10 or more different ones. */
static bool placeholder(const char *s, size_t n)
{
    if (memmem(s, n, "EXAMPLE", 7))
        return true;
    size_t k = n < 16 ? n : 16;
    bool seen[256] = {false};
    size_t distinct = 0;
    for (size_t i = n - k; i < n; i++)
        if (!seen[(unsigned char)s[i]]) {
            seen[(unsigned char)s[i]] = true;
            distinct++;
        }
    return distinct < 6;
}

/* Area 000, 666 and 900-999, group 00 and serial 0000 are never issued. */
static bool ssn_ok(const char *s)
{
    int area = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    return area != 0 && area != 666 && area < 900 && !(s[4] == '0' && s[5] == '0') &&
           memcmp(s + 7, "0000", 4) != 0;
}

/* ISO 13616: move the first four characters to the end, letters as 10-35,
 * and the number is 1 modulo 97. */
static bool iban_ok(const char *s, size_t n)
{
    char buf[64];
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof(buf); i++)
        if (s[i] != ' ')
            buf[k++] = s[i];
    if (k < 15 || k > 34)
        return false;
    unsigned rem = 0;
    for (size_t i = 0; i < k; i++) {
        char ch = buf[(i + 4) % k];
        if (is_digit(ch))
            rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
        else
            rem = (rem * 100 + (unsigned)(ch - 'A' + 10)) % 97;
    }
    return rem == 1;
}

/* A private key is redacted from its BEGIN line through its END line (in a
 * JSON string its line breaks are \\n escapes, wholly inside), or up to the
 * end of the string when no END line comes first. */
static size_t extend_key(const char *body, size_t len, size_t to)
{
    bool esc = false;
    for (size_t i = to; i < len; i++) {
        if (esc) {
            esc = false;
        } else if (body[i] == '\\') {
            esc = true;
        } else if (body[i] == '"') {
            return i;
        } else if (len - i >= 8 && memcmp(body + i, "-----END", 8) == 0) {
            size_t j = i + 8;
            while (j < len && (body[j] == ' ' || (body[j] >= 'A' && body[j] <= 'Z') || is_digit(body[j])))
                j++;
            return len - j >= 5 && memcmp(body + j, "-----", 5) == 0 ? j + 5 : i;
        }
    }
    return len;
}

/* Does an address's domain end in a top-level domain: one in the public
 * suffix list, or a name kept for private use (RFC 6761, 6762, ICANN's
 * .internal, the usual intranet ones), written in one case or capitalised?
 * Code is full of "logo@2x.png", "inputs@self.kernel", "q@k.mT" (matrix
 * products); "user@host.lan" is an address. */
static bool email_domain_ok(const psl_ctx_t *psl, const char *body, size_t from, size_t to)
{
    static const char *const private_use[] = {"test", "example", "invalid", "localhost", "local", "internal",
                                              "corp", "lan", "home", "intranet", "private", "localdomain"};
    size_t dot = to;
    while (dot > from && body[dot - 1] != '.')
        dot--;
    char tld[64];
    size_t n = to - dot;
    if (n == 0 || n >= sizeof(tld))
        return false;
    size_t upper = 0;
    for (size_t i = 0; i < n; i++) {
        upper += body[dot + i] >= 'A' && body[dot + i] <= 'Z';
        tld[i] = (char)tolower((unsigned char)body[dot + i]);
    }
    tld[n] = '\0';
    bool capitalised = upper == 1 && body[dot] >= 'A' && body[dot] <= 'Z';
    if (upper && upper != n && !capitalised)
        return false;
    for (size_t i = 0; i < sizeof(private_use) / sizeof(private_use[0]); i++)
        if (strcmp(tld, private_use[i]) == 0)
            return true;
    return psl && psl_is_public_suffix2(psl, tld, PSL_TYPE_ANY | PSL_TYPE_NO_STAR_RULE);
}

/* Is the address at from (its local part up to the '@') no one's: a
 * no-reply sender (Claude Code's own prompt has its commits say
 * "Co-Authored-By: Claude <noreply@anthropic.com>"), or a URL's user
 * ("git+ssh://git@github.com/…")? */
static bool role_address(const char *body, size_t from)
{
    static const char *const roles[] = {"noreply@", "no-reply@", "donotreply@", "do-not-reply@"};
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (!strncasecmp(body + from, roles[i], strlen(roles[i])))
            return true;
    return from >= 3 && !memcmp(body + from - 3, "://", 3);
}

/* Does a finding hold on a closer look? Numbers must stand alone (no digit
 * right before or after) and pass their checksum. */
static bool holds(const struct kl_guardrails *g, const struct rule *r, const char *body, size_t len, size_t *from,
                  size_t *to)
{
    const char *s = body + *from;
    size_t n = *to - *from;
    switch (r->check) {
    case CHECK_NONE:
        return true;
    case CHECK_NOT_ANTHROPIC:
        /* "sk-" inside a word ("risk-assessment-platform-backend-service", a
         * folder every agent puts in its prompt) begins no key */
        if ((n > 7 && memcmp(s, "sk-ant-", 7) == 0) || is_alnum(before(body, *from)))
            return false;
        /* fall through */
    case CHECK_TOKEN:
        return !glued(body, len, *from, *to) && !placeholder(s, n);
    case CHECK_PRIVATE_KEY:
        *to = extend_key(body, len, *to);
        return true;
    case CHECK_EMAIL:
        /* the match ends where the domain does ("x@a.pn" is no end of
         * "x@a.png"), in a top-level domain, and is no method call
         * ("x@self.weight.to(dtype)") nor a remote ("git@github.com:org/r",
         * scp's and ssh's user@host:path); it has a local part */
        if (*to < len && (is_alnum(body[*to]) || body[*to] == '(' ||
                          (body[*to] == ':' && *to + 1 < len &&
                           (is_alnum(body[*to + 1]) || body[*to + 1] == '/' || body[*to + 1] == '~'))))
            return false;
        *from = email_start(body, *to);
        return body[*from] != '@' && !role_address(body, *from) && email_domain_ok(g->psl, body, *from, *to);
    case CHECK_LUHN:
    case CHECK_SSN:
        if (is_digit(before(body, *from)) || (*to < len && is_digit(body[*to])))
            return false;
        return r->check == CHECK_LUHN ? luhn(s, n) && card_prefix(s, n) : ssn_ok(s);
    case CHECK_IBAN:
        if (is_alnum(before(body, *from)) || (*to < len && is_alnum(body[*to])) || glued(body, len, *from, *to))
            return false;
        return iban_ok(s, n);
    }
    return false;
}

struct hit {
    size_t from, to;
    unsigned rule;
    const char *repl;           /* an attachment's redacted base64, written instead of a marker; NULL */
    size_t repl_len;
};

/* What the match callback collects: findings that hold, at most
 * KL_SCAN_MAX_HITS of them. */
struct hits {
    const struct kl_guardrails *g;
    const char *body;
    size_t len;
    struct hit *v;
    size_t n, cap;
    bool overflow;
    size_t *att;                /* where attachments may begin (ATTACH_EXPRS), malloc */
    size_t natt, att_cap;
};

#define KL_SCAN_MAX_HITS 65536

static void hits_free(struct hits *h)
{
    free(h->v);
    free(h->att);
    h->v = NULL;
    h->att = NULL;
}

static int on_match(unsigned id, unsigned long long from, unsigned long long to, unsigned flags, void *ctx)
{
    (void)flags;
    struct hits *h = ctx;
    size_t f = (size_t)from, t = (size_t)to;
    if (t > h->len)
        return 0; /* it needed the padding (kl_scan) */
    if (!holds(h->g, &h->g->rules[id], h->body, h->len, &f, &t))
        return 0;
    if (h->n == KL_SCAN_MAX_HITS) {
        h->overflow = true;
        return 1; /* stop */
    }
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = realloc(h->v, h->cap * sizeof(*h->v));
        if (!h->v)
            abort();
    }
    h->v[h->n++] = (struct hit){f, t, id, NULL, 0};
    return 0;
}

static int on_attach(unsigned id, unsigned long long from, unsigned long long to, unsigned flags, void *ctx)
{
    (void)from;
    (void)flags;
    struct hits *h = ctx;
    if ((size_t)to >= h->len)
        return 0;
    if (h->natt == h->att_cap) {
        h->att_cap = h->att_cap ? h->att_cap * 2 : 16;
        h->att = realloc(h->att, h->att_cap * sizeof(*h->att));
        if (!h->att)
            abort();
    }
    h->att[h->natt++] = (size_t)to << 1 | (id & 1); /* kl_attachments_at's form */
    return 0;
}

static int by_start(const void *a, const void *b)
{
    const struct hit *x = a, *y = b;
    if (x->from != y->from)
        return x->from < y->from ? -1 : 1;
    return x->to > y->to ? -1 : x->to < y->to ? 1 : 0;
}

/* "a,b" of the rules marked in seen, in rule order (arena). */
static const char *kind_list(const struct kl_guardrails *g, const unsigned char *seen, unsigned char bit, kl_arena *a)
{
    size_t total = 1;
    for (size_t i = 0; i < g->n; i++)
        if (seen[i] & bit)
            total += strlen(g->rules[i].kind) + 1;
    if (total == 1)
        return NULL;
    char *out = kl_arena_alloc(a, total);
    size_t o = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (!(seen[i] & bit))
            continue;
        if (o)
            out[o++] = ',';
        size_t k = strlen(g->rules[i].kind);
        memcpy(out + o, g->rules[i].kind, k);
        o += k;
    }
    out[o] = '\0';
    return out;
}

/* A JSON lexer's view of where strings are, advanced byte by byte. */
struct jpos {
    size_t at;
    bool in_str, esc;
    bool left;                  /* a string ended since this was last cleared */
};

static void advance(struct jpos *p, const char *body, size_t to)
{
    for (; p->at < to; p->at++) {
        char c = body[p->at];
        if (!p->in_str)
            p->in_str = c == '"';
        else if (p->esc)
            p->esc = false;
        else if (c == '\\')
            p->esc = true;
        else if (c == '"') {
            p->in_str = false;
            p->left = true;
        }
    }
}

static bool continuation(char c)
{
    return ((unsigned char)c & 0xc0) == 0x80;
}

void kl_scan_whole_chars(const char *text, size_t len, size_t *from, size_t *to)
{
    for (int k = 0; k < 3 && *from > 0 && *from < len && continuation(text[*from]); k++)
        --*from;
    for (int k = 0; k < 3 && *to < len && *to > *from && continuation(text[*to]); k++)
        ++*to;
}

/* The body with every redact finding replaced by [REDACTED:kind];
 * findings that overlap become one span, named after the first. Spans are
 * widened to whole escapes, and each must lie inside one JSON string;
 * otherwise the body is not rewritten and false is returned (the caller
 * blocks instead: a finding it cannot take out is not forwarded). */
static bool redact(const struct kl_guardrails *g, struct hits *h, const char *body, size_t len, kl_arena *a,
                   struct kl_scan_result *out)
{
    size_t keep = 0;
    for (size_t i = 0; i < h->n; i++) {
        struct hit *x = &h->v[i];
        if (g->rules[x->rule].action != KL_SCAN_REDACT)
            continue;
        if (x->repl) { /* a whole base64 string: no escape at its ends */
            h->v[keep++] = *x;
            continue;
        }
        kl_scan_whole_chars(body, len, &x->from, &x->to);
        size_t e = escape_of(body, x->from);
        if (e != NONE)
            x->from = e;
        if (x->to > x->from && x->to < len) {
            e = escape_of(body, x->to - 1);
            if (e == NONE && body[x->to - 1] == '\\' && escapes(body, x->to - 1))
                e = x->to - 1;
            if (e != NONE)
                x->to = escape_end(body, len, e);
        }
        h->v[keep++] = *x;
    }
    h->n = keep;
    qsort(h->v, h->n, sizeof(*h->v), by_start);
    size_t cap = len + 1;
    for (size_t i = 0; i < h->n; i++)
        cap += h->v[i].repl ? h->v[i].repl_len : strlen(g->rules[h->v[i].rule].kind) + 12;
    char *o = kl_arena_alloc(a, cap);
    size_t n = 0, pos = 0;
    struct jpos jp = {0, false, false, false};
    for (size_t i = 0; i < h->n;) {
        size_t from = h->v[i].from, to = h->v[i].to;
        const char *kind = g->rules[h->v[i].rule].kind;
        const struct hit *first = &h->v[i];
        for (i++; i < h->n && h->v[i].from <= to; i++)
            if (h->v[i].to > to)
                to = h->v[i].to;
        advance(&jp, body, from);
        if (!jp.in_str || jp.esc)
            return false;
        jp.left = false;
        advance(&jp, body, to);
        if (!jp.in_str || jp.esc || jp.left)
            return false; /* the span leaves its string (even to end in another), or ends inside an escape */
        memcpy(o + n, body + pos, from - pos);
        n += from - pos;
        if (first->repl) { /* findings in the base64 itself go with it */
            memcpy(o + n, first->repl, first->repl_len);
            n += first->repl_len;
        } else {
            n += (size_t)sprintf(o + n, "[REDACTED:%s]", kind);
            out->redacted++;
        }
        pos = to;
    }
    memcpy(o + n, body + pos, len - pos);
    n += len - pos;
    o[n] = '\0';
    out->body = o;
    out->body_len = n;
    return true;
}

/* Every finding in body that holds, into h (hits_free when done), and
 * with attachments where base64 attachments may begin (h->att). -1 with why
 * when the scan could not run. */
static int find(const struct kl_guardrails *g, struct kl_scan_scratch **scratch, const char *body, size_t len,
                bool attachments, struct hits *h, const char **why)
{
    *h = (struct hits){g, body, len, NULL, 0, 0, false, NULL, 0, 0};
    if (!*scratch) {
        *scratch = calloc(1, sizeof(**scratch));
        if (!*scratch)
            abort();
    }
    struct kl_scan_scratch *sc = *scratch;
    char *copy;
    if (len <= KL_SCAN_COPY_KEEP) {
        if (sc->copy_cap < len + KL_SCAN_PAD) {
            free(sc->copy);
            sc->copy_cap = len + KL_SCAN_PAD < 4096 ? 4096 : len + KL_SCAN_PAD;
            sc->copy = malloc(sc->copy_cap);
        }
        copy = sc->copy;
    } else {
        copy = malloc(len + KL_SCAN_PAD);
    }
    if (!copy)
        abort();
    memcpy(copy, body, len);
    memset(copy + len, 0, KL_SCAN_PAD);
    unsigned scan_len = (unsigned)(len + KL_SCAN_PAD);
    hs_error_t rc = sc->hs ? hs_scan(g->db, copy, scan_len, 0, sc->hs, on_match, h) : HS_INVALID;
    if (rc == HS_INVALID) {
        /* no scratch yet, or one too small for this database (a reload
         * brought another): size it and scan again. Not before every scan:
         * hs_alloc_scratch checks the CPU's features, which in a virtual
         * machine costs ~20 us. */
        if (hs_alloc_scratch(g->db, &sc->hs) == HS_SUCCESS && hs_alloc_scratch(g->attach_db, &sc->hs) == HS_SUCCESS) {
            h->n = 0;
            h->overflow = false;
            rc = hs_scan(g->db, copy, scan_len, 0, sc->hs, on_match, h);
        }
    }
    if (attachments && (rc == HS_SUCCESS || rc == HS_SCAN_TERMINATED)) {
        hs_error_t ra = hs_scan(g->attach_db, copy, scan_len, 0, sc->hs, on_attach, h);
        if (ra == HS_INVALID && hs_alloc_scratch(g->attach_db, &sc->hs) == HS_SUCCESS) {
            h->natt = 0; /* a reload's rules fitted the scratch, its finder did not */
            ra = hs_scan(g->attach_db, copy, scan_len, 0, sc->hs, on_attach, h);
        }
        if (ra != HS_SUCCESS)
            rc = ra;
    }
    if (copy != sc->copy)
        free(copy);
    if (rc == HS_INVALID || (rc != HS_SUCCESS && rc != HS_SCAN_TERMINATED)) {
        hits_free(h);
        *why = rc == HS_INVALID ? "cannot allocate scan space" : "the scan failed";
        return -1;
    }
    return 0;
}

/* text with its redact findings replaced by [REDACTED:kind] (overlapping
 * ones as one, named after the first), as base64 written the way at was
 * (arena); *spans: how many. */
static char *redact_attachment(const struct kl_guardrails *g, struct hits *ah, const struct kl_attachment *at,
                               kl_arena *a, size_t *out_len, size_t *spans)
{
    qsort(ah->v, ah->n, sizeof(*ah->v), by_start);
    size_t cap = at->len + 1;
    for (size_t i = 0; i < ah->n; i++)
        cap += strlen(g->rules[ah->v[i].rule].kind) + 12;
    char *t = malloc(cap);
    if (!t)
        abort();
    size_t n = 0, pos = 0;
    *spans = 0;
    for (size_t i = 0; i < ah->n;) {
        if (g->rules[ah->v[i].rule].action != KL_SCAN_REDACT) {
            i++;
            continue;
        }
        size_t from = ah->v[i].from, to = ah->v[i].to;
        const char *kind = g->rules[ah->v[i].rule].kind;
        for (i++; i < ah->n && ah->v[i].from <= to; i++)
            if (g->rules[ah->v[i].rule].action == KL_SCAN_REDACT && ah->v[i].to > to)
                to = ah->v[i].to;
        kl_scan_whole_chars(at->text, at->len, &from, &to);
        if (from < pos)
            from = pos; /* its first character ended the span before (found apart, only now met) */
        if (to <= from)
            continue;
        memcpy(t + n, at->text + pos, from - pos);
        n += from - pos;
        n += (size_t)sprintf(t + n, "[REDACTED:%s]", kind);
        pos = to;
        ++*spans;
    }
    memcpy(t + n, at->text + pos, at->len - pos);
    n += at->len - pos;
    size_t el;
    char *enc = kl_attachment_encode(at, t, n, &el);
    free(t);
    char *out = kl_arena_strndup(a, enc, el);
    free(enc);
    *out_len = el;
    return out;
}

/* The base64 text files whose starts the scan of text found (h->att;
 * guard/attach.h), scanned decoded: their findings marked in seen and
 * out->action; one with a redact finding is added to h as one replacement of
 * its whole base64 (in text's offsets). -1 with why when a scan failed. */
static int scan_attachments(const struct kl_guardrails *g, struct kl_scan_scratch **scratch, const char *text,
                            size_t len, kl_arena *a, struct hits *h, unsigned char *seen, struct kl_scan_result *out,
                            size_t *spans, const char **why)
{
    struct kl_attachment *att;
    size_t natt = kl_attachments_at(text, len, h->att, h->natt, &att);
    int rc = 0;
    *spans = 0;
    for (size_t k = 0; k < natt; k++) {
        struct hits ah;
        if ((rc = find(g, scratch, att[k].text, att[k].len, false, &ah, why)) < 0)
            break;
        h->overflow |= ah.overflow;
        unsigned first_redact = UINT_MAX;
        for (size_t i = 0; i < ah.n; i++) {
            const struct rule *r = &g->rules[ah.v[i].rule];
            seen[ah.v[i].rule] |= r->action == KL_SCAN_BLOCK ? 3 : 1;
            if (r->action > out->action)
                out->action = r->action;
            if (r->action == KL_SCAN_REDACT && first_redact == UINT_MAX)
                first_redact = ah.v[i].rule;
        }
        if (first_redact != UINT_MAX && !ah.overflow) {
            size_t rl, sp;
            const char *repl = redact_attachment(g, &ah, &att[k], a, &rl, &sp);
            *spans += sp;
            if (h->n == h->cap) {
                h->cap = h->cap ? h->cap * 2 : 64;
                h->v = realloc(h->v, h->cap * sizeof(*h->v));
                if (!h->v)
                    abort();
            }
            h->v[h->n++] = (struct hit){att[k].from, att[k].to, first_redact, repl, rl};
        }
        hits_free(&ah);
    }
    kl_attachments_free(att, natt);
    return rc;
}

/* Is raw offset x inside one of the spans (in order)? */
static bool skipped(const struct kl_scan_span *skip, size_t nskip, size_t x)
{
    size_t lo = 0, hi = nskip;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (skip[mid].to <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < nskip && skip[lo].from <= x;
}

/* Findings and base64 files that begin in a skipped span dropped (h in
 * text's offsets; dec, when the text was decoded, maps them to the body's). */
static void drop_skipped(struct hits *h, const struct kl_decoded *dec, const struct kl_scan_span *skip,
                         size_t nskip)
{
    size_t keep = 0;
    for (size_t i = 0; i < h->n; i++)
        if (!skipped(skip, nskip, dec ? kl_decoded_raw(dec, h->v[i].from, false) : h->v[i].from))
            h->v[keep++] = h->v[i];
    h->n = keep;
    keep = 0;
    for (size_t i = 0; i < h->natt; i++) {
        size_t at = h->att[i] >> 1;
        if (!skipped(skip, nskip, dec ? kl_decoded_raw(dec, at, false) : at))
            h->att[keep++] = h->att[i];
    }
    h->natt = keep;
}

int kl_scan(const struct kl_guardrails *g, struct kl_scan_scratch **scratch, const char *body, size_t len,
            const struct kl_scan_span *skip, size_t nskip, kl_arena *a, struct kl_scan_result *out,
            const char **why)
{
    memset(out, 0, sizeof(*out));
    if (!g || !g->db || !len)
        return 0;
    /* A finding spelled with escapes ("\u0041KIA...", the "M\u00f6we" of
     * Python's ensure_ascii) is found in the text as it will be read, then
     * mapped back to the bytes that spell it; so is a base64 attachment. */
    struct kl_decoded dec = {0};
    bool decoded = kl_decode_needed(body, len);
    if (decoded)
        kl_decode(body, len, true, &dec);
    const char *text = decoded ? dec.text : body;
    size_t tlen = decoded ? dec.len : len, attached_spans = 0;
    unsigned char *seen = kl_arena_alloc(a, g->n);
    memset(seen, 0, g->n);
    struct hits h;
    int rc = find(g, scratch, text, tlen, true, &h, why);
    if (rc == 0 && nskip)
        drop_skipped(&h, decoded ? &dec : NULL, skip, nskip);
    for (size_t i = 0; rc == 0 && i < h.n; i++) {
        const struct rule *r = &g->rules[h.v[i].rule];
        seen[h.v[i].rule] |= r->action == KL_SCAN_BLOCK ? 3 : 1;
        if (r->action > out->action)
            out->action = r->action;
    }
    if (rc == 0 && h.natt)
        rc = scan_attachments(g, scratch, text, tlen, a, &h, seen, out, &attached_spans, why);
    for (size_t i = 0; rc == 0 && decoded && i < h.n; i++) {
        h.v[i].from = kl_decoded_raw(&dec, h.v[i].from, false);
        h.v[i].to = kl_decoded_raw(&dec, h.v[i].to, true);
    }
    kl_decoded_free(&dec);
    if (rc < 0) {
        hits_free(&h);
        return -1;
    }
    out->kinds = kind_list(g, seen, 1, a);
    out->block_kinds = kind_list(g, seen, 2, a);
    if (h.overflow) {
        /* more findings than are kept track of: as much as any rule may
         * do, except that what cannot all be redacted is blocked */
        out->action = g->strongest == KL_SCAN_REDACT ? KL_SCAN_BLOCK : g->strongest;
        out->overflow = true;
        if (out->action == KL_SCAN_BLOCK)
            out->block_kinds = "too many findings to redact";
    } else if (out->action == KL_SCAN_REDACT && !redact(g, &h, body, len, a, out)) {
        out->action = KL_SCAN_BLOCK;
        out->block_kinds = out->kinds;
        out->body = NULL;
        out->body_len = 0;
        out->redacted = 0;
    } else if (out->action == KL_SCAN_REDACT) {
        out->redacted += attached_spans;
        for (size_t i = 0; i < h.n; i++)
            out->files += h.v[i].repl != NULL;
    }
    hits_free(&h);
    return 0;
}

void kl_scan_scratch_free(struct kl_scan_scratch *s)
{
    if (!s)
        return;
    hs_free_scratch(s->hs);
    free(s->copy);
    free(s);
}

int kl_scan_text(const struct kl_guardrails *g, struct kl_scan_scratch **scratch, const char *text, size_t len,
                 struct kl_scan_hit **hits, size_t *n, const char **why)
{
    *hits = NULL;
    *n = 0;
    if (!g || !g->db || !len)
        return 0;
    struct hits h;
    if (find(g, scratch, text, len, false, &h, why) < 0)
        return -1;
    if (h.overflow) {
        hits_free(&h);
        *why = "too many findings to keep track of";
        return -1;
    }
    if (h.n) {
        *hits = malloc(h.n * sizeof(**hits));
        if (!*hits)
            abort();
    }
    for (size_t i = 0; i < h.n; i++) {
        const struct rule *r = &g->rules[h.v[i].rule];
        (*hits)[i] = (struct kl_scan_hit){h.v[i].from, h.v[i].to, r->action, r->kind};
    }
    *n = h.n;
    hits_free(&h);
    return 0;
}
