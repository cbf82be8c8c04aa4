#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "account/prices.h"
#include "admit/quotas.h"
#include "authorize/grants.h"
#include "core/file.h"
#include "core/log.h"
#include "guard/hooks.h"
#include "guard/scan.h"
#include "identity/identity.h"
#include "record/export.h"
#include "record/record.h"
#include "route/route.h"
#include "upstream/gcp.h"
#include "upstream/sigv4.h"

#define KL_DEFAULT_LISTEN "127.0.0.1:8080"

void kl_cfg_report(kl_cfg_ctx *c, enum kl_severity sev, const cJSON *at,
                   const char *fmt, ...)
{
    int line = 0, col = 0;
    if (at) {
        size_t off = kl_json_doc_offset(&c->cfg->doc, at);
        if (off != (size_t)-1)
            kl_json_doc_linecol(&c->cfg->doc, off, &line, &col);
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kl_diags_add(c->diags, sev, line, col, "%s", msg);
}

/* strtod also reads "nan", "inf", hex, signs, exponents and leading
 * spaces; a duration or size is plain decimal digits with an optional
 * fraction. The value, with *end after it, or -1. */
static int plain_decimal(const char *s, double *v, char **end)
{
    size_t n = strspn(s, "0123456789.");
    if (n == 0 || (!isdigit((unsigned char)s[0]) && !(s[0] == '.' && isdigit((unsigned char)s[1]))))
        return -1;
    errno = 0;
    *v = strtod(s, end);
    return *end == s + n && !errno ? 0 : -1;
}

/* A duration as Go writes one ("1h30m", "1.5s", "250ms", "90us"; and "d"
 * for days), or a bare number of seconds. */
int kl_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    static const struct { const char *unit; double ms; } units[] = {
        {"ns", 1e-6}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ms", 1}, {"s", 1e3}, {"m", 60e3}, {"h", 3600e3},
        {"d", 86400e3},
    };
    double ms = 0;
    bool first = true;
    while (first || *s) {
        char *end;
        double v;
        if (plain_decimal(s, &v, &end) < 0)
            return -1;
        if (first && *end == '\0') { /* a bare number: seconds */
            ms = v * 1e3;
            break;
        }
        size_t best = 0;
        double mult = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t ul = strlen(units[i].unit);
            if (ul > best && strncmp(end, units[i].unit, ul) == 0)
                best = ul, mult = units[i].ms;
        }
        if (!best)
            return -1;
        ms += v * mult;
        s = end + best;
        first = false;
    }
    if (!(ms <= 1e15))
        return -1;
    /* under a millisecond is one, not 0, which the timers take for none:
     * a hook's "500us" had meant no timeout at all */
    *out_ms = ms > 0 && ms < 1 ? 1 : (uint64_t)ms;
    return 0;
}

int kl_parse_size(const char *s, size_t *out)
{
    static const struct { const char *suffix; double mult; } units[] = {
        {"", 1}, {"B", 1}, {"KB", 1e3}, {"KiB", 1024.0}, {"MB", 1e6},
        {"MiB", 1048576.0}, {"GB", 1e9}, {"GiB", 1073741824.0},
    };
    char *end;
    double v;
    if (plain_decimal(s, &v, &end) < 0)
        return -1;
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            double b = v * units[i].mult;
            if (b > 1e15)
                return -1;
            *out = (size_t)b;
            return 0;
        }
    }
    return -1;
}

/* ---- typed readers: each reports its own problem with a position ---- */

static const char *cfg_expand_macros(kl_cfg_ctx *c, const cJSON *at, const char *s,
                                     const char **unset_name)
{
    if (!strstr(s, "${"))
        return kl_arena_strdup(&c->cfg->arena, s);
    char out[4096];
    size_t o = 0;
    for (const char *p = s; *p;) {
        if (p[0] == '$' && p[1] == '{') {
            const char *close = strchr(p + 2, '}');
            if (!close) {
                kl_cfg_report(c, KL_SEV_ERROR, at, "unterminated ${ macro");
                return NULL;
            }
            char name[256];
            size_t n = (size_t)(close - p - 2);
            if (n == 0 || n >= sizeof(name)) {
                kl_cfg_report(c, KL_SEV_ERROR, at, "bad ${} macro name");
                return NULL;
            }
            memcpy(name, p + 2, n);
            name[n] = '\0';
            const char *val = getenv(name);
            if (!val) {
                if (unset_name) {
                    *unset_name = kl_arena_strdup(&c->cfg->arena, name);
                    return NULL;
                }
                if (c->lenient) {
                    kl_cfg_report(c, KL_SEV_NOTE, at, "${%s} is not set (not needed to read records)", name);
                    return NULL;
                }
                kl_cfg_report(c, KL_SEV_ERROR, at, "unsubstituted macro ${%s}: the variable is not set", name);
                return NULL;
            }
            size_t vl = strlen(val);
            if (o + vl >= sizeof(out)) {
                kl_cfg_report(c, KL_SEV_ERROR, at, "value too long after macro substitution");
                return NULL;
            }
            memcpy(out + o, val, vl);
            o += vl;
            p = close + 1;
        } else {
            if (o + 1 >= sizeof(out)) {
                kl_cfg_report(c, KL_SEV_ERROR, at, "value too long");
                return NULL;
            }
            out[o++] = *p++;
        }
    }
    return kl_arena_strndup(&c->cfg->arena, out, o);
}

/* A provider's credentials keep their macros for their readers (read_apikey,
 * read_aws), which take an unset variable as a provider without a key
 * (503), not a broken file; the S3 exporter's for its reader, which says
 * what is missing once (record/export.c). */
static bool keeps_macro(const cJSON *parent, const cJSON *m)
{
    if (!m->string)
        return false;
    if (strcmp(m->string, "apikey") == 0)
        return true;
    if (parent->string && strcmp(parent->string, "s3") == 0 &&
        (strcmp(m->string, "access_key_id") == 0 || strcmp(m->string, "access_secret") == 0))
        return true;
    return parent->string && strcmp(parent->string, "aws") == 0 &&
           (strcmp(m->string, "access_key_id") == 0 || strcmp(m->string, "access_secret") == 0 ||
            strcmp(m->string, "session_token") == 0);
}

/* Whether the top-level section m is read leniently: by a reader of
 * records, any section but the store's (kl_config_load_reader). */
static bool lenient_in(const kl_cfg_ctx *c, const cJSON *m)
{
    return c->reader && strcmp(m->string, "store") != 0 && strcmp(m->string, "database") != 0;
}

