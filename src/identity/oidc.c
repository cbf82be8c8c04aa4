#include "identity/oidc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/sha.h>

#include "core/file.h"
#include "core/glob.h"
#include "core/jsoncheck.h"
#include "core/jsonscan.h"
#include "core/log.h"
#include "core/urlquery.h"
#include "identity/identity.h"
#include "identity/jwt.h"
#include "listen/http.h"
#include "route/route.h"

/* A key set shared by workers while the file watcher may replace it. */
struct keys_ref {
    atomic_int refs;
    kl_jwks *jwks;
};

/* What the JWKS reload check knows of the file it last read. A writer can
 * give a file back its size and modification time (rsync -t, cp -p,
 * touch -r), not its change time; and since the kernel stamps both from a
 * coarse clock, a rewrite just after a read can keep even the change time:
 * a file changed in the last few seconds is compared by its content too.
 * One that could not be opened or read (no descriptor left, an I/O error)
 * is tried again at every check: its metadata say nothing of whether its
 * keys were read. */
struct file_seen {
    struct timespec mtime, ctime;
    off_t size;
    ino_t ino;
    dev_t dev;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    bool unread;
};

/* One "claims" condition: the claim at path must match one of the globs. */
struct claim_rule {
    const char *path;
    const char **globs;
    size_t nglobs;
};

struct issuer {
    const char *issuer;
    const char *jwks_file;
    struct kl_jwt_policy policy;
    const char *login_tmpl, *display_tmpl;
    const char **tag_tmpls, **group_tmpls;
    size_t ntags, ngroups;
    struct claim_rule *rules;   /* all must hold */
    size_t nrules;
    pthread_mutex_t lock;       /* guards cur */
    struct keys_ref *cur;
    struct file_seen seen;      /* the JWKS file as last read (kl_oidc_refresh) */
};

struct kl_oidc_cfg {
    struct issuer *v;
    size_t n;
};

static void keys_unref(struct keys_ref *k)
{
    if (k && atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) == 1) {
        kl_jwks_free(k->jwks);
        free(k);
    }
}

static void remember(struct file_seen *f, const struct stat *st, const unsigned char digest[SHA256_DIGEST_LENGTH],
                     bool unread)
{
    f->unread = unread;
    f->mtime = st->st_mtim;
    f->ctime = st->st_ctim;
    f->size = st->st_size;
    f->ino = st->st_ino;
    f->dev = st->st_dev;
    memcpy(f->digest, digest, SHA256_DIGEST_LENGTH);
}

static bool same_time(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* Is the file at st the one last read, as far as its metadata tell, and
 * has it been so long unchanged that they can tell (struct file_seen)? */
static bool surely_same(const struct file_seen *f, const struct stat *st)
{
    return !f->unread && same_time(st->st_mtim, f->mtime) && same_time(st->st_ctim, f->ctime) && st->st_size == f->size &&
           st->st_ino == f->ino && st->st_dev == f->dev && (int64_t)time(NULL) - (int64_t)st->st_ctim.tv_sec > 5;
}

/* Read and parse the issuer's JWKS file. Returns NULL with why on failure;
 * *whole then says whether the file was one JSON document: then it was
 * written as it is, and holds no usable key (a revocation), where a file
 * that is no JSON may be one caught while it is being written; *unread
 * that it could not be opened or read whole (digest is then zero). */
static struct keys_ref *load_keys(const char *path, struct stat *st, unsigned char digest[SHA256_DIGEST_LENGTH],
                                  bool *whole, bool *unread, char *why, size_t whylen)
{
    *whole = false;
    *unread = true;
    memset(digest, 0, SHA256_DIGEST_LENGTH);
    const char *open_why;
    FILE *f = kl_open_regular(path, &open_why, NULL);
    if (!f) {
        snprintf(why, whylen, "cannot open %s: %s", path, open_why);
        return NULL;
    }
    if (fstat(fileno(f), st) < 0 || st->st_size > (1 << 20)) {
        fclose(f);
        snprintf(why, whylen, "%s is not a readable JWKS file of at most 1 MiB", path);
        return NULL;
    }
    char *buf = malloc((size_t)st->st_size + 1);
    if (!buf)
        abort();
    size_t n = fread(buf, 1, (size_t)st->st_size, f);
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        snprintf(why, whylen, "cannot read %s", path);
        return NULL;
    }
    *unread = false;
    SHA256((const unsigned char *)buf, n, digest);
    kl_jwks *k = kl_jwks_parse(buf, n, why, whylen);
    size_t at;
    if (!k && kl_json_validate(buf, n, &at) == 0) {
        /* a member named twice is read two ways: a broken file, which
         * keeps the keys, not a revocation */
        cJSON *j = cJSON_ParseWithLength(buf, n);
        *whole = j && !kl_json_has_duplicate_keys(j);
        cJSON_Delete(j);
    }
    free(buf);
    if (!k)
        return NULL;
    struct keys_ref *r = malloc(sizeof(*r));
    if (!r)
        abort();
    atomic_init(&r->refs, 1);
    r->jwks = k;
    return r;
}

