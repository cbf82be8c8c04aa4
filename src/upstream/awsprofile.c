/* AWS credentials from a profile of the shared config and credentials
 * files, as the AWS SDKs and the AWS CLI resolve it: what a developer's
 * `aws configure`, `aws sso login`, aws-vault or a platform team's role
 * chain leaves on a machine. One profile names one way:
 *
 *   role_arn + source_profile     STS AssumeRole, signed with the source
 *                                 profile's credentials (chains allowed)
 *   role_arn + credential_source  the same, signed with the environment's
 *                                 keys, the container's or the instance's
 *   aws_access_key_id + aws_secret_access_key (+ aws_session_token)
 *   role_arn + web_identity_token_file   STS AssumeRoleWithWebIdentity
 *   credential_process            a command printing the credentials
 *   sso_session / sso_start_url + sso_account_id + sso_role_name
 *                                 IAM Identity Center, with the token
 *                                 `aws sso login` cached (an
 *                                 sso-session's refreshed and cached
 *                                 back, as the AWS CLI does)
 *
 * The files are read again on every try: a developer edits them, and
 * `aws sso login` renews its token in place. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "core/arena.h"
#include "core/exchange.h"
#include "core/log.h"
#include "core/text.h"
#include "upstream/awscreds_int.h"
#include "upstream/awsini.h"
#include "upstream/runcmd.h"
#include "upstream/syncfetch.h"

#define MAX_FILE (1u << 20)     /* a config file larger than this is a mistake */
#define MAX_CHAIN 8             /* source_profile hops */
#define PROCESS_TIMEOUT_MS 60000
#define RECHECK_MS 300000       /* keys in a file: read again every five minutes */

struct files {
    kl_arena a;
    struct kl_aws_ini config, credentials;
    const char *home;
    bool named;                 /* AWS_PROFILE chose the profile */
    const char *region_fallback;
    const atomic_bool *stop;
};

/* A file into *out, or an empty one when it does not exist (nobody has
 * run `aws configure` there). One that cannot be read is an error when
 * AWS_PROFILE chose a profile; otherwise it is taken for absent, and said
 * (as the SDKs skip it): a gateway on EKS or EC2 whose home holds a stray
 * unreadable file still finds its role. 0, or -1 with err. */
static int read_ini(struct files *fs, const char *path, struct kl_aws_ini *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char *text, why[400];
    int rc = kl_sync_read_file("the shared config file", path, MAX_FILE, &text, why, sizeof(why));
    if (rc == -2)
        return 0;
    if (rc == 0) {
        kl_aws_ini_parse(&fs->a, text, strlen(text), out);
        OPENSSL_cleanse(text, strlen(text));
        free(text);
        return 0;
    }
    if (fs->named) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    kl_warn("AWS credentials: %s (taken for absent)", why);
    return 0;
}

/* "~/x" in a path the environment names, as the SDKs expand it. */
static const char *expand(struct files *fs, const char *path)
{
    if (path[0] == '~' && path[1] == '/' && fs->home)
        return kl_arena_concat(&fs->a, fs->home, path + 1, NULL);
    return path;
}

/* AWS_CONFIG_FILE or ~/.aws/config, AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials (without a home, only a file named outright). */
static int read_files(struct files *fs, char *err, size_t errlen)
{
    const char *cfg = kl_aws_env("AWS_CONFIG_FILE"), *cred = kl_aws_env("AWS_SHARED_CREDENTIALS_FILE");
    const char *cfg_path = cfg ? expand(fs, cfg) : fs->home ? kl_arena_concat(&fs->a, fs->home, "/.aws/config", NULL)
                                                          : NULL;
    const char *cred_path = cred ? expand(fs, cred)
                                 : fs->home ? kl_arena_concat(&fs->a, fs->home, "/.aws/credentials", NULL) : NULL;
    memset(&fs->config, 0, sizeof(fs->config));
    memset(&fs->credentials, 0, sizeof(fs->credentials));
    if ((cfg_path && read_ini(fs, cfg_path, &fs->config, err, errlen) < 0) ||
        (cred_path && read_ini(fs, cred_path, &fs->credentials, err, errlen) < 0))
        return -1;
    return 0;
}

/* $HOME, else the account's home directory (a service started without
 * HOME), in fs's arena; NULL when neither. */