/* ${NAME} in every string of the document, before any section reads it
 * (grants, quotas, store paths: not only provider fields), so each reader
 * sees the value; but see keeps_macro. */
static void cfg_expand_document(kl_cfg_ctx *c, cJSON *v)
{
    bool top = v == c->cfg->doc.root;
    for (cJSON *m = v->child; m; m = m->next) {
        if (top)
            c->lenient = lenient_in(c, m); /* section by section */
        if (cJSON_IsString(m) && strstr(m->valuestring, "${") && !keeps_macro(v, m)) {
            const char *s = cfg_expand_macros(c, m, m->valuestring, NULL);
            if (s && !cJSON_SetValuestring(m, s))
                abort();
        } else if (cJSON_IsObject(m) || cJSON_IsArray(m)) {
            cfg_expand_document(c, m);
        }
    }
    if (top)
        c->lenient = false;
}

static const char *cfg_string(kl_cfg_ctx *c, const cJSON *v, const char *what)
{
    if (!cJSON_IsString(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be a string", what);
        return NULL;
    }
    return kl_arena_strdup(&c->cfg->arena, v->valuestring); /* macros: cfg_expand_document */
}

static int cfg_bool(kl_cfg_ctx *c, const cJSON *v, const char *what, bool *out)
{
    if (!cJSON_IsBool(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be true or false", what);
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 0;
}

static int cfg_int(kl_cfg_ctx *c, const cJSON *v, const char *what, long min, long max, long *out)
{
    /* in range before the cast: a double past long's range (2e96) is undefined behaviour to cast */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= (double)min && v->valuedouble <= (double)max) ||
        v->valuedouble != (double)(long)v->valuedouble) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be a whole number from %ld to %ld", what, min, max);
        return -1;
    }
    *out = (long)v->valuedouble;
    return 0;
}

int kl_cfg_duration_value(const cJSON *v, uint64_t *out_ms)
{
    if (cJSON_IsString(v))
        return kl_parse_duration_ms(v->valuestring, out_ms);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 1e12))
        return -1;
    double ms = v->valuedouble * 1e3;
    *out_ms = ms > 0 && ms < 1 ? 1 : (uint64_t)ms; /* as kl_parse_duration_ms: not 0, none */
    return 0;
}

int kl_cfg_size_value(const cJSON *v, size_t *out)
{
    if (cJSON_IsString(v))
        return kl_parse_size(v->valuestring, out);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 1e15))
        return -1;
    *out = (size_t)v->valuedouble;
    return 0;
}

static int cfg_duration(kl_cfg_ctx *c, const cJSON *v, const char *what, uint32_t *out)
{
    uint64_t ms = 0;
    if (cJSON_IsNumber(v) && v->valuedouble > UINT32_MAX / 1000.0) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s is too long", what);
        return -1;
    }
    if (kl_cfg_duration_value(v, &ms) < 0) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be a duration such as \"30s\", \"500ms\" or \"5m\"", what);
        return -1;
    }
    if (ms > UINT32_MAX) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s is too long", what);
        return -1;
    }
    *out = (uint32_t)ms;
    return 0;
}

static int cfg_size(kl_cfg_ctx *c, const cJSON *v, const char *what, size_t *out)
{
    if (kl_cfg_size_value(v, out) < 0) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be a size such as \"32MiB\" or a number of bytes", what);
        return -1;
    }
    return 0;
}