static const char **read_templates(kl_cfg_ctx *c, const cJSON *v, const char *what, size_t *n)
{
    *n = 0;
    if (!cJSON_IsArray(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be an array of templates", what);
        return NULL;
    }
    const char **out = kl_arena_alloc(&c->cfg->arena, ((size_t)cJSON_GetArraySize(v) + 1) * sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        char why[200];
        if (!cJSON_IsString(e) || kl_jwt_template_check(e->valuestring, why, sizeof(why)) < 0) {
            kl_cfg_report(c, KL_SEV_ERROR, e, "%s: %s", what, cJSON_IsString(e) ? why : "must be strings");
            continue;
        }
        out[(*n)++] = kl_arena_strdup(&c->cfg->arena, e->valuestring);
    }
    return out;
}

static const char *read_template(kl_cfg_ctx *c, const cJSON *v, const char *what)
{
    char why[200];
    if (!cJSON_IsString(v) || kl_jwt_template_check(v->valuestring, why, sizeof(why)) < 0) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s: %s", what, cJSON_IsString(v) ? why : "must be a string");
        return NULL;
    }
    return kl_arena_strdup(&c->cfg->arena, v->valuestring);
}

/* "claims": {"repository_owner": "acme", "ref": ["refs/heads/main", "refs/tags/v*"]} */
static void read_claim_rules(kl_cfg_ctx *c, const cJSON *v, struct issuer *is)
{
    kl_arena *a = &c->cfg->arena;
    if (!cJSON_IsObject(v) || !v->child) {
        kl_cfg_report(c, KL_SEV_ERROR, v,
                      "claims must be an object of claim name to allowed value(s), e.g. {\"repository_owner\": \"acme\"}");
        return;
    }
    /* a second "claims" (a duplicate key, reported as such) replaces the first */
    is->nrules = 0;
    is->rules = kl_arena_alloc(a, (size_t)cJSON_GetArraySize(v) * sizeof(*is->rules));
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        char why[200];
        if (kl_jwt_claim_path_check(m->string, why, sizeof(why)) < 0) {
            kl_cfg_report(c, KL_SEV_ERROR, m, "claims: %s", why);
            continue;
        }
        struct claim_rule *r = &is->rules[is->nrules];
        r->nglobs = 0;
        r->path = kl_arena_strdup(a, m->string);
        r->globs = kl_arena_alloc(a, ((size_t)cJSON_GetArraySize(m) + 1) * sizeof(char *));
        const cJSON *e = cJSON_IsArray(m) ? m->child : m;
        for (; e; e = cJSON_IsArray(m) ? e->next : NULL) {
            if (!cJSON_IsString(e) || !e->valuestring[0]) {
                kl_cfg_report(c, KL_SEV_ERROR, e, "claims.%s: allowed values are non-empty strings (globs: * within a "
                              "'/' segment, ** across them)", m->string);
                continue;
            }
            r->globs[r->nglobs++] = kl_arena_strdup(a, e->valuestring);
        }
        if (!r->nglobs)
            kl_cfg_report(c, KL_SEV_ERROR, m, "claims.%s allows no value", m->string);
        else
            is->nrules++;
    }
}

/* Issuers whose tokens anyone can have minted with any audience, and what
 * each mints them for: on GitHub any repository's workflow, on gitlab.com
 * any project's job, on Buildkite any organization's pipeline job
 * (`buildkite-agent oidc request-token --audience`), on HCP Terraform any
 * organization's run (TFC_WORKLOAD_IDENTITY_AUDIENCE), at Google any
 * service account's (generateIdToken, the metadata server) and any
 * account's. Without a claims condition every one of them would be a
 * caller. (CircleCI's issuer is one organization's:
 * https://oidc.circleci.com/org/<id>.) */
enum shared_family { GITHUB, GITLAB, BUILDKITE, TERRAFORM, GOOGLE };

static const struct {
    const char *iss;
    enum shared_family family;
} shared_issuers[] = {
    {"https://token.actions.githubusercontent.com", GITHUB}, {"https://gitlab.com", GITLAB},
    {"https://agent.buildkite.com", BUILDKITE}, {"https://app.terraform.io", TERRAFORM},
    {"https://accounts.google.com", GOOGLE}, {"accounts.google.com", GOOGLE},
};

/* What each family mints tokens for, and a condition that fixes the owner. */
static const struct {
    const char *what, *example;
} shared_families[] = {
    [GITHUB] = {"repository or project", "{\"repository_owner\": \"your-org\"}, {\"repository\": \"your-org/*\"}"},
    [GITLAB] = {"repository or project", "{\"namespace_path\": \"your-group\"}"},
    [BUILDKITE] = {"organization's pipeline", "{\"organization_slug\": \"your-org\"}"},
    [TERRAFORM] = {"organization's workspace", "{\"terraform_organization_name\": \"your-org\"}"},
    [GOOGLE] = {"account (every project's service accounts included)",
                "{\"email\": \"*@your-project.iam.gserviceaccount.com\"}, {\"hd\": \"your-domain.com\"}"},
};