static const char *home_dir(struct files *fs)
{
    if (kl_aws_env("HOME"))
        return kl_aws_env("HOME");
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) != 0 || !res || !res->pw_dir || !res->pw_dir[0] ||
        strcmp(res->pw_dir, "/") == 0)
        return NULL;
    return kl_arena_strdup(&fs->a, res->pw_dir);
}

/* The config file's section for a profile: "[profile NAME]", and for the
 * default profile "[default]" too. */
static const char *config_section(struct files *fs, const char *name)
{
    const char *s = kl_arena_concat(&fs->a, "profile ", name, NULL);
    if (strcmp(name, "default") == 0 && !kl_aws_ini_has(&fs->config, s))
        return "default";
    return s;
}

static bool profile_exists(struct files *fs, const char *name)
{
    return kl_aws_ini_has(&fs->credentials, name) || kl_aws_ini_has(&fs->config, config_section(fs, name));
}

/* A profile's setting: the credentials file's over the config file's. */
static const char *get(struct files *fs, const char *name, const char *key)
{
    const char *v = kl_aws_ini_get(&fs->credentials, name, key);
    if (!v || !*v)
        v = kl_aws_ini_get(&fs->config, config_section(fs, name), key);
    return v && *v ? v : NULL;
}

static int static_keys(struct files *fs, const char *name, struct kl_aws_found *f, char *err, size_t errlen)
{
    f->source = "profile";
    if (!kl_aws_copy(f->key_id, sizeof(f->key_id), get(fs, name, "aws_access_key_id")) ||
        !kl_aws_copy(f->secret, sizeof(f->secret), get(fs, name, "aws_secret_access_key")) ||
        (get(fs, name, "aws_session_token") &&
         !kl_aws_copy(f->token, sizeof(f->token), get(fs, name, "aws_session_token")))) {
        snprintf(err, errlen, "AWS profile %.100s: aws_access_key_id and aws_secret_access_key must both be set "
                 "(and not too long)", name);
        return -1;
    }
    f->recheck_ms = RECHECK_MS;
    return 1;
}

/* ---- credential_process ---- */

/* A credential member of a JSON document, wiped. */
static void wipe_member(cJSON *j, const char *k)
{
    cJSON *t = cJSON_GetObjectItemCaseSensitive(j, k);
    if (cJSON_IsString(t))
        OPENSSL_cleanse(t->valuestring, strlen(t->valuestring));
}

/* A document holding credentials, every string in it wiped, freed. */
static void wipe_free(cJSON *j)
{
    kl_json_wipe_strings(j);
    cJSON_Delete(j);
}

/* The command's JSON: Version 1, AccessKeyId, SecretAccessKey, and for
 * temporary credentials SessionToken and Expiration. */
static int from_process(struct files *fs, const char *name, const char *cmd, struct kl_aws_found *f, char *err,
                        size_t errlen)
{
    f->source = "profile process";
    char *out = malloc(64 * 1024), errout[512];
    if (!out)
        abort();
    struct kl_run_opts o = {.shell_command = cmd, .timeout_ms = PROCESS_TIMEOUT_MS};
    char why[160];
    int status = kl_run(&o, fs->stop, out, 64 * 1024, errout, sizeof(errout), why, sizeof(why));
    if (status < 0)
        snprintf(err, errlen, "AWS profile %.100s: credential_process: %s", name, why);
    int rc = -1;
    if (status > 0) {
        errout[strcspn(errout, "\r\n")] = '\0';
        snprintf(err, errlen, "AWS profile %.100s: credential_process exited with status %d%s%.300s", name, status,
                 errout[0] ? ": " : "", errout);
    } else if (status == 0) {
        cJSON *j = cJSON_Parse(out);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "Version");
        const char *tok = kl_aws_json_str(j, "SessionToken");
        const char *exp = kl_aws_json_str(j, "Expiration");
        if (!cJSON_IsNumber(v) || v->valuedouble != 1)
            snprintf(err, errlen, "AWS profile %.100s: credential_process printed no JSON with \"Version\": 1", name);
        else if (!kl_aws_copy(f->key_id, sizeof(f->key_id), kl_aws_json_str(j, "AccessKeyId")) ||
                 !kl_aws_copy(f->secret, sizeof(f->secret), kl_aws_json_str(j, "SecretAccessKey")) ||
                 (tok && !kl_aws_copy(f->token, sizeof(f->token), tok)))
            snprintf(err, errlen, "AWS profile %.100s: credential_process printed no usable AccessKeyId and "
                     "SecretAccessKey", name);
        else if (exp && !(f->expires_ms = kl_iso8601_ms(exp)))
            snprintf(err, errlen, "AWS profile %.100s: credential_process's Expiration is not an ISO 8601 time", name);
        else
            rc = 1;
        wipe_free(j);
    }
    OPENSSL_cleanse(out, 64 * 1024);
    free(out);
    return rc;
}