/* Array of strings (a lone string is accepted as a one-element array). */
static const char **cfg_strings(kl_cfg_ctx *c, const cJSON *v, const char *what, size_t *n)
{
    *n = 0;
    if (cJSON_IsString(v)) {
        const char **arr = kl_arena_alloc(&c->cfg->arena, sizeof(char *));
        arr[0] = cfg_string(c, v, what);
        if (!arr[0])
            return NULL;
        *n = 1;
        return arr;
    }
    if (!cJSON_IsArray(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be an array of strings", what);
        return NULL;
    }
    size_t count = (size_t)cJSON_GetArraySize(v);
    const char **arr = kl_arena_alloc(&c->cfg->arena, (count + 1) * sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        const char *s = cfg_string(c, e, what);
        if (s)
            arr[(*n)++] = s;
    }
    return arr;
}

static bool cfg_object(kl_cfg_ctx *c, const cJSON *v, const char *what)
{
    if (cJSON_IsObject(v))
        return true;
    kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be an object", what);
    return false;
}

static void cfg_unknown(kl_cfg_ctx *c, const cJSON *member, const char *where)
{
    kl_cfg_report(c, KL_SEV_WARNING, member, "unknown key \"%s\" in %s (ignored)",
                  member->string, where);
}

struct named {
    const cJSON *item;
    size_t pos;
};

static int cmp_named(const void *x, const void *y)
{
    const struct named *a = x, *b = y;
    int d = strcmp(a->item->string, b->item->string);
    return d ? d : a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* Each key may appear once, in every object of the document: HuJSON allows
 * duplicates, and readers disagree on which one counts (this one reads the
 * first, Go's and Python's the last), so a duplicated quota or model list
 * would mean something else here than where it was written. Sorted, so a
 * large object costs n log n. */
static void cfg_check_duplicates(kl_cfg_ctx *c, const cJSON *v)
{
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
        return;
    size_t n = 0;
    for (const cJSON *m = v->child; m; m = m->next)
        n++;
    if (cJSON_IsObject(v) && n > 1) {
        struct named *all = malloc(n * sizeof(*all));
        if (!all)
            abort();
        size_t k = 0;
        for (const cJSON *m = v->child; m; m = m->next, k++)
            all[k] = (struct named){m, k};
        qsort(all, n, sizeof(*all), cmp_named);
        for (k = 1; k < n; k++)
            if (strcmp(all[k].item->string, all[k - 1].item->string) == 0)
                kl_cfg_report(c, KL_SEV_ERROR, all[k].item, "duplicate key \"%s\"", all[k].item->string);
        free(all);
    }
    for (const cJSON *m = v->child; m; m = m->next)
        cfg_check_duplicates(c, m);
}

/* ---- providers ---- */

static const struct { const char *name; unsigned bit; } compat_flags[] = {
    {"openai_chat", KL_COMPAT_OPENAI_CHAT},
    {"openai_responses", KL_COMPAT_OPENAI_RESPONSES},
    {"anthropic_messages", KL_COMPAT_ANTHROPIC_MESSAGES},
    {"gemini_generate_content", KL_COMPAT_GEMINI_GENERATE},
    {"bedrock_model_invoke", KL_COMPAT_BEDROCK_INVOKE},
    {"bedrock_converse", KL_COMPAT_BEDROCK_CONVERSE},
    {"google_generate_content", KL_COMPAT_GOOGLE_GENERATE},
    {"google_raw_predict", KL_COMPAT_GOOGLE_RAW_PREDICT},
};

static void read_compat(kl_cfg_ctx *c, const cJSON *v, struct kl_provider *p)
{
    if (!cfg_object(c, v, "compatibility"))
        return;
    unsigned bits = 0;
    bool chat_set = false;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        size_t i;
        for (i = 0; i < sizeof(compat_flags) / sizeof(compat_flags[0]); i++)
            if (strcmp(m->string, compat_flags[i].name) == 0)
                break;
        if (i == sizeof(compat_flags) / sizeof(compat_flags[0])) {
            cfg_unknown(c, m, "compatibility");
            continue;
        }
        bool on;
        if (cfg_bool(c, m, m->string, &on) < 0)
            continue;
        if (compat_flags[i].bit == KL_COMPAT_OPENAI_CHAT)
            chat_set = true;
        if (on)
            bits |= compat_flags[i].bit;
    }
    /* openai_chat is the default, cleared when other flags are given
     * without it (Aperture's rule). */
    if (!chat_set && bits == 0)
        bits = KL_COMPAT_OPENAI_CHAT;
    p->compat = bits;
}

const char *kl_cfg_secret(kl_cfg_ctx *c, const cJSON *v, const char *owner, const char **problem)
{
    return kl_cfg_secret_named(c, v, owner, "API key", problem);
}

/* Longer than any key or secret (a service account's key file is read elsewhere). */
#define KL_SECRET_FILE_MAX (64u << 10)

/* The secret's text as configured: literal, ${ENV} or file:, unchecked. */
static const char *secret_text(kl_cfg_ctx *c, const cJSON *v, const char *owner, const char *noun,
                               const char **problem)
{
    *problem = NULL;
    if (!cJSON_IsString(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s: the %s must be a string", owner, noun);
        return NULL;
    }
    const char *unset = NULL;
    const char *s = cfg_expand_macros(c, v, v->valuestring, &unset);
    if (!s) {
        if (unset)
            *problem = kl_arena_printf(&c->cfg->arena, "%s has no %s: environment variable %s is not set",
                                       owner, noun, unset);
        return NULL;
    }
    if (strncmp(s, "file:", 5) == 0) {
        /* a regular file, whole (a directory is no empty key, a FIFO must not
         * hold the main thread's SIGHUP, a long key is not cut short) */
        char *text = NULL, err[512];
        if (kl_sync_read_file("cannot read", s + 5, KL_SECRET_FILE_MAX, &text, err, sizeof(err)) < 0) {
            *problem = kl_arena_printf(&c->cfg->arena, "%s has no %s: %s", owner, noun, err);
            return NULL;
        }
        size_t n = strlen(text);
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
            n--;
        s = kl_arena_strndup(&c->cfg->arena, text, n);
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
    return s;
}

/* A secret that goes into a header: no control character. */
static const char *header_safe(kl_cfg_ctx *c, const cJSON *v, const char *owner, const char *noun, const char *s)
{
    for (const char *q = s; q && *q; q++) {
        if ((unsigned char)*q < 0x20 || *q == 0x7f) {
            kl_cfg_report(c, KL_SEV_ERROR, v, "%s: the %s contains a control character", owner, noun);
            return NULL;
        }
    }
    return s;
}

const char *kl_cfg_secret_named(kl_cfg_ctx *c, const cJSON *v, const char *owner, const char *noun,
                                const char **problem)
{
    return header_safe(c, v, owner, noun, secret_text(c, v, owner, noun, problem));
}

void kl_cfg_auth_style(kl_cfg_ctx *c, const cJSON *v, bool hook, enum kl_auth_style *out)
{
    const char *s = cJSON_IsString(v) ? v->valuestring : NULL;
    if (s && (strcmp(s, "bearer") == 0 || s[0] == '\0'))
        *out = KL_AUTH_BEARER;
    else if (s && strcmp(s, "x-api-key") == 0)
        *out = KL_AUTH_X_API_KEY;
    else if (s && strcmp(s, "x-goog-api-key") == 0)
        *out = KL_AUTH_X_GOOG_API_KEY;
    else if (hook && s && strcmp(s, "hec") == 0)
        *out = KL_AUTH_HEC;
    else if (hook && s && strcmp(s, "cf-aig-authorization") == 0)
        *out = KL_AUTH_CF_AIG;
    else if (hook)
        kl_cfg_report(c, KL_SEV_ERROR, v,
                      "authorization must be \"bearer\", \"x-api-key\", \"x-goog-api-key\", \"hec\" or "
                      "\"cf-aig-authorization\"");
    else
        kl_cfg_report(c, KL_SEV_ERROR, v, "authorization must be \"bearer\", \"x-api-key\" or \"x-goog-api-key\"");
}

const char *kl_auth_header_prefix(enum kl_auth_style s)
{
    switch (s) {
    case KL_AUTH_X_API_KEY:
        return "x-api-key: ";
    case KL_AUTH_X_GOOG_API_KEY:
        return "x-goog-api-key: ";
    case KL_AUTH_HEC:
        return "Authorization: Splunk ";
    case KL_AUTH_CF_AIG:
        return "cf-aig-authorization: Bearer ";
    default:
        return "Authorization: Bearer ";
    }
}

static void read_apikey(kl_cfg_ctx *c, const cJSON *v, struct kl_provider *p)
{
    const char *owner = kl_arena_printf(&c->cfg->arena, "provider %s", p->id);
    const char *text = secret_text(c, v, owner, "API key", &p->key_problem);
    if (p->key_problem)
        kl_cfg_report(c, KL_SEV_WARNING, v, "%s; its requests will fail with 503", p->key_problem);
    /* Google credentials (Vertex AI): a key file as Google writes it
     * (indented JSON), or the metadata server; never sent themselves, they
     * get the tokens that are */
    struct kl_gcp_cred cred;
    const char *why = NULL;
    int rc = text ? kl_gcp_cred_parse(text, getenv("GCE_METADATA_HOST"), &c->cfg->arena, &cred, &why) : 0;
    if (rc < 0) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "provider %s: %s", p->id, why);
        p->key_problem = why; /* said once: not also "has no apikey" */
    } else if (rc == 1) {
        struct kl_gcp_cred *keep = kl_arena_alloc(&c->cfg->arena, sizeof(*keep));
        *keep = cred;
        p->gcp_cred = keep;
    } else {
        p->apikey = header_safe(c, v, owner, "API key", text);
        p->key_spellings = p->apikey ? kl_route_key_spellings(&c->cfg->arena, p->apikey) : NULL;
    }
}

/* A baseurl's host in lower case and without its scheme's default port
 * (":443" for https, ":80" for http), in place: the Host header keyless's
 * HTTP/1.1 client and libcurl send is then the same, and it is the host a
 * SigV4 signature covers. */
static char *normalize_origin(char *url)
{
    char *auth = strstr(url, "://") + 3; /* the caller checked the scheme */
    size_t n = strcspn(auth, "/?#");
    if (memchr(auth, '@', n))
        return url; /* userinfo: left alone */
    for (size_t i = 0; i < n; i++)
        if (auth[i] >= 'A' && auth[i] <= 'Z')
            auth[i] = (char)(auth[i] + 32);
    const char *dflt = strncmp(url, "https", 5) == 0 ? ":443" : ":80";
    size_t dl = strlen(dflt);
    if (n > dl && strncmp(auth + n - dl, dflt, dl) == 0)
        memmove(auth + n - dl, auth + n, strlen(auth + n) + 1);
    return url;
}

/* "aws": IAM credentials that sign every request with SigV4 (Amazon
 * Bedrock without a Bedrock API key). The region comes from the baseurl's
 * host unless given, so it is settled after the provider's other members. */
static void read_aws(kl_cfg_ctx *c, const cJSON *v, struct kl_provider *p)
{
    if (!cfg_object(c, v, "aws"))
        return;
    struct kl_sigv4_cred *k = kl_arena_alloc(&c->cfg->arena, sizeof(*k));
    k->service = "bedrock";
    const char *owner = kl_arena_printf(&c->cfg->arena, "provider %s", p->id);
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        const char *problem = NULL;
        if (strcmp(m->string, "access_key_id") == 0)
            k->access_key_id = header_safe(c, m, owner, "AWS access key id",
                                           secret_text(c, m, owner, "AWS access key id", &problem));
        else if (strcmp(m->string, "access_secret") == 0)
            k->secret = secret_text(c, m, owner, "AWS secret access key", &problem);
        else if (strcmp(m->string, "session_token") == 0)
            k->session_token = header_safe(c, m, owner, "AWS session token",
                                           secret_text(c, m, owner, "AWS session token", &problem));
        else if (strcmp(m->string, "region") == 0)
            k->region = cfg_string(c, m, "region");
        else if (strcmp(m->string, "service") == 0)
            k->service = cfg_string(c, m, "service");
        else
            cfg_unknown(c, m, "aws");
        if (problem) {
            kl_cfg_report(c, KL_SEV_WARNING, m, "%s; its requests will fail with 503", problem);
            p->key_problem = problem;
        }
    }
    /* neither key: the environment's credentials (upstream/awscreds.h) */
    if (!p->key_problem && (!k->access_key_id != !k->secret || (k->session_token && !k->access_key_id)))
        kl_cfg_report(c, KL_SEV_ERROR, v, "provider %s: aws needs access_key_id and access_secret together (or "
                      "neither: the credentials of keyless's environment)", p->id);
    p->aws = k;
}