/* The family of a shared issuer, or -1. */
static int shared_issuer(const char *iss)
{
    for (size_t i = 0; i < sizeof(shared_issuers) / sizeof(shared_issuers[0]); i++)
        if (strcmp(iss, shared_issuers[i].iss) == 0)
            return (int)shared_issuers[i].family;
    return -1;
}

/* Does glob g, after prefix, fix its value up to the first sep (no '*'
 * there)? "acme/<anything>" fixes the owner acme; "acme-*" and "*" do not. */
static bool fixed_head(const char *g, const char *prefix, char sep)
{
    size_t pl = strlen(prefix);
    if (strncmp(g, prefix, pl) != 0)
        return false;
    const char *end = strchr(g + pl, sep);
    size_t n = end ? (size_t)(end - g - pl) : strlen(g + pl);
    return n > 0 && !memchr(g + pl, '*', n);
}

/* Does glob g name one Google account, or the service accounts of one
 * project only ("*@acme.iam.gserviceaccount.com")? "*@gmail.com" and
 * "*@developer.gserviceaccount.com" (every project's default compute
 * account) admit everybody's. */
static bool fixed_google_email(const char *g)
{
    if (!strchr(g, '*'))
        return true;
    const char *at = strrchr(g, '@');
    static const char sa[] = ".iam.gserviceaccount.com";
    size_t dl = at ? strlen(at + 1) : 0;
    return at && !strchr(at, '*') && dl > sizeof(sa) - 1 && strcmp(at + 1 + dl - (sizeof(sa) - 1), sa) == 0;
}

/* Does a "claims" condition on a shared issuer's tokens admit one owner's
 * repositories, projects or accounts only (every value it allows fixes the
 * owner)? A condition on anything else (ref, environment) admits every
 * owner's; so does job_workflow_ref, which names a reusable workflow any
 * repository may call, not the repository that calls it. */
static bool owner_pinned(const struct issuer *is, int family)
{
    static const struct {
        enum shared_family family;
        const char *claim, *prefix;
        char sep;                       /* '@': a Google account (fixed_google_email) */
    } owner_claims[] = {
        {GITHUB, "repository_owner", "", '/'}, {GITHUB, "repository_owner_id", "", '/'},
        {GITHUB, "repository", "", '/'}, {GITHUB, "repository_id", "", '/'}, {GITHUB, "enterprise", "", '/'},
        {GITHUB, "enterprise_id", "", '/'}, {GITHUB, "sub", "repo:", '/'},
        {GITLAB, "namespace_path", "", '/'}, {GITLAB, "namespace_id", "", '/'}, {GITLAB, "project_path", "", '/'},
        {GITLAB, "project_id", "", '/'}, {GITLAB, "sub", "project_path:", '/'},
        /* sub: organization:<slug>:pipeline:<slug>:ref:... */
        {BUILDKITE, "organization_slug", "", ':'}, {BUILDKITE, "organization_id", "", ':'},
        {BUILDKITE, "sub", "organization:", ':'},
        /* sub: organization:<name>:project:<name>:workspace:... */
        {TERRAFORM, "terraform_organization_name", "", ':'}, {TERRAFORM, "terraform_organization_id", "", ':'},
        {TERRAFORM, "sub", "organization:", ':'},
        /* one account (sub is its number), one project's service accounts,
         * one Workspace domain's users */
        {GOOGLE, "email", "", '@'}, {GOOGLE, "sub", "", '\0'}, {GOOGLE, "hd", "", '\0'},
    };
    for (size_t i = 0; i < is->nrules; i++) {
        const struct claim_rule *r = &is->rules[i];
        for (size_t k = 0; k < sizeof(owner_claims) / sizeof(owner_claims[0]); k++) {
            if ((int)owner_claims[k].family != family ||
                strcmp(r->path, owner_claims[k].claim) != 0)
                continue;
            bool all = true;
            for (size_t j = 0; j < r->nglobs && all; j++)
                all = owner_claims[k].sep == '@' ? fixed_google_email(r->globs[j])
                    : fixed_head(r->globs[j], owner_claims[k].prefix, owner_claims[k].sep);
            if (all)
                return true;
        }
    }
    return false;
}