/* ---- IAM Identity Center (SSO) ---- */

/* The domain of a region's endpoints: China's regions have their own. */
static const char *aws_domain(const char *region)
{
    return strncmp(region, "cn-", 3) == 0 ? "amazonaws.com.cn" : "amazonaws.com";
}


/* j's member k set to v, the old value wiped. */
static void set_member(cJSON *j, const char *k, const char *v)
{
    wipe_member(j, k);
    cJSON_DeleteItemFromObjectCaseSensitive(j, k);
    if (!cJSON_AddStringToObject(j, k, v))
        abort();
}

/* The document back in its file, as the AWS CLI and SDKs keep it current
 * (the next `aws` command, and keyless's next read, use the new token):
 * written beside it and renamed over it, mode 0600. */
static int write_token_doc(const char *path, cJSON *j, char *err, size_t errlen)
{
    char *text = cJSON_PrintUnformatted(j);
    if (!text)
        abort();
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.keyless-%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(text);
    ssize_t wrote = fd >= 0 ? write(fd, text, len) : -1;
    if (wrote >= 0 && (size_t)wrote != len)
        errno = ENOSPC; /* a short write: the disk is full */
    bool ok = wrote >= 0 && (size_t)wrote == len;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    ok = ok && rename(tmp, path) == 0;
    if (!ok) {
        snprintf(err, errlen, "%.300s: %s", path, strerror(errno));
        unlink(tmp);
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return ok ? 0 : -1;
}

/* A new access token for an sso-session's cached document, from IAM
 * Identity Center's OIDC service (CreateToken with the refresh token `aws
 * sso login` registered), put into j: 0, or -1 with err. The AWS SDKs do
 * the same when the token has five minutes or less left. */
static int sso_refresh(struct files *fs, const char *region, cJSON *j, char *err, size_t errlen)
{
    const char *cid = kl_aws_json_str(j, "clientId");
    const char *csec = kl_aws_json_str(j, "clientSecret");
    const char *rt = kl_aws_json_str(j, "refreshToken");
    const char *reg = kl_aws_json_str(j, "registrationExpiresAt");
    if (!cid || !csec || !rt) {
        snprintf(err, errlen, "no refresh token cached");
        return -1;
    }
    if (reg && kl_iso8601_ms(reg) && kl_iso8601_ms(reg) <= kl_wall_ms()) {
        snprintf(err, errlen, "the client registration expired");
        return -1;
    }
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "clientId", cid);
    cJSON_AddStringToObject(req, "clientSecret", csec);
    cJSON_AddStringToObject(req, "grantType", "refresh_token");
    cJSON_AddStringToObject(req, "refreshToken", rt);
    char *body = cJSON_PrintUnformatted(req);
    wipe_free(req);
    if (!body)
        abort();
    const char *base = kl_aws_env("AWS_ENDPOINT_URL_SSO_OIDC");
    char *url = base ? kl_arena_concat(&fs->a, base, "/token", NULL)
                     : kl_arena_printf(&fs->a, "https://oidc.%s.%s/token", region, aws_domain(region));
    const char *headers[] = {"Content-Type: application/json", NULL};
    struct kl_sync_req q = {.method = "POST", .url = url, .body = body, .headers = headers};
    struct kl_sync_reply r;
    int rc = kl_sync_fetch(&q, fs->stop, &r, err, errlen);
    OPENSSL_cleanse(body, strlen(body));
    free(body);
    if (rc < 0)
        return -1;
    cJSON *a = cJSON_Parse(r.body);
    const char *at = kl_aws_json_str(a, "accessToken");
    const char *nrt = kl_aws_json_str(a, "refreshToken");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(a, "expiresIn");
    rc = -1;
    if (r.status == 200 && at && *at && cJSON_IsNumber(in) && in->valuedouble > 0 && in->valuedouble < 1e7) {
        char when[32];
        time_t t = (time_t)((kl_wall_ms() / 1000) + (int64_t)in->valuedouble);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        set_member(j, "accessToken", at);
        set_member(j, "expiresAt", when);
        if (nrt && *nrt)
            set_member(j, "refreshToken", nrt);
        rc = 0;
    } else {
        const char *e = kl_aws_json_str(a, "error");
        snprintf(err, errlen, "POST %.150s (CreateToken): HTTP %ld%s%.100s", url, r.status, e ? " " : "", e ? e : "");
    }
    if (a)
        wipe_free(a);
    kl_sync_reply_free(&r);
    return rc;
}