/* After all of a provider's members: the region its "aws" signs for. */
static void settle_aws(kl_cfg_ctx *c, const cJSON *v, struct kl_provider *p)
{
    struct kl_sigv4_cred *k = (struct kl_sigv4_cred *)p->aws;
    if (!k->region && p->baseurl)
        k->region = kl_sigv4_region_of(&c->cfg->arena, p->baseurl);
    if (!k->region || !*k->region || strspn(k->region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(k->region))
        kl_cfg_report(c, KL_SEV_ERROR, v, "provider %s: aws needs a region (\"region\": \"us-east-1\"): its baseurl "
                      "names none", p->id);
    if (!k->service || !*k->service || strspn(k->service, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(k->service))
        kl_cfg_report(c, KL_SEV_ERROR, v, "provider %s: aws service must be a signing name such as \"bedrock\"", p->id);
    if (p->apikey || p->gcp_cred)
        kl_cfg_report(c, KL_SEV_ERROR, v, "provider %s: apikey and aws both set; keep one", p->id);
    if (p->auth_mode != KL_AUTHMODE_OVERRIDE)
        kl_cfg_report(c, KL_SEV_ERROR, v, "provider %s: aws signs every request itself; auth_mode must be override",
                      p->id);
}

/* The credentials add_headers sets (auth_mode "none"), as answers may
 * spell them (kl_route_key_spellings): the whole value ("Basic dXNlcjpw"),
 * and its token after a scheme. An answer that echoes one is masked, as a
 * provider key is. */
static const char *const *added_secrets(kl_cfg_ctx *c, const struct kl_provider *p)
{
    const char **all = kl_arena_alloc(&c->cfg->arena, (p->nadd_headers * 2 * 7 + 1) * sizeof(char *));
    size_t n = 0;
    for (size_t i = 0; i < p->nadd_headers; i++) {
        const char *h = p->add_headers[i], *colon = strchr(h, ':');
        if (!colon || !kl_route_credential_header(kl_arena_strndup(&c->cfg->arena, h, (size_t)(colon - h))))
            continue;
        const char *value = colon + 1 + strspn(colon + 1, " \t");
        const char *space = strchr(value, ' ');
        const char *const forms[] = {value, space ? space + 1 + strspn(space + 1, " ") : NULL};
        for (size_t f = 0; f < 2; f++) {
            const char *const *sp = forms[f] ? kl_route_key_spellings(&c->cfg->arena, forms[f]) : NULL;
            for (size_t k = 0; sp && sp[k]; k++)
                all[n++] = sp[k];
        }
    }
    all[n] = NULL;
    return n ? all : NULL;
}

static void read_provider(kl_cfg_ctx *c, const cJSON *v, struct kl_provider *p)
{
    p->id = kl_arena_strdup(&c->cfg->arena, v->string);
    p->compat = KL_COMPAT_OPENAI_CHAT;
    if (!cfg_object(c, v, "a provider"))
        return;
    const cJSON *baseurl_item = NULL, *add_headers_item = NULL, *m;
    bool credential_added = false;
    cJSON_ArrayForEach(m, v) {
        const char *k = m->string;
        if (strcmp(k, "baseurl") == 0) {
            baseurl_item = m;
            const char *s = cfg_string(c, m, "baseurl");
            if (s) {
                size_t scheme = strncmp(s, "https://", 8) == 0 ? 8 : 7;
                if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0) {
                    kl_cfg_report(c, KL_SEV_ERROR, m, "baseurl must start with http:// or https://");
                } else if (!s[scheme] || strchr("/?#", s[scheme])) {
                    kl_cfg_report(c, KL_SEV_ERROR, m, "baseurl has no host");
                } else {
                    size_t n = strlen(s);
                    while (n > 0 && s[n - 1] == '/')
                        n--;
                    p->baseurl = normalize_origin(kl_arena_strndup(&c->cfg->arena, s, n));
                    /* said without the URL: the message must not carry the secret */
                    if (memchr(s + scheme, '@', strcspn(s + scheme, "/?#")))
                        kl_cfg_report(c, KL_SEV_WARNING, m,
                                      "provider %s: baseurl carries credentials (user:password@): they go as HTTP "
                                      "Basic authorization, or not at all when keyless sends its own Authorization "
                                      "header, and unlike an apikey they are not masked in answers; give the "
                                      "credential as apikey instead",
                                      p->id);
                    if (n >= 3 && strcmp(p->baseurl + n - 3, "/v1") == 0)
                        kl_cfg_report(c, KL_SEV_WARNING, m,
                                      "baseurl ends in /v1, but the incoming path (/v1/...) is appended to it");
                }
            }
        } else if (strcmp(k, "models") == 0) {
            p->models = cfg_strings(c, m, "models", &p->nmodels);
        } else if (strcmp(k, "apikey") == 0) {
            read_apikey(c, m, p);
        } else if (strcmp(k, "aws") == 0) {
            read_aws(c, m, p);
        } else if (strcmp(k, "authorization") == 0) {
            kl_cfg_auth_style(c, m, false, &p->auth_style);
        } else if (strcmp(k, "auth_mode") == 0) {
            const char *s = cfg_string(c, m, "auth_mode");
            if (!s)
                continue;
            if (s[0] == '\0' || strcmp(s, "override") == 0)
                p->auth_mode = KL_AUTHMODE_OVERRIDE;
            else if (strcmp(s, "passthrough") == 0)
                p->auth_mode = KL_AUTHMODE_PASSTHROUGH;
            else if (strcmp(s, "none") == 0)
                p->auth_mode = KL_AUTHMODE_NONE;
            else
                kl_cfg_report(c, KL_SEV_ERROR, m,
                              "auth_mode must be \"override\", \"passthrough\" or \"none\"");
        } else if (strcmp(k, "compatibility") == 0) {
            read_compat(c, m, p);
        } else if (strcmp(k, "preference") == 0) {
            long pref;
            if (cfg_int(c, m, "preference", -1000000, 1000000, &pref) == 0)
                p->preference = (int)pref;
        } else if (strcmp(k, "disabled") == 0) {
            cfg_bool(c, m, "disabled", &p->disabled);
        } else if (strcmp(k, "add_headers") == 0) {
            add_headers_item = m;
            p->add_headers = cfg_strings(c, m, "add_headers", &p->nadd_headers);
            for (size_t i = 0; i < p->nadd_headers; i++) {
                const char *h = p->add_headers[i], *colon = strchr(h, ':');
                size_t nl = colon ? (size_t)(colon - h) : 0;
                bool name_ok = nl > 0 && strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                                   "!#$%&'*+-.^_`|~") == nl;
                /* the entry may be a secret (${VAR} expanded), whole or in
                 * part: where it is, not what it holds */
                if (!name_ok || strpbrk(h, "\r\n"))
                    kl_cfg_report(c, KL_SEV_ERROR, m, "add_headers entry %zu must look like \"Name: value\"", i + 1);
                /* a credential: only where the gateway sends none of its
                 * own (auth_mode "none", judged below) */
                else if (kl_route_credential_header(kl_arena_strndup(&c->cfg->arena, h, nl)))
                    credential_added = true;
                /* the gateway writes these itself: a second one upstream
                 * would be ambiguous (which Authorization counts?) */
                else if (kl_route_drop_request_header(kl_arena_strndup(&c->cfg->arena, h, nl)) ||
                         (nl == 4 && !strncasecmp(h, "host", 4)) || (nl == 14 && !strncasecmp(h, "content-length", 14)))
                    kl_cfg_report(c, KL_SEV_ERROR, m,
                                  "add_headers cannot set %.*s (the gateway sets it; use apikey and authorization)",
                                  (int)nl, h);
            }
        } else if (strcmp(k, "name") == 0) {
            p->name = cfg_string(c, m, "name");
        } else if (strcmp(k, "description") == 0) {
            p->description = cfg_string(c, m, "description");
        } else if (strcmp(k, "cost_basis") == 0) {
            p->cost_basis = cfg_string(c, m, "cost_basis");
            /* Aperture's values (kl_prices_find): a vendor's own entries;
             * Vertex, OpenRouter and Vercel by model id */
            static const char *const bases[] = {"openai", "anthropic", "google", "vertex", "openrouter", "vercel"};
            bool known = false;
            for (size_t i = 0; p->cost_basis && i < sizeof(bases) / sizeof(bases[0]); i++)
                known |= strcmp(p->cost_basis, bases[i]) == 0;
            /* Aperture's Bedrock examples write "bedrock-us": Bedrock's ids, Anthropic's prices */
            known |= p->cost_basis && strncmp(p->cost_basis, "bedrock", 7) == 0;
            if (p->cost_basis && !known) { /* priced as if unset, by model id, rather than not at all */
                kl_cfg_report(c, KL_SEV_WARNING, m,
                              "cost_basis \"%s\" is not one keyless knows (openai, anthropic, google, bedrock, vertex, "
                              "openrouter, vercel): this provider's models are priced by model id", p->cost_basis);
                p->cost_basis = NULL;
            }
        } else if (strcmp(k, "model_cost_map") == 0) {
            struct kl_cost_map *map = kl_arena_alloc(&c->cfg->arena, sizeof(*map));
            const char *why = NULL;
            if (kl_cost_map_parse(m, &c->cfg->arena, map, &why) < 0)
                kl_cfg_report(c, KL_SEV_ERROR, m, "provider %s: model_cost_map: %s", p->id, why);
            else
                p->cost_map = map;
        } else {
            cfg_unknown(c, m, "a provider");
        }
    }
    if (!p->baseurl && !baseurl_item)
        kl_cfg_report(c, KL_SEV_ERROR, v, "provider %s has no baseurl", p->id);
    if (p->nmodels == 0)
        kl_cfg_report(c, KL_SEV_WARNING, v, "provider %s lists no models", p->id);
    if (p->apikey && !*p->apikey)
        kl_cfg_report(c, KL_SEV_WARNING, v, "provider %s: apikey is empty; requests go upstream with an empty key", p->id);
    if (p->gcp_cred && p->auth_style != KL_AUTH_BEARER)
        kl_cfg_report(c, KL_SEV_WARNING, v, "provider %s: a Google access token is always sent as "
                      "Authorization: Bearer; authorization is ignored", p->id);
    if (p->aws)
        settle_aws(c, v, p);
    else if (!p->apikey && !p->gcp_cred && !p->key_problem && p->auth_mode == KL_AUTHMODE_OVERRIDE)
        kl_cfg_report(c, KL_SEV_WARNING, v, "provider %s has no apikey; requests go upstream without one", p->id);
    if (strchr(p->id, '/'))
        kl_cfg_report(c, KL_SEV_ERROR, v, "provider id \"%s\" must not contain '/'", p->id);
    if (credential_added && p->auth_mode != KL_AUTHMODE_NONE)
        kl_cfg_report(c, KL_SEV_ERROR, add_headers_item,
                      "provider %s: add_headers sets a credential header, which only auth_mode \"none\" leaves to "
                      "it (otherwise the gateway sends its own, or the caller's: use apikey and authorization)", p->id);
    else if (credential_added)
        p->key_spellings = added_secrets(c, p);
}