static bool read_issuer(kl_cfg_ctx *c, const cJSON *v, struct issuer *is)
{
    kl_arena *a = &c->cfg->arena;
    memset(is, 0, sizeof(*is)); /* the slot of an entry refused before may be reused */
    is->policy.leeway_s = 60;
    is->policy.max_lifetime_s = 24 * 3600;
    static const char *default_algs[] = {"RS256", "ES256"};
    is->policy.algs = default_algs;
    is->policy.nalgs = 2;
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "identity.oidc.issuers entries must be objects");
        return false;
    }
    int errors = c->diags->errors;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        const char *k = m->string;
        if (strcmp(k, "issuer") == 0 && cJSON_IsString(m)) {
            is->issuer = kl_arena_strdup(a, m->valuestring);
        } else if (strcmp(k, "jwks_file") == 0 && cJSON_IsString(m)) {
            is->jwks_file = kl_arena_strdup(a, m->valuestring);
        } else if (strcmp(k, "audience") == 0 && cJSON_IsString(m)) {
            is->policy.audience = kl_arena_strdup(a, m->valuestring);
        } else if (strcmp(k, "algorithms") == 0 && cJSON_IsArray(m)) {
            const char **algs = kl_arena_alloc(a, ((size_t)cJSON_GetArraySize(m) + 1) * sizeof(char *));
            size_t n = 0;
            const cJSON *e;
            cJSON_ArrayForEach(e, m) {
                if (!cJSON_IsString(e) || strcasecmp(e->valuestring, "none") == 0 ||
                    strncmp(e->valuestring, "HS", 2) == 0) {
                    kl_cfg_report(c, KL_SEV_ERROR, e,
                                  "algorithms must be public-key JWS algorithms (RS256, ES256, ...); never none or HS*");
                    continue;
                }
                /* a name no token can carry ("es256", "RS265") would refuse
                 * every token, each with a reason that looks like the token's */
                if (!kl_jwt_alg_supported(e->valuestring)) {
                    kl_cfg_report(c, KL_SEV_ERROR, e,
                                  "algorithm \"%.40s\" is not one keyless verifies (RS256, RS384, RS512, PS256, PS384, "
                                  "PS512, ES256, ES384, ES512, EdDSA; case matters)", e->valuestring);
                    continue;
                }
                algs[n++] = kl_arena_strdup(a, e->valuestring);
            }
            if (cJSON_GetArraySize(m) == 0)
                kl_cfg_report(c, KL_SEV_ERROR, m, "algorithms is empty: no token could be verified (leave it out "
                              "for every algorithm the keys allow)");
            is->policy.algs = (const char *const *)algs;
            is->policy.nalgs = n;
        } else if (strcmp(k, "leeway") == 0 || strcmp(k, "max_lifetime") == 0) {
            uint64_t ms;
            if (kl_cfg_duration_value(m, &ms) < 0) {
                kl_cfg_report(c, KL_SEV_ERROR, m, "%s must be a duration such as \"60s\"", k);
                continue;
            }
            if (k[0] == 'l') {
                is->policy.leeway_s = (int64_t)(ms / 1000);
            } else if (ms < 1000) {
                /* 0 is "no cap" inside: written here, it would lift the cap it seems to tighten */
                kl_cfg_report(c, KL_SEV_ERROR, m, "max_lifetime must be at least \"1s\"");
            } else {
                is->policy.max_lifetime_s = (int64_t)(ms / 1000);
            }
        } else if (strcmp(k, "login") == 0) {
            is->login_tmpl = read_template(c, m, "login");
        } else if (strcmp(k, "display_name") == 0) {
            is->display_tmpl = read_template(c, m, "display_name");
        } else if (strcmp(k, "tags") == 0) {
            is->tag_tmpls = read_templates(c, m, "tags", &is->ntags);
        } else if (strcmp(k, "groups") == 0) {
            is->group_tmpls = read_templates(c, m, "groups", &is->ngroups);
        } else if (strcmp(k, "claims") == 0) {
            read_claim_rules(c, m, is);
        } else {
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown or mistyped key \"%s\" in an OIDC issuer (ignored)", k);
        }
    }
    /* an empty audience would take tokens minted for "", which binds them to nobody */
    if (!is->issuer || !*is->issuer || !is->jwks_file || !is->policy.audience || !*is->policy.audience ||
        !is->login_tmpl || !*is->login_tmpl) {
        kl_cfg_report(c, KL_SEV_ERROR, v,
                      "an OIDC issuer needs \"issuer\", \"jwks_file\", \"audience\" and a \"login\" template, none of "
                      "them empty");
        return false;
    }
    if (c->diags->errors > errors)
        return false;
    int family = shared_issuer(is->issuer);
    if (family >= 0 && !owner_pinned(is, family))
        kl_cfg_report(c, KL_SEV_WARNING, v,
                      "issuer %s mints tokens for every %s it hosts, with any audience asked for: without a "
                      "\"claims\" condition that fixes their owner (e.g. %s) all of them are callers",
                      is->issuer, shared_families[family].what, shared_families[family].example);
    is->policy.issuer = is->issuer;
    char why[256];
    struct stat st;
    bool whole, unread;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    is->cur = load_keys(is->jwks_file, &st, digest, &whole, &unread, why, sizeof(why));
    if (!is->cur && !whole) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "issuer %s: %s", is->issuer, why);
        return false;
    }
    /* revoked (kl_oidc_refresh): a state to start or reload in, not an
     * error that would keep every other caller out */
    if (!is->cur)
        kl_cfg_report(c, KL_SEV_WARNING, v, "issuer %s: %s: its tokens are refused until %s holds a usable key",
                      is->issuer, why, is->jwks_file);
    remember(&is->seen, &st, digest, false);
    pthread_mutex_init(&is->lock, NULL);
    return true;
}