/* The token `aws sso login` cached for key (the sso-session's name, or
 * the start URL of a profile of the older kind), into token: 0, or -1.
 * An sso-session's token is refreshed when it has five minutes or less
 * left (region: its sso_region; NULL for the older kind, which has no
 * refresh token). */
static int sso_token(struct files *fs, const char *name, const char *key, const char *refresh_region, char *token,
                     size_t cap, char *err, size_t errlen)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)key, strlen(key), md);
    char hex[2 * SHA_DIGEST_LENGTH + 1];
    for (size_t i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    char *path = kl_arena_concat(&fs->a, fs->home ? fs->home : "", "/.aws/sso/cache/", hex, ".json", NULL);
    char *text;
    char why_read[300] = "no home directory";
    if (!fs->home || kl_sync_read_file("the SSO cache file", path, 64 * 1024, &text, why_read, sizeof(why_read)) < 0) {
        snprintf(err, errlen, "AWS profile %.100s: no usable cached SSO token (%.300s): run `aws sso login --profile "
                 "%.100s`", name, why_read, name);
        return -1;
    }
    cJSON *j = cJSON_Parse(text);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    int64_t now = kl_wall_ms();
    int64_t expires = kl_iso8601_ms(kl_aws_json_str(j, "expiresAt"));
    char why[300] = "";
    if (cJSON_IsObject(j) && refresh_region && expires - now <= 300000) {
        if (sso_refresh(fs, refresh_region, j, why, sizeof(why)) == 0) {
            expires = kl_iso8601_ms(kl_aws_json_str(j, "expiresAt"));
            char werr[400];
            if (write_token_doc(path, j, werr, sizeof(werr)) < 0)
                kl_warn("AWS profile %.100s: the refreshed SSO token is used but could not be cached: %s", name, werr);
        }
    }
    bool ok = kl_aws_copy(token, cap, kl_aws_json_str(j, "accessToken"));
    wipe_free(j);
    if (!ok || !expires || expires <= now)
        OPENSSL_cleanse(token, cap);
    if (!ok || !expires) {
        snprintf(err, errlen, "AWS profile %.100s: the cached SSO token %.200s has no accessToken and expiresAt", name,
                 path);
        return -1;
    }
    if (expires <= now) {
        snprintf(err, errlen, "AWS profile %.100s: the SSO session expired%s%s%s: run `aws sso login --profile %.100s`",
                 name, why[0] ? " (refreshing it: " : "", why, why[0] ? ")" : "", name);
        return -1;
    }
    return 0;
}