static void read_providers(kl_cfg_ctx *c, const cJSON *v)
{
    if (!cfg_object(c, v, "providers"))
        return;
    size_t n = (size_t)cJSON_GetArraySize(v);
    c->cfg->providers = kl_arena_alloc(&c->cfg->arena, (n + 1) * sizeof(struct kl_provider));
    const cJSON *m;
    cJSON_ArrayForEach(m, v)
        read_provider(c, m, &c->cfg->providers[c->cfg->nproviders++]);
}

/* ---- listen ---- */

static void read_timeouts(kl_cfg_ctx *c, const cJSON *v, struct kl_timeouts *t)
{
    static const struct { const char *name; size_t off; } fields[] = {
        {"header", offsetof(struct kl_timeouts, header)},
        {"body", offsetof(struct kl_timeouts, body)},
        {"idle", offsetof(struct kl_timeouts, idle)},
        {"send", offsetof(struct kl_timeouts, send)},
        {"upstream_connect", offsetof(struct kl_timeouts, upstream_connect)},
        {"upstream_first_byte", offsetof(struct kl_timeouts, upstream_first_byte)},
        {"upstream_idle", offsetof(struct kl_timeouts, upstream_idle)},
        {"shutdown", offsetof(struct kl_timeouts, shutdown)},
    };
    if (!cfg_object(c, v, "listen.timeouts"))
        return;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        size_t i;
        for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
            if (strcmp(m->string, fields[i].name) == 0)
                break;
        if (i == sizeof(fields) / sizeof(fields[0])) {
            cfg_unknown(c, m, "listen.timeouts");
            continue;
        }
        cfg_duration(c, m, m->string, (uint32_t *)((char *)t + fields[i].off));
    }
}