static void oidc_free_cb(void *arg)
{
    kl_oidc_free(arg);
}

/* Grants, quotas and records know a caller by its login alone. Two issuers
 * whose templates begin alike ("k8s:{...}" for two clusters) can give one
 * login to workloads of both: whoever controls a namespace in one would be
 * the other's. Entries for one issuer and one key set may share a form (one
 * authority); one issuer name with two key sets is two authorities that
 * share a name: kubeadm, k3s and kind clusters all default to
 * https://kubernetes.default.svc.cluster.local. */
static void warn_shared_logins(kl_cfg_ctx *c, const cJSON *at, const struct kl_oidc_cfg *o)
{
    for (size_t i = 0; i < o->n; i++) {
        for (size_t k = i + 1; k < o->n; k++) {
            const struct issuer *a = &o->v[i], *b = &o->v[k];
            size_t pa = strcspn(a->login_tmpl, "{"), pb = strcspn(b->login_tmpl, "{");
            size_t n = pa < pb ? pa : pb;
            if ((strcmp(a->issuer, b->issuer) == 0 && strcmp(a->jwks_file, b->jwks_file) == 0) ||
                strncmp(a->login_tmpl, b->login_tmpl, n) != 0)
                continue;
            kl_cfg_report(c, KL_SEV_WARNING, at,
                          "OIDC issuers %s and %s%s may give one login to workloads of both (login templates \"%s\" "
                          "and \"%s\"): grants, quotas and records know a caller by its login alone; begin each "
                          "issuer's template with a prefix of its own (\"k8s-prod:\", \"k8s-dev:\")", a->issuer,
                          b->issuer, strcmp(a->issuer, b->issuer) == 0 ? " (one name, two key sets)" : "",
                          a->login_tmpl, b->login_tmpl);
        }
    }
}

struct kl_oidc_cfg *kl_oidc_read_config(kl_cfg_ctx *c, const cJSON *v)
{
    const cJSON *issuers = cJSON_GetObjectItemCaseSensitive(v, "issuers");
    if (!cJSON_IsObject(v) || !cJSON_IsArray(issuers)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "identity.oidc must be {\"issuers\": [...]}");
        return NULL;
    }
    struct kl_oidc_cfg *o = kl_arena_alloc(&c->cfg->arena, sizeof(*o));
    o->v = kl_arena_alloc(&c->cfg->arena, ((size_t)cJSON_GetArraySize(issuers) + 1) * sizeof(struct issuer));
    const cJSON *e;
    cJSON_ArrayForEach(e, issuers) {
        if (read_issuer(c, e, &o->v[o->n]))
            o->n++;
    }
    warn_shared_logins(c, v, o);
    kl_config_on_free(c->cfg, oidc_free_cb, o);
    return o->n ? o : NULL;
}

void kl_oidc_free(struct kl_oidc_cfg *o)
{
    for (size_t i = 0; o && i < o->n; i++) {
        keys_unref(o->v[i].cur);
        pthread_mutex_destroy(&o->v[i].lock);
    }
}

void kl_oidc_refresh(struct kl_oidc_cfg *o)
{
    for (size_t i = 0; o && i < o->n; i++) {
        struct issuer *is = &o->v[i];
        struct stat st;
        if (stat(is->jwks_file, &st) < 0)
            continue; /* keep the keys we have while the file is being replaced */
        if (surely_same(&is->seen, &st))
            continue;
        char why[256];
        bool revoked, unread;
        unsigned char digest[SHA256_DIGEST_LENGTH];
        struct keys_ref *k = load_keys(is->jwks_file, &st, digest, &revoked, &unread, why, sizeof(why));
        /* a file that failed again as it did is tried again without a word */
        bool unchanged = unread == is->seen.unread && memcmp(digest, is->seen.digest, sizeof(digest)) == 0;
        remember(&is->seen, &st, digest, unread); /* read: not again until it changes */
        if (unchanged) {
            keys_unref(k); /* the bytes last read: keep the keys as they are, and say nothing */
            continue;
        }
        /* A whole JSON document without one usable key ({"keys": []}, {},
         * a lone JWK) is a revocation: no token of this issuer is accepted
         * until keys come back. A file that cannot be read or is no JSON
         * (being rewritten, say) keeps the keys we have. */
        if (!k && !revoked) {
            kl_warn("OIDC issuer %s: keeping the previous keys: %s", is->issuer, why);
            continue;
        }
        pthread_mutex_lock(&is->lock);
        struct keys_ref *old = is->cur;
        is->cur = k;
        pthread_mutex_unlock(&is->lock);
        keys_unref(old);
        if (revoked)
            kl_warn("OIDC issuer %s: %s: its tokens are refused until %s holds a usable key", is->issuer, why,
                    is->jwks_file);
        else
            kl_info("OIDC issuer %s: reloaded %zu key(s) from %s", is->issuer, kl_jwks_count(k->jwks),
                    is->jwks_file);
    }
}