/* The role's credentials from the SSO portal (GetRoleCredentials). */
static int from_sso(struct files *fs, const char *name, struct kl_aws_found *f, char *err, size_t errlen)
{
    f->source = "profile sso";
    const char *session = get(fs, name, "sso_session"), *start_url, *region;
    if (session) {
        const char *sec = kl_arena_concat(&fs->a, "sso-session ", session, NULL);
        start_url = kl_aws_ini_get(&fs->config, sec, "sso_start_url");
        region = kl_aws_ini_get(&fs->config, sec, "sso_region");
    } else {
        start_url = get(fs, name, "sso_start_url");
        region = get(fs, name, "sso_region");
    }
    const char *account = get(fs, name, "sso_account_id"), *role = get(fs, name, "sso_role_name");
    if (!start_url || !region || !*region || !account || !role) {
        snprintf(err, errlen, "AWS profile %.100s: SSO needs sso_account_id, sso_role_name, and sso_start_url and "
                 "sso_region (in the profile, or in its [sso-session %.100s])", name, session ? session : "NAME");
        return -1;
    }
    char token[8192];
    if (sso_token(fs, name, session ? session : start_url, session ? region : NULL, token, sizeof(token), err,
                  errlen) < 0)
        return -1;
    char *er = curl_easy_escape(NULL, role, 0), *ea = curl_easy_escape(NULL, account, 0);
    if (!er || !ea)
        abort();
    const char *base = kl_aws_env("AWS_ENDPOINT_URL_SSO");
    char *url = base ? kl_arena_printf(&fs->a, "%s/federation/credentials?role_name=%s&account_id=%s", base, er, ea)
                     : kl_arena_printf(&fs->a, "https://portal.sso.%s.%s/federation/credentials?"
                                       "role_name=%s&account_id=%s", region, aws_domain(region), er, ea);
    curl_free(er);
    curl_free(ea);
    char hdr[8300];
    snprintf(hdr, sizeof(hdr), "x-amz-sso_bearer_token: %s", token);
    OPENSSL_cleanse(token, sizeof(token));
    const char *headers[] = {hdr, NULL};
    struct kl_sync_req q = {.method = "GET", .url = url, .headers = headers};
    struct kl_sync_reply r;
    int rc = kl_sync_fetch(&q, fs->stop, &r, err, errlen);
    OPENSSL_cleanse(hdr, sizeof(hdr));
    if (rc < 0)
        return -1;
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "roleCredentials");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(c, "expiration");
    rc = -1;
    if (r.status == 200 &&
        kl_aws_copy(f->key_id, sizeof(f->key_id), kl_aws_json_str(c, "accessKeyId")) &&
        kl_aws_copy(f->secret, sizeof(f->secret), kl_aws_json_str(c, "secretAccessKey")) &&
        kl_aws_copy(f->token, sizeof(f->token), kl_aws_json_str(c, "sessionToken")) &&
        cJSON_IsNumber(exp) && exp->valuedouble > 0 && exp->valuedouble < 1e15) {
        f->expires_ms = (int64_t)exp->valuedouble;
        rc = 1;
    } else {
        const char *msg = kl_aws_json_str(j, "message");
        snprintf(err, errlen, "AWS profile %.100s: GET %.150s (GetRoleCredentials for %.100s in %.20s): "
                 "HTTP %ld%s%.200s", name, url, role, account, r.status, msg ? ": " : ", no credentials",
                 msg ? msg : "");
    }
    wipe_free(j);
    kl_sync_reply_free(&r);
    return rc;
}

/* ---- the profile ---- */

/* The files' values hold secrets: wiped before their arena is freed. */
static void wipe(struct kl_aws_ini *ini)
{
    for (size_t i = 0; i < ini->nprops; i++)
        OPENSSL_cleanse((char *)ini->props[i].value, strlen(ini->props[i].value));
}

static int resolve(struct files *fs, const char *name, int depth, struct kl_aws_found *f, char *err, size_t errlen);

/* A profile's credential_source: the environment's keys, the container's
 * or the instance's. */
static int credential_source(struct files *fs, const char *name, const char *cs, struct kl_aws_found *src, char *err,
                             size_t errlen)
{
    int rc;
    if (strcmp(cs, "Environment") == 0)
        rc = kl_aws_from_env(src, err, errlen);
    else if (strcmp(cs, "EcsContainer") == 0)
        rc = kl_aws_from_container(fs->stop, src, err, errlen);
    else if (strcmp(cs, "Ec2InstanceMetadata") == 0)
        rc = kl_aws_from_imds(fs->stop, src, err, errlen);
    else {
        snprintf(err, errlen, "AWS profile %.100s: credential_source must be Environment, EcsContainer or "
                 "Ec2InstanceMetadata", name);
        return -1;
    }
    if (rc == 0)
        snprintf(err, errlen, "AWS profile %.100s: its credential_source %s has no credentials", name, cs);
    return rc == 0 ? -1 : rc;
}

/* What signs the AssumeRole call: the source profile's credentials, or
 * credential_source's (the environment's keys, the container's, the
 * instance's). */
static int role_source(struct files *fs, const char *name, int depth, struct kl_aws_found *src, char *err,
                       size_t errlen)
{
    const char *sp = get(fs, name, "source_profile"), *cs = get(fs, name, "credential_source");
    if (sp && cs) {
        snprintf(err, errlen, "AWS profile %.100s names both source_profile and credential_source", name);
        return -1;
    }
    if (sp) {
        if (!profile_exists(fs, sp)) {
            snprintf(err, errlen, "AWS profile %.100s: its source_profile %.100s is in neither file", name, sp);
            return -1;
        }
        /* a profile that is its own source signs with its own keys */
        if (strcmp(sp, name) == 0)
            return static_keys(fs, name, src, err, errlen);
        int rc = resolve(fs, sp, depth + 1, src, err, errlen);
        if (rc == 0)
            snprintf(err, errlen, "AWS profile %.100s: its source_profile %.100s names no credentials", name, sp);
        return rc == 0 ? -1 : rc;
    }
    return credential_source(fs, name, cs, src, err, errlen);
}