static int check_address(const char *a)
{
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a)
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return (*end || port < 0 || port > 65535) ? -1 : 0;
}

static void read_listen(kl_cfg_ctx *c, const cJSON *v)
{
    struct kl_listen_cfg *l = &c->cfg->listen;
    if (!cfg_object(c, v, "listen"))
        return;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        const char *k = m->string;
        if (strcmp(k, "addresses") == 0) {
            l->addresses = cfg_strings(c, m, "addresses", &l->naddresses);
            for (size_t i = 0; i < l->naddresses; i++)
                if (check_address(l->addresses[i]) < 0)
                    kl_cfg_report(c, KL_SEV_ERROR, m, "listen address \"%s\" must be host:port", l->addresses[i]);
        } else if (strcmp(k, "workers") == 0) {
            long w;
            if (cfg_int(c, m, "workers", 0, 256, &w) == 0)
                l->workers = (int)w;
        } else if (strcmp(k, "max_body_size") == 0) {
            cfg_size(c, m, "max_body_size", &l->max_body_size);
        } else if (strcmp(k, "max_header_size") == 0) {
            cfg_size(c, m, "max_header_size", &l->max_header_size);
        } else if (strcmp(k, "max_body_memory") == 0) {
            cfg_size(c, m, "max_body_memory", &l->max_body_memory);
        } else if (strcmp(k, "max_connections") == 0) {
            long n;
            if (cfg_int(c, m, "max_connections", 0, 100000000, &n) == 0)
                l->max_connections = (size_t)n;
        } else if (strcmp(k, "timeouts") == 0) {
            read_timeouts(c, m, &l->timeouts);
        } else {
            cfg_unknown(c, m, "listen");
        }
    }
    if (l->max_body_memory && l->max_body_memory < l->max_body_size)
        kl_cfg_report(c, KL_SEV_ERROR, v, "listen.max_body_memory (%zu bytes) is less than max_body_size (%zu "
                      "bytes): no body that large could be taken", l->max_body_memory, l->max_body_size);
}

static void read_log(kl_cfg_ctx *c, const cJSON *v)
{
    if (!cfg_object(c, v, "log"))
        return;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (strcmp(m->string, "level") == 0) {
            const char *s = cfg_string(c, m, "log.level");
            enum kl_log_level lv;
            if (s && kl_log_parse_level(s, &lv) == 0)
                c->cfg->log_level = (int)lv;
            else if (s)
                kl_cfg_report(c, KL_SEV_ERROR, m, "log.level must be debug, info, warn or error");
        } else if (strcmp(m->string, "access") == 0) {
            cfg_bool(c, m, "log.access", &c->cfg->access_log);
        } else {
            cfg_unknown(c, m, "log");
        }
    }
}

/* keyless `failover`: {"max_attempts": N, "statuses": [503, ...],
 * "cooldown": "30s", "cooldown_after": 3}. The
 * statuses replace the default list; 400..599 only (a 2xx is an answer,
 * and a 3xx is not followed). */
static void read_failover(kl_cfg_ctx *c, const cJSON *v)
{
    struct kl_failover_cfg *f = &c->cfg->failover;
    if (!cfg_object(c, v, "failover"))
        return;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (strcmp(m->string, "max_attempts") == 0) {
            long n;
            if (cfg_int(c, m, "failover.max_attempts", 1, 16, &n) == 0)
                f->max_attempts = (int)n;
        } else if (strcmp(m->string, "cooldown") == 0) {
            cfg_duration(c, m, "failover.cooldown", &f->cooldown_ms);
        } else if (strcmp(m->string, "cooldown_after") == 0) {
            long n;
            if (cfg_int(c, m, "failover.cooldown_after", 1, 1000, &n) == 0)
                f->cooldown_after = (uint32_t)n;
        } else if (strcmp(m->string, "statuses") == 0) {
            if (!cJSON_IsArray(m)) {
                kl_cfg_report(c, KL_SEV_ERROR, m, "failover.statuses must be an array of HTTP statuses");
                continue;
            }
            memset(f->on_status, 0, sizeof(f->on_status));
            const cJSON *e;
            cJSON_ArrayForEach(e, m) {
                long st;
                if (cfg_int(c, e, "each of failover.statuses", 400, 599, &st) == 0)
                    f->on_status[st - 400] = true;
            }
        } else {
            cfg_unknown(c, m, "failover");
        }
    }
}