/* Is v meant as a JWT? One that begins as a JSON header's base64 does
 * ("eyJ", however malformed the rest), or three base64url segments the
 * first of which decodes to a JSON object (a header that begins with white
 * space encodes otherwise). Provider keys and placeholders have no dots, and
 * a Google service account's access token ("ya29.c.c0AS...", three
 * segments) no JSON header: a caller sending its own to Vertex is no
 * workload. A token presented is checked, and refused when invalid, never
 * skipped for the next identity source, unless no configured issuer
 * minted it (kl_oidc_identify). */
static bool looks_like_jwt(const char *v)
{
    if (strncmp(v, "eyJ", 3) == 0)
        return true;
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t a = strspn(v, b64url);
    if (!a || v[a] != '.')
        return false;
    size_t b = strspn(v + a + 1, b64url);
    if (!b || v[a + 1 + b] != '.')
        return false;
    return v[a + 2 + b + strspn(v + a + 2 + b, b64url)] == '\0' && kl_jwt_segment_is_object(v, a);
}

/* The headers SDKs send an API key in, any of which a CI job may hand its
 * token to. */
static const char *const credential_headers[] = {"authorization", "x-api-key", "x-goog-api-key", "api-key"};
#define KL_NCREDENTIAL_HEADERS (sizeof(credential_headers) / sizeof(credential_headers[0]))

/* The credentials a request carries that are shaped like a JWT: the
 * credential headers in order, then ?key=, each as often as it is given
 * (an SDK's own header and a copy the user added: a passthrough provider
 * gets them all). SDKs put the "API key" in different headers, so a CI job
 * can hand its token to any of them. ?key= is Gemini's query form of
 * x-goog-api-key, which some clients send their key in (LiteLLM, Google's
 * REST examples): left unread, a token there would reach a passthrough
 * provider as the caller's own key. Returns how many went to *out (in the
 * arena). */
static size_t find_tokens(kl_exchange *ex, const char ***out)
{
    const kl_http_request *r = &ex->req;
    size_t nparams = 1;
    for (const char *q = r->query; q && *q; q++)
        nparams += *q == '&';
    const char **v = kl_arena_alloc(&ex->arena, (r->nheaders + nparams) * sizeof(*v));
    size_t n = 0;
    for (size_t i = 0; i < KL_NCREDENTIAL_HEADERS; i++) {
        for (size_t h = 0; h < r->nheaders; h++) {
            if (strcasecmp(r->headers[h].name, credential_headers[i]) != 0)
                continue;
            const char *t = r->headers[h].value;
            if (i == 0) {
                if (strncasecmp(t, "Bearer", 6) != 0 || (t[6] != ' ' && t[6] != '\t'))
                    continue;
                t += 7;
                while (*t == ' ' || *t == '\t')
                    t++;
            }
            if (looks_like_jwt(t))
                v[n++] = t;
        }
    }
    const char *rest = r->query, *q;
    while ((q = kl_query_param_next(&ex->arena, &rest, "key")))
        if (looks_like_jwt(q))
            v[n++] = q;
    *out = v;
    return n;
}

/* Is c the same as the configured issuer s but for ASCII case or trailing
 * '/'s? Such a token was meant for keyless (a mistyped issuer on one side):
 * it is refused as before, not taken for some other service's credential. */
static bool issuer_near(const char *s, const char *c)
{
    size_t ls = strlen(s), lc = strlen(c);
    while (ls && s[ls - 1] == '/')
        ls--;
    while (lc && c[lc - 1] == '/')
        lc--;
    return ls == lc && strncasecmp(s, c, ls) == 0;
}

/* Is iss one of the configured issuers: exactly (a token to verify, then
 * refused when it does not verify), or nearly (issuer_near: refused)? */
static bool issuer_mine(const struct kl_oidc_cfg *o, const char *iss)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->v[i].issuer, iss) == 0 || issuer_near(o->v[i].issuer, iss))
            return true;
    return false;
}

/* Is word shaped like a JWT, however spoilt: it begins as a JSON
 * header's base64 does, or with a base64url segment that decodes to a
 * JSON object and then a dot (looks_like_jwt, but for what follows)? */
static bool jwt_shaped(const char *word)
{
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t a = strspn(word, b64url);
    return strncmp(word, "eyJ", 3) == 0 || (a && word[a] == '.' && kl_jwt_segment_is_object(word, a));
}

/* What names a configured issuer in a token too malformed to read (or
 * too large to verify): each issuer without its trailing '/'s, as written
 * and with '/' escaped as JSON may write it ("\/"). */