static int assume_role(struct files *fs, const char *name, int depth, struct kl_aws_found *f, char *err,
                       size_t errlen)
{
    if (get(fs, name, "mfa_serial")) {
        snprintf(err, errlen, "AWS profile %.100s asks for an MFA code (mfa_serial), which a gateway cannot type: "
                 "use a profile without it, or credential_process with a tool that caches the session", name);
        return -1;
    }
    struct kl_aws_found src;
    memset(&src, 0, sizeof(src));
    int rc = role_source(fs, name, depth, &src, err, errlen);
    if (rc == 1) {
        const char *ds = get(fs, name, "duration_seconds");
        char *end = NULL;
        long d = ds ? strtol(ds, &end, 10) : 0;
        if (ds && (*end || d < 900 || d > 43200)) {
            snprintf(err, errlen, "AWS profile %.100s: duration_seconds must be 900 to 43200", name);
            rc = -1;
        } else {
            const char *region = get(fs, name, "region");
            rc = kl_aws_assume_role(kl_aws_sts_region(region ? region : fs->region_fallback), &src,
                                    get(fs, name, "role_arn"), get(fs, name, "role_session_name"),
                                    get(fs, name, "external_id"), d, fs->stop, f, err, errlen);
        }
    }
    OPENSSL_cleanse(&src, sizeof(src));
    f->source = "profile assume role";
    return rc;
}

/* In the AWS SDKs' order: a role first (a source profile's own keys
 * before its role, so a chain ends), then keys, a web identity, a
 * process, SSO. 0: the profile names no credentials. */
static int resolve(struct files *fs, const char *name, int depth, struct kl_aws_found *f, char *err, size_t errlen)
{
    if (depth > MAX_CHAIN) {
        snprintf(err, errlen, "AWS profile %.100s: more than %d source_profile hops (a loop?)", name, MAX_CHAIN);
        return -1;
    }
    bool keys = get(fs, name, "aws_access_key_id") || get(fs, name, "aws_secret_access_key");
    const char *role = get(fs, name, "role_arn");
    if (depth > 0 && keys)
        return static_keys(fs, name, f, err, errlen);
    /* a source profile may be only a credential_source (the JS SDK's reading) */
    if (depth > 0 && !role && get(fs, name, "credential_source"))
        return credential_source(fs, name, get(fs, name, "credential_source"), f, err, errlen);
    if (role && (get(fs, name, "source_profile") || get(fs, name, "credential_source")))
        return assume_role(fs, name, depth, f, err, errlen);
    if (keys)
        return static_keys(fs, name, f, err, errlen);
    if (role && get(fs, name, "web_identity_token_file")) {
        const char *region = get(fs, name, "region");
        f->source = "profile web identity";
        return kl_aws_web_identity(kl_aws_sts_region(region ? region : fs->region_fallback),
                                   get(fs, name, "web_identity_token_file"), role, get(fs, name, "role_session_name"),
                                   fs->stop, f, err, errlen);
    }
    if (get(fs, name, "credential_process"))
        return from_process(fs, name, get(fs, name, "credential_process"), f, err, errlen);
    if (get(fs, name, "sso_session") || get(fs, name, "sso_start_url") || get(fs, name, "sso_account_id"))
        return from_sso(fs, name, f, err, errlen);
    if (role) {
        snprintf(err, errlen, "AWS profile %.100s: role_arn needs source_profile, credential_source or "
                 "web_identity_token_file", name);
        return -1;
    }
    return 0;
}

int kl_aws_from_profile(const char *region, const atomic_bool *stop, struct kl_aws_found *f, char *err, size_t errlen)
{
    struct files fs = {.named = kl_aws_env("AWS_PROFILE") != NULL, .region_fallback = region, .stop = stop};
    kl_arena_init(&fs.a);
    fs.home = home_dir(&fs);
    const char *name = fs.named ? kl_aws_env("AWS_PROFILE") : "default";
    int rc = read_files(&fs, err, errlen);
    if (rc == 0 && profile_exists(&fs, name))
        rc = resolve(&fs, name, 0, f, err, errlen);
    else if (rc == 0 && fs.named) {
        snprintf(err, errlen, "AWS_PROFILE is %.100s, a profile neither the shared config file nor the credentials "
                 "file has", name);
        rc = -1;
    }
    wipe(&fs.config);
    wipe(&fs.credentials);
    kl_arena_free(&fs.a);
    return rc;
}