/* Aperture's auto_cost_basis: with it on (the default) a provider without
 * cost_basis is priced from the whole table by model id — which is what
 * keyless always does, so the flag only needs to be a boolean. */
static void read_auto_cost_basis(kl_cfg_ctx *c, const cJSON *v)
{
    bool on;
    if (cfg_bool(c, v, "auto_cost_basis", &on) == 0 && !on)
        kl_cfg_report(c, KL_SEV_NOTE, v,
                      "auto_cost_basis is false: providers without cost_basis are still priced by model id");
}

static void prices_free(void *arg)
{
    kl_prices_free(arg);
}

/* The price table (keyless `pricing` section): {"file": path}. */
static void load_prices(kl_cfg_ctx *c, const cJSON *at, const char *path)
{
    char why[256];
    kl_prices *t = kl_prices_load(path, why, sizeof(why));
    if (!t) {
        kl_cfg_report(c, at ? KL_SEV_ERROR : KL_SEV_WARNING, at, "price table %s: %s%s", path, why,
                      at ? "" : "; request costs will be recorded as unknown");
        return;
    }
    c->cfg->prices = t;
    c->cfg->prices_path = kl_arena_strdup(&c->cfg->arena, path);
    kl_config_on_free(c->cfg, prices_free, t);
}

static void read_pricing(kl_cfg_ctx *c, const cJSON *v)
{
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(v, "file");
    if (!cJSON_IsObject(v) || !cJSON_IsString(file)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "pricing must be {\"file\": \"/path/to/prices.json\"}");
        return;
    }
    load_prices(c, file, file->valuestring);
}

/* Without a pricing section: the table shipped with keyless, found next to
 * the binary (build/ -> data/; bin/ -> share/keyless/, as make install
 * puts it under any prefix), or where a package installs it. */
static void default_prices(kl_cfg_ctx *c)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 64);
    const char *candidates[4] = {NULL, NULL, "/usr/share/keyless/prices.json", "data/prices.json"};
    char beside[4200], shared[4200];
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(beside, sizeof(beside), "%s/../data/prices.json", exe);
            snprintf(shared, sizeof(shared), "%s/../share/keyless/prices.json", exe);
            candidates[0] = beside;
            candidates[1] = shared;
        }
    }
    for (size_t i = 0; i < 4; i++) {
        if (candidates[i] && access(candidates[i], R_OK) == 0) {
            load_prices(c, NULL, candidates[i]);
            return;
        }
    }
    kl_cfg_report(c, KL_SEV_WARNING, NULL,
                  "no price table found (data/prices.json): request costs will be recorded as unknown");
}

/* A grant that names an undefined quota bucket would let requests through
 * unmetered: refuse the configuration instead (fail closed). */
static void check_quota_refs(kl_cfg_ctx *c)
{
    const struct kl_grants *g = c->cfg->grants;
    for (size_t i = 0; g && i < g->n; i++) {
        for (size_t k = 0; k < g->v[i].ncaps; k++) {
            const cJSON *qs = cJSON_GetObjectItemCaseSensitive(g->v[i].caps[k].raw, "quotas");
            if (qs && !cJSON_IsArray(qs))
                kl_cfg_report(c, KL_SEV_ERROR, qs, "\"quotas\" must be an array of {\"bucket\": \"name\"}");
            const cJSON *ref;
            cJSON_ArrayForEach(ref, qs) {
                const cJSON *bn = cJSON_GetObjectItemCaseSensitive(ref, "bucket");
                /* Aperture's overdraft chains, say, which keyless does not read */
                for (const cJSON *m = cJSON_IsObject(ref) ? ref->child : NULL; m; m = m->next)
                    if (strcmp(m->string, "bucket") != 0)
                        kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in a quota reference (ignored)",
                                      m->string);
                if (!cJSON_IsString(bn))
                    kl_cfg_report(c, KL_SEV_ERROR, ref, "a quota reference must be {\"bucket\": \"name\"}");
                else if (!kl_quota_find(c->cfg->quotas, bn->valuestring))
                    kl_cfg_report(c, KL_SEV_ERROR, bn, "grant refers to quota bucket \"%s\", which quotas does not define",
                                  bn->valuestring);
            }
            const char *why;
            struct kl_rate_limit rl;
            if (kl_rate_limit_read(g->v[i].caps[k].raw, &rl, &why) < 0)
                kl_cfg_report(c, KL_SEV_ERROR, g->v[i].caps[k].raw, "%s", why);
        }
    }
}

/* Sections read by a later part of keyless: parsed (so syntax errors are
 * still caught) and announced, never silently dropped. */
static void read_not_enforced(kl_cfg_ctx *c, const cJSON *v)
{
    kl_cfg_report(c, KL_SEV_WARNING, v, "section \"%s\" is read but not enforced yet", v->string);
}

static void read_deprecated(kl_cfg_ctx *c, const cJSON *v)
{
    kl_cfg_report(c, KL_SEV_WARNING, v, "section \"%s\" is deprecated in Aperture's format and ignored", v->string);
}

static const struct {
    const char *name;
    void (*read)(kl_cfg_ctx *, const cJSON *);
} sections[] = {
    {"providers", read_providers},
    {"listen", read_listen},
    {"log", read_log},
    {"failover", read_failover},
    {"grants", kl_grants_read_config},
    {"quotas", kl_quotas_read_config},
    {"hooks", kl_hooks_read_config},
    {"exporters", kl_export_read_config},
    {"database", kl_record_read_database},
    {"auto_cost_basis", read_auto_cost_basis},
    {"pricing", read_pricing},
    {"connectors", read_not_enforced},
    {"flags", read_not_enforced},
    {"identity", kl_identity_read_config},
    {"store", kl_record_read_store},
    {"guardrails", kl_guardrails_read_config},
    {"limits", kl_limits_read_config},
    {"mcp", read_deprecated},
    {"temp_grants", read_deprecated},
};