static const char **issuer_needles(kl_arena *a, const struct kl_oidc_cfg *o, size_t *n)
{
    const char **v = kl_arena_alloc(a, 2 * o->n * sizeof(*v));
    *n = 0;
    for (size_t i = 0; i < o->n; i++) {
        size_t len = strlen(o->v[i].issuer);
        while (len && o->v[i].issuer[len - 1] == '/')
            len--;
        if (!len)
            continue;
        char *esc = kl_arena_alloc(a, 2 * len + 1), *e = esc;
        for (size_t k = 0; k < len; k++) {
            if (o->v[i].issuer[k] == '/')
                *e++ = '\\';
            *e++ = o->v[i].issuer[k];
        }
        v[(*n)++] = kl_arena_strndup(a, o->v[i].issuer, len);
        v[(*n)++] = esc;
    }
    return v;
}

/* Is the run w[0..n) of base64url characters and dots a token of a
 * configured issuer: it reads as one (whatever follows it), or, too
 * malformed to name its issuer, holds a configured issuer's name? A
 * foreign issuer's JWT, and a key that merely begins like one, are the
 * caller's own. */
static bool run_is_token(kl_exchange *ex, const struct kl_oidc_cfg *o, const char *w, size_t n,
                         const char *const *needles, size_t nn)
{
    if (!jwt_shaped(w))
        return false;
    const char *iss = kl_jwt_peek_issuer(w, n, &ex->arena);
    if (iss)
        return issuer_mine(o, iss);
    return kl_jwt_runs_hold(w, n, needles, nn);
}

/* The bytes of a run of base64 characters (either alphabet, padding or
 * not: Basic's user:password, a token encoded once more) decoded
 * leniently into the arena, NUL-terminated; a NUL among them reads as a
 * space, so the text after it is still searched. */
static char *decode_loose(kl_arena *a, const char *s, size_t n, size_t *out_len)
{
    char *out = kl_arena_alloc(a, n / 4 * 3 + 3);
    size_t o = kl_b64_loose(s, n, (unsigned char *)out, NULL);
    for (size_t i = 0; i < o; i++)
        if (!out[i])
            out[i] = ' ';
    out[o] = '\0';
    *out_len = o;
    return out;
}

static const char b64url_dot[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

/* Does one credential value, as a provider would read it, hold a token of
 * a configured issuer? Every run of base64url characters and dots in it
 * counts, whatever comes before or after it: a scheme or none ("Bearer",
 * "Token", a bare token), quotes, "=", ":" or ";" (a provider, or whoever
 * reads its logs, takes the token out of whatever surrounds it). Once
 * (depth 0), each word is also read as base64, for a token encoded in it:
 * Basic's user:password. A run shorter than the shortest needle cannot
 * name an issuer, even encoded, and is not read (a head of "eyJ;eyJ;..."
 * would otherwise be thousands of tokens to decode). */
static bool holds_token(kl_exchange *ex, const struct kl_oidc_cfg *o, const char *v, const char *const *needles,
                        size_t nn, int depth)
{
    size_t least = SIZE_MAX;
    for (size_t i = 0; i < nn; i++)
        if (strlen(needles[i]) < least)
            least = strlen(needles[i]);
    for (const char *p = v; *p;) {
        p += strcspn(p, b64url_dot);
        size_t n = strspn(p, b64url_dot);
        if (n >= least && run_is_token(ex, o, kl_arena_strndup(&ex->arena, p, n), n, needles, nn))
            return true;
        p += n;
    }
    if (depth)
        return false;
    for (const char *p = v; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,"), dl;
        if (n >= least && holds_token(ex, o, decode_loose(&ex->arena, p, n, &dl), needles, nn, 1))
            return true;
        p += n;
    }
    return false;
}

bool kl_oidc_token_present(kl_exchange *ex, const struct kl_oidc_cfg *o)
{
    const kl_http_request *r = &ex->req;
    if (!o)
        return false;
    size_t nn;
    const char **needles = issuer_needles(&ex->arena, o, &nn);
    for (size_t h = 0; h < r->nheaders; h++)
        for (size_t i = 0; i < KL_NCREDENTIAL_HEADERS; i++)
            if (strcasecmp(r->headers[h].name, credential_headers[i]) == 0 &&
                holds_token(ex, o, r->headers[h].value, needles, nn, 0))
                return true;
    const char **q = kl_route_query_credentials(&ex->arena, r->query);
    for (size_t i = 0; q[i]; i++)
        if (holds_token(ex, o, q[i], needles, nn, 0))
            return true;
    return false;
}

static int refuse(kl_exchange *ex, const char *why)
{
    kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED, "invalid workload token: %s", why);
    return -1;
}