static void set_defaults(kl_config *cfg)
{
    struct kl_listen_cfg *l = &cfg->listen;
    l->max_body_size = 32u << 20;
    l->max_header_size = 64u << 10;
    l->timeouts = (struct kl_timeouts){
        .header = 30000, .body = 60000, .idle = 75000, .send = 120000,
        .upstream_connect = 10000, .upstream_first_byte = 600000,
        .upstream_idle = 300000, .shutdown = 30000,
    };
    cfg->log_level = KL_LOG_INFO;
    cfg->failover.max_attempts = 3;
    cfg->failover.cooldown_after = 3;
    cfg->failover.cooldown_ms = 30000;
    static const int statuses[] = {429, 500, 502, 503, 504, 529};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        cfg->failover.on_status[statuses[i] - 400] = true;
}

static kl_config *parse(const char *text, size_t len, const char *path, kl_diags *diags, bool reader)
{
    kl_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        abort();
    atomic_init(&cfg->refs, 1);
    kl_arena_init(&cfg->arena);
    cfg->path = kl_arena_strdup(&cfg->arena, path ? path : "(config)");
    set_defaults(cfg);

    char err[256];
    size_t off;
    if (kl_hujson_parse(text, len, &cfg->doc, err, sizeof(err), &off) < 0) {
        int line, col;
        kl_text_linecol(text, len, off, &line, &col);
        kl_diags_add(diags, KL_SEV_ERROR, line, col, "%s", err);
        kl_config_unref(cfg);
        return NULL;
    }
    kl_cfg_ctx c = {cfg, diags, reader, false};
    int errors_before = diags->errors;
    const cJSON *root = cfg->doc.root;
    if (!cJSON_IsObject(root))
        kl_cfg_report(&c, KL_SEV_ERROR, root, "the configuration must be a JSON object");
    else
        cfg_check_duplicates(&c, root);
    /* a document with a duplicate key is not read further: a section read
     * twice would be read into the same place twice. Nor judged: "no
     * providers", "no grants" would be said of sections it has. */
    if (!cJSON_IsObject(root) || diags->errors > errors_before) {
        kl_config_unref(cfg);
        return NULL;
    }
    cfg_expand_document(&c, (cJSON *)root);
    const cJSON *m;
    cJSON_ArrayForEach(m, root) {
        size_t i;
        for (i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
            if (strcmp(m->string, sections[i].name) == 0)
                break;
        c.lenient = lenient_in(&c, m);
        if (i < sizeof(sections) / sizeof(sections[0]))
            sections[i].read(&c, m);
        else
            cfg_unknown(&c, m, "the top level");
    }
    c.lenient = false;
    /* Sections whose absence means something (deny by default, loopback
     * only) are read even when missing. */
    if (!cfg->identity)
        kl_identity_read_config(&c, NULL);
    if (!cfg->grants)
        kl_grants_read_config(&c, NULL);
    if (!cfg->store)
        kl_record_read_store(&c, NULL);
    if (!cfg->prices && diags->errors == errors_before)
        default_prices(&c);
    if (!cfg->quotas)
        kl_limits_read_config(&c, NULL);
    check_quota_refs(&c);
    kl_record_check_config(&c);
    kl_hooks_check_grants(&c);
    if (cfg->listen.naddresses == 0) {
        cfg->listen.addresses = kl_arena_alloc(&cfg->arena, sizeof(char *));
        cfg->listen.addresses[0] = KL_DEFAULT_LISTEN;
        cfg->listen.naddresses = 1;
    }
    if (cfg->nproviders == 0)
        kl_cfg_report(&c, KL_SEV_WARNING, NULL, "no providers are configured: every model request will answer 404");
    if (diags->errors > errors_before) {
        kl_config_unref(cfg);
        return NULL;
    }
    return cfg;
}

kl_config *kl_config_parse(const char *text, size_t len, const char *path, kl_diags *diags)
{
    return parse(text, len, path, diags, false);
}

static kl_config *load(const char *path, kl_diags *diags, bool reader)
{
    const char *why;
    FILE *f = kl_open_regular(path, &why, NULL);
    if (!f) {
        kl_diags_add(diags, KL_SEV_ERROR, 0, 0, "cannot open: %s", why);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            cap = cap ? cap * 2 : 65536;
            if (cap > (64u << 20)) {
                fclose(f);
                free(buf);
                kl_diags_add(diags, KL_SEV_ERROR, 0, 0, "configuration file is larger than 64 MiB");
                return NULL;
            }
            buf = realloc(buf, cap);
            if (!buf)
                abort();
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(buf);
        kl_diags_add(diags, KL_SEV_ERROR, 0, 0, "read error");
        return NULL;
    }
    kl_config *cfg = parse(buf, len, path, diags, reader);
    free(buf);
    return cfg;
}

kl_config *kl_config_load(const char *path, kl_diags *diags)
{
    return load(path, diags, false);
}

kl_config *kl_config_load_reader(const char *path, kl_diags *diags)
{
    return load(path, diags, true);
}

void kl_config_on_free(kl_config *cfg, void (*fn)(void *), void *arg)
{
    if (cfg->ncleanups == sizeof(cfg->cleanups) / sizeof(cfg->cleanups[0]))
        abort(); /* a fixed, small number of sections register one each */
    cfg->cleanups[cfg->ncleanups++] = (struct kl_cleanup){fn, arg};
}

kl_config *kl_config_ref(kl_config *cfg)
{
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void kl_config_unref(kl_config *cfg)
{
    if (!cfg || atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) != 1)
        return;
    while (cfg->ncleanups > 0) {
        cfg->ncleanups--;
        cfg->cleanups[cfg->ncleanups].fn(cfg->cleanups[cfg->ncleanups].arg);
    }
    kl_json_doc_free(&cfg->doc);
    kl_arena_free(&cfg->arena);
    free(cfg);
}

void kl_config_holder_init(kl_config_holder *h, kl_config *cfg)
{
    pthread_mutex_init(&h->lock, NULL);
    h->cur = cfg;
}

kl_config *kl_config_holder_get(kl_config_holder *h)
{
    pthread_mutex_lock(&h->lock);
    kl_config *cfg = kl_config_ref(h->cur);
    pthread_mutex_unlock(&h->lock);
    return cfg;
}

void kl_config_holder_swap(kl_config_holder *h, kl_config *cfg)
{
    pthread_mutex_lock(&h->lock);
    kl_config *old = h->cur;
    h->cur = cfg;
    pthread_mutex_unlock(&h->lock);
    kl_config_unref(old);
}

void kl_config_holder_destroy(kl_config_holder *h)
{
    kl_config_unref(h->cur);
    h->cur = NULL;
    pthread_mutex_destroy(&h->lock);
}