/* The verified token's claims against the entry's "claims" conditions. */
static bool claims_allowed(const struct issuer *is, const cJSON *claims, char *why, size_t whylen)
{
    for (size_t i = 0; i < is->nrules; i++) {
        const struct claim_rule *r = &is->rules[i];
        char buf[32];
        const char *problem = NULL;
        const char *v = kl_jwt_claim_text(claims, r->path, buf, sizeof(buf), &problem);
        if (!v) {
            snprintf(why, whylen, "claim %s %s", r->path, problem);
            return false;
        }
        bool ok = false;
        for (size_t k = 0; k < r->nglobs && !ok; k++)
            ok = kl_glob_match(r->globs[k], v);
        if (!ok) {
            snprintf(why, whylen, "claim %s has a value this gateway does not accept", r->path);
            return false;
        }
    }
    return true;
}

/* The token against one issuer entry: 0 with *claims (the caller frees
 * them); -1 when it does not verify, -2 when it verifies but its claims are
 * not accepted, with why. */
static int verify_with(struct issuer *is, const char *token, size_t len, cJSON **claims, char *why, size_t whylen)
{
    pthread_mutex_lock(&is->lock);
    struct keys_ref *k = is->cur;
    if (k)
        atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&is->lock);
    if (!k) {
        snprintf(why, whylen, "the issuer's keys were all withdrawn (its JWKS holds no usable key)");
        return -1;
    }
    int r = kl_jwt_verify(token, len, &is->policy, k->jwks, (int64_t)time(NULL), claims, why, whylen);
    keys_unref(k);
    if (r < 0)
        return -1;
    if (!claims_allowed(is, *claims, why, whylen)) {
        cJSON_Delete(*claims);
        *claims = NULL;
        return -2;
    }
    return 0;
}

int kl_oidc_identify(kl_exchange *ex, struct kl_oidc_cfg *o)
{
    const char **found = NULL;
    size_t nfound = o ? find_tokens(ex, &found) : 0;
    /* A JWT no configured issuer minted is not a workload token but a
     * provider's own credential an SDK sends (an Azure Entra ID access
     * token, a Databricks OAuth token, a Google ID token): the caller is
     * then whoever the other sources say, as if it had sent no token, which
     * it could as well. The first token of a configured issuer is the one
     * checked, and refused when it does not verify. */
    const char *token = NULL, *iss = NULL;
    size_t len = 0;
    for (size_t i = 0; i < nfound && !token; i++) {
        len = strlen(found[i]);
        if (len > KL_JWT_MAX_TOKEN)
            return refuse(ex, "token too large");
        iss = kl_jwt_peek_issuer(found[i], len, &ex->arena);
        if (!iss)
            return refuse(ex, "malformed token");
        if (issuer_mine(o, iss))
            token = found[i];
    }
    if (!token) {
        if (nfound)
            kl_debug("%s: a JWT from issuer %.200s, which is not configured, is taken for a provider credential",
                     ex->id, iss);
        return -1;
    }
    /* Several entries may name one issuer (an organisation's repositories
     * mapped one way, a partner's another): the first whose audience, keys
     * and claims conditions the token meets identifies it. Where none does,
     * the reason is the one from the entry it got furthest with. */
    struct issuer *is = NULL;
    cJSON *claims = NULL;
    char why[200] = "issuer is not trusted by this gateway";
    int best = 0;
    for (size_t i = 0; i < o->n && !is; i++) {
        if (strcmp(o->v[i].issuer, iss) != 0)
            continue;
        char w[200];
        int r = verify_with(&o->v[i], token, len, &claims, w, sizeof(w));
        if (r == 0)
            is = &o->v[i];
        else if (-r > best) {
            best = -r;
            memcpy(why, w, sizeof(why));
        }
    }
    if (!is)
        return refuse(ex, why);
    struct kl_identity *id = kl_arena_alloc(&ex->arena, sizeof(*id));
    id->source = "oidc";
    id->issuer = is->issuer;
    if (kl_jwt_template(claims, is->login_tmpl, &ex->arena, &id->login, why, sizeof(why)) < 0 ||
        (is->display_tmpl &&
         kl_jwt_template(claims, is->display_tmpl, &ex->arena, &id->display_name, why, sizeof(why)) < 0)) {
        cJSON_Delete(claims);
        return refuse(ex, why);
    }
    const char **tags = kl_arena_alloc(&ex->arena, (is->ntags + 1) * sizeof(char *));
    for (size_t i = 0; i < is->ntags; i++) {
        if (kl_jwt_template(claims, is->tag_tmpls[i], &ex->arena, &tags[i], why, sizeof(why)) < 0) {
            cJSON_Delete(claims);
            return refuse(ex, why);
        }
    }
    const char **groups = kl_arena_alloc(&ex->arena, (is->ngroups + 1) * sizeof(char *));
    for (size_t i = 0; i < is->ngroups; i++) {
        if (kl_jwt_template(claims, is->group_tmpls[i], &ex->arena, &groups[i], why, sizeof(why)) < 0) {
            cJSON_Delete(claims);
            return refuse(ex, why);
        }
    }
    cJSON_Delete(claims);
    ex->workload_token = true;
    id->tags = tags;
    id->ntags = is->ntags;
    id->groups = groups;
    id->ngroups = is->ngroups;
    ex->ident = id;
    return 0;
}
