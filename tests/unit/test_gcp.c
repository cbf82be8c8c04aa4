/* Google service-account key files, as a provider's apikey holds them. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "core/config.h"
#include "upstream/gcp.h"
#include "upstream/gcp_int.h"

/* A key file for a fresh RSA key, as `gcloud iam service-accounts keys
 * create` writes one (the fields keyless reads, and a few it does not). */
static char *key_file(kl_arena *a, const char *type, bool with_key)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    char *pem;
    long n = BIO_get_mem_data(b, &pem);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "project_id", "p1");
    cJSON_AddStringToObject(o, "private_key_id", "kid-1");
    if (with_key)
        cJSON_AddStringToObject(o, "private_key", kl_arena_strndup(a, pem, (size_t)n));
    cJSON_AddStringToObject(o, "client_email", "keyless@p1.iam.gserviceaccount.com");
    char *text = cJSON_Print(o);
    char *r = kl_arena_strdup(a, text);
    free(text);
    cJSON_Delete(o);
    BIO_free(b);
    EVP_PKEY_free(k);
    return r;
}

static void reads_key_files(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_gcp_cred sa;
    const char *why = NULL;
    char *json = key_file(&a, "service_account", true);
    /* the JSON itself, as "file:/path" reads it */
    assert_int_equal(kl_gcp_cred_parse(json, NULL, &a, &sa, &why), 1);
    assert_string_equal(sa.email, "keyless@p1.iam.gserviceaccount.com");
    assert_string_equal(sa.key_id, "kid-1");
    assert_string_equal(sa.token_uri, "https://oauth2.googleapis.com/token");
    assert_non_null(strstr(sa.private_key, "PRIVATE KEY"));
    /* Aperture's keyfile:: with the JSON, or its base64 */
    assert_int_equal(kl_gcp_cred_parse(kl_arena_concat(&a, "keyfile::", json, NULL), NULL, &a, &sa, &why), 1);
    size_t n = strlen(json);
    char *b64 = kl_arena_alloc(&a, 4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)json, (int)n);
    assert_int_equal(kl_gcp_cred_parse(kl_arena_concat(&a, "keyfile::", b64, "\n", NULL), NULL, &a, &sa, &why), 1);
    assert_string_equal(sa.email, "keyless@p1.iam.gserviceaccount.com");
    /* as base64(1) writes it: wrapped at 76 columns */
    char *wrapped = kl_arena_alloc(&a, strlen(b64) + strlen(b64) / 76 + 2);
    for (size_t i = 0, o = 0; b64[i]; i++) {
        wrapped[o++] = b64[i];
        if (i % 76 == 75)
            wrapped[o++] = '\n';
    }
    assert_true(strchr(wrapped, '\n') != NULL);
    assert_int_equal(kl_gcp_cred_parse(kl_arena_concat(&a, "keyfile::", wrapped, NULL), NULL, &a, &sa, &why), 1);
    assert_string_equal(sa.email, "keyless@p1.iam.gserviceaccount.com");
    /* ordinary keys */
    assert_int_equal(kl_gcp_cred_parse("sk-ant-abc", NULL, &a, &sa, &why), 0);
    /* credentials files keyless cannot use are refused, never sent as a key */
    assert_int_equal(kl_gcp_cred_parse(" {\"type\":\"authorized_user\",\"refresh_token\":\"r\"}", NULL, &a, &sa, &why), -1);
    assert_non_null(strstr(why, "authorized_user credentials file has no client_id"));
    assert_int_equal(kl_gcp_cred_parse("{\"type\":\"external_account\",\"audience\":\"x\"}", NULL, &a, &sa, &why), -1);
    assert_non_null(strstr(why, "has no audience, subject_token_type or credential_source"));
    assert_int_equal(kl_gcp_cred_parse("{\"type\":\"impersonated_service_account\"}", NULL, &a, &sa, &why), -1);
    assert_non_null(strstr(why, "source_credentials must be an authorized_user's or a service_account's"));
    assert_int_equal(kl_gcp_cred_parse("{\"type\":\"external_account_authorized_user\"}", NULL, &a, &sa, &why), -1);
    assert_non_null(strstr(why, "of type \"external_account_authorized_user\""));
    /* other JSON is a key like any (a self-hosted server's token) */
    assert_int_equal(kl_gcp_cred_parse("{\"token\":\"abc\"}", NULL, &a, &sa, &why), 0);
    assert_int_equal(kl_gcp_cred_parse("\xEF\xBB\xBF{\"client_email\":1", NULL, &a, &sa, &why), 0);
    /* key files that cannot be used */
    assert_int_equal(kl_gcp_cred_parse("keyfile::not base64!", NULL, &a, &sa, &why), -1);
    assert_non_null(strstr(why, "JSON or its base64"));
    /* token_uri: https, or http to this machine only (the assertion is a credential) */
    const char *uris[][2] = {{"https://oauth2.googleapis.com/token", "1"}, {"http://127.0.0.1:9/token", "1"},
                             {"http://localhost/token", "1"},          {"http://[::1]:8080/t", "1"},
                             {"http://oauth2.googleapis.com/token", "0"}, {"http://127.example.com/t", "0"},
                             {"http://localhost.example.com/t", "0"},   {"ftp://127.0.0.1/t", "0"},
                             {"http://localhost:80@evil.example/t", "0"}, {"http://127.0.0.1:1@evil.example/", "0"}};
    for (size_t i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
        cJSON *o = cJSON_Parse(json);
        cJSON_AddStringToObject(o, "token_uri", uris[i][0]);
        char *t = cJSON_PrintUnformatted(o);
        int rc = kl_gcp_cred_parse(t, NULL, &a, &sa, &why);
        free(t);
        cJSON_Delete(o);
        if (uris[i][1][0] == '1') {
            assert_int_equal(rc, 1);
            assert_string_equal(sa.token_uri, uris[i][0]);
        } else {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(why, "token_uri must be https://"));
        }
    }
    assert_int_equal(kl_gcp_cred_parse(kl_arena_concat(&a, "keyfile::", key_file(&a, "service_account", false), NULL),
                                       NULL, &a, &sa, &why), -1);
    assert_non_null(strstr(why, "private_key"));
    assert_int_equal(kl_gcp_cred_parse(kl_arena_concat(&a, "keyfile::", key_file(&a, "authorized_user", true), NULL),
                                       NULL, &a, &sa, &why), -1);
    assert_non_null(strstr(why, "authorized_user"));
    /* an EC key cannot sign RS256 */
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, ec, NULL, NULL, 0, NULL, NULL);
    char *pem;
    long pl = BIO_get_mem_data(b, &pem);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "service_account");
    cJSON_AddStringToObject(o, "client_email", "x@p.iam.gserviceaccount.com");
    cJSON_AddStringToObject(o, "private_key", kl_arena_strndup(&a, pem, (size_t)pl));
    char *ectext = cJSON_PrintUnformatted(o);
    assert_int_equal(kl_gcp_cred_parse(ectext, NULL, &a, &sa, &why), -1);
    assert_non_null(strstr(why, "not an RSA key"));
    free(ectext);
    cJSON_Delete(o);
    BIO_free(b);
    EVP_PKEY_free(ec);
    char *bad = kl_arena_strdup(&a, json);
    char *body = strstr(bad, "MII");
    assert_non_null(body);
    memcpy(body, "!!!", 3);
    assert_int_equal(kl_gcp_cred_parse(bad, NULL, &a, &sa, &why), -1);
    assert_non_null(strstr(why, "not a PEM private key"));
    kl_arena_free(&a);
}

/* A user's application default credentials, as gcloud writes them: the
 * refresh token is exchanged at the default token endpoint (or a local
 * one), and the quota project does not become the project requests go to. */
static void reads_authorized_user(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_gcp_cred c;
    const char *why = NULL;
    const char *adc = "{\n  \"account\": \"\",\n  \"client_id\": \"764086051850-x.apps.googleusercontent.com\",\n"
                      "  \"client_secret\": \"d-FL95Q\",\n  \"quota_project_id\": \"q1\",\n"
                      "  \"refresh_token\": \"1//0g-refresh\",\n  \"type\": \"authorized_user\",\n"
                      "  \"universe_domain\": \"googleapis.com\"\n}\n";
    assert_int_equal(kl_gcp_cred_parse(adc, NULL, &a, &c, &why), 1);
    assert_int_equal(c.source, KL_GCP_AUTHORIZED_USER);
    assert_string_equal(c.email, "authorized_user:764086051850-x.apps.googleusercontent.com");
    assert_string_equal(c.token_uri, "https://oauth2.googleapis.com/token");
    assert_string_equal(c.client_secret, "d-FL95Q");
    assert_string_equal(c.refresh_token, "1//0g-refresh");
    assert_null(c.project_id);
    assert_null(c.private_key);
    const char *elsewhere = "{\"type\":\"authorized_user\",\"client_id\":\"c\",\"client_secret\":\"s\","
                            "\"refresh_token\":\"r\",\"token_uri\":\"http://oauth2.example.com/token\"}";
    assert_int_equal(kl_gcp_cred_parse(elsewhere, NULL, &a, &c, &why), -1);
    assert_non_null(strstr(why, "the refresh token sent there is a credential"));
    kl_arena_free(&a);
}

/* `gcloud auth application-default login --impersonate-service-account`'s
 * file: the user's credentials inside, the account named by the URL; the
 * file kept whole for each token. */
static void reads_impersonated(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_gcp_cred c;
    const char *why = NULL;
    const char *adc = "{\"delegates\": [], \"service_account_impersonation_url\": \"https://iamcredentials.googleapis.com/"
                      "v1/projects/-/serviceAccounts/vertex@p1.iam.gserviceaccount.com:generateAccessToken\", "
                      "\"source_credentials\": {\"account\": \"\", \"client_id\": \"764086051850-x.apps.googleusercontent.com\", "
                      "\"client_secret\": \"d-FL95Q\", \"refresh_token\": \"1//0g-refresh\", \"type\": \"authorized_user\", "
                      "\"universe_domain\": \"googleapis.com\"}, \"type\": \"impersonated_service_account\"}";
    assert_int_equal(kl_gcp_cred_parse(adc, NULL, &a, &c, &why), 1);
    assert_int_equal(c.source, KL_GCP_IMPERSONATED);
    assert_string_equal(c.email, "impersonated:vertex@p1.iam.gserviceaccount.com");
    assert_non_null(strstr(c.external, "\"refresh_token\":\"1//0g-refresh\""));
    assert_null(c.project_id);
    /* a source whose own fields are wrong says so */
    const char *bad = "{\"service_account_impersonation_url\": \"https://iamcredentials.googleapis.com/v1/projects/-/"
                      "serviceAccounts/v@p1.iam.gserviceaccount.com:generateAccessToken\", \"source_credentials\": "
                      "{\"type\": \"authorized_user\", \"client_id\": \"c\"}, \"type\": \"impersonated_service_account\"}";
    assert_int_equal(kl_gcp_cred_parse(bad, NULL, &a, &c, &why), -1);
    assert_non_null(strstr(why, "in the impersonated_service_account credentials file's source_credentials, the "
                                "authorized_user credentials file has no client_id, client_secret or refresh_token"));
    /* "delegates": null is none */
    const char *none = "{\"delegates\": null, \"service_account_impersonation_url\": \"https://iamcredentials.googleapis.com/"
                       "v1/projects/-/serviceAccounts/v@p1.iam.gserviceaccount.com:generateAccessToken\", "
                       "\"source_credentials\": {\"type\": \"authorized_user\", \"client_id\": \"c\", \"client_secret\": \"s\", "
                       "\"refresh_token\": \"r\"}, \"type\": \"impersonated_service_account\"}";
    assert_int_equal(kl_gcp_cred_parse(none, NULL, &a, &c, &why), 1);
    kl_arena_free(&a);
}

/* Workload identity federation files as `gcloud iam workload-identity-pools
 * create-cred-config` writes them: a Kubernetes token file, Azure's
 * metadata URL with a JSON answer, impersonation; and the sources keyless
 * does not read, refused with a reason. */
static void reads_external_account(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_gcp_cred c;
    const char *why = NULL;
    const char *aud = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/k8s";
    const char *gke = kl_arena_printf(&a,
        "{\n  \"universe_domain\": \"googleapis.com\",\n  \"type\": \"external_account\",\n  \"audience\": \"%s\",\n"
        "  \"subject_token_type\": \"urn:ietf:params:oauth:token-type:jwt\",\n"
        "  \"token_url\": \"https://sts.googleapis.com/v1/token\",\n"
        "  \"credential_source\": {\n    \"file\": \"/var/run/service-account/token\",\n"
        "    \"format\": {\n      \"type\": \"text\"\n    }\n  }\n}\n", aud);
    assert_int_equal(kl_gcp_cred_parse(gke, NULL, &a, &c, &why), 1);
    assert_int_equal(c.source, KL_GCP_EXTERNAL_ACCOUNT);
    assert_string_equal(c.email, "external_account:projects/123456/locations/global/workloadIdentityPools/pool/"
                                 "providers/k8s");
    assert_string_equal(c.token_uri, "https://sts.googleapis.com/v1/token");
    assert_non_null(strstr(c.external, "\"file\":\"/var/run/service-account/token\""));
    assert_null(strchr(c.external, '\n')); /* compact: the same file indented otherwise is the same credential */
    assert_null(c.project_id);
    /* Azure: a URL with headers, a JSON answer; a service account impersonated */
    const char *azure = kl_arena_printf(&a,
        "{\"type\":\"external_account\",\"audience\":\"%s\","
        "\"subject_token_type\":\"urn:ietf:params:oauth:token-type:jwt\","
        "\"service_account_impersonation_url\":\"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
        "vertex@p1.iam.gserviceaccount.com:generateAccessToken\","
        "\"service_account_impersonation\":{\"token_lifetime_seconds\":1800},"
        "\"credential_source\":{\"url\":\"http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01"
        "&resource=api://x\",\"headers\":{\"Metadata\":\"True\"},"
        "\"format\":{\"type\":\"json\",\"subject_token_field_name\":\"access_token\"}}}", aud);
    assert_int_equal(kl_gcp_cred_parse(azure, NULL, &a, &c, &why), 1);
    assert_string_equal(c.email, "external_account:vertex@p1.iam.gserviceaccount.com");
    assert_string_equal(c.token_uri, "https://sts.googleapis.com/v1/token"); /* the default */
    /* AWS: a GetCallerIdentity signed with the instance's role; another
     * universe's STS */
    const char *aws = kl_arena_printf(&a,
        "{\"type\":\"external_account\",\"audience\":\"%s\",\"universe_domain\":\"example-universe.test\","
        "\"subject_token_type\":\"urn:ietf:params:aws:token-type:aws4_request\","
        "\"service_account_impersonation_url\":\"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/\","
        "\"credential_source\":{\"environment_id\":\"aws1\","
        "\"region_url\":\"http://169.254.169.254/latest/meta-data/placement/availability-zone\","
        "\"url\":\"http://169.254.169.254/latest/meta-data/iam/security-credentials\","
        "\"regional_cred_verification_url\":\"https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15\","
        "\"imdsv2_session_token_url\":\"http://[fd00:ec2::254]/latest/api/token\"}}", aud);
    assert_int_equal(kl_gcp_cred_parse(aws, NULL, &a, &c, &why), 1);
    assert_string_equal(c.token_uri, "https://sts.example-universe.test/v1/token");
    /* null headers, as Google's libraries accept them */
    assert_int_equal(kl_gcp_cred_parse(kl_arena_printf(&a, "{\"type\":\"external_account\",\"audience\":\"%s\","
                                                           "\"subject_token_type\":\"t\",\"credential_source\":"
                                                           "{\"file\":\"/t\",\"headers\":null}}", aud),
                                       NULL, &a, &c, &why),
                     1);
    assert_int_equal(kl_gcp_cred_parse(aws, NULL, &a, &c, &why), 1);
    /* an impersonation URL that names no account: the pool provider names it */
    assert_string_equal(c.email, "external_account:projects/123456/locations/global/workloadIdentityPools/pool/"
                                 "providers/k8s");
    /* refused, each with its reason */
    const char *bad[][2] = {
        {"\"credential_source\":{\"certificate\":{\"use_default_certificate_config\":true}}", "is a certificate (X.509)"},
        {"\"credential_source\":{\"executable\":{\"command\":\"x --y\"}}", "the program's absolute path"},
        {"\"credential_source\":{\"executable\":{\"command\":\"/bin/x\",\"timeout_millis\":1000}}",
         "timeout_millis must be from 5000 to 120000"},
        {"\"credential_source\":{\"environment_id\":\"aws1\",\"region_url\":\"http://169.254.169.254/x\"}",
         "needs an https:// regional_cred_verification_url"},
        {"\"credential_source\":{\"environment_id\":\"aws2\"}", "must be \"aws1\""},
        {"\"credential_source\":{\"environment_id\":\"aws1\",\"regional_cred_verification_url\":\"https://sts.{region}."
         "amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15\",\"url\":\"http://evil.example/latest/\"}",
         "must be the instance metadata service"},
        {"\"credential_source\":{\"file\":\"/t\",\"format\":\"json\"}", "format must be an object"},
        {"\"credential_source\":{\"file\":\"/t\"},\"workforce_pool_user_project\":\"p\"", "for a workforce pool's"},
        {"\"credential_source\":{\"file\":\"/t\"},\"client_id\":\"c\"", "a client_id without a client_secret"},
        {"\"credential_source\":{\"file\":\"/t\",\"url\":\"http://127.0.0.1/t\"}", "one \"file\" or one \"url\""},
        {"\"credential_source\":{}", "one \"file\" or one \"url\""},
        {"\"credential_source\":{\"url\":\"file:///etc/passwd\"}", "must be http:// or https://"},
        {"\"credential_source\":{\"url\":\"http://127.0.0.1/t\",\"headers\":{\"A\":\"b\\r\\nX: y\"}}", "one-line"},
        {"\"credential_source\":{\"url\":\"http://127.0.0.1/t\",\"headers\":[\"A: b\"]}", "one-line"},
        {"\"credential_source\":{\"file\":\"/t\",\"headers\":{\"A\":\"b\"}}", "with a url"},
        {"\"credential_source\":{\"file\":\"/t\",\"format\":{\"type\":\"json\"}}", "no subject_token_field_name"},
        {"\"credential_source\":{\"file\":\"/t\",\"format\":{\"type\":\"xml\"}}", "\"text\" or \"json\""},
        {"\"credential_source\":{\"file\":\"/t\"},\"token_url\":\"http://sts.googleapis.com/v1/token\"",
         "must be https://"},
        {"\"credential_source\":{\"file\":\"/t\"},\"service_account_impersonation_url\":\"http://127.0.0.1:1@evil/\"",
         "must be https://"},
        {"\"credential_source\":{\"file\":\"/t\"},\"service_account_impersonation\":{\"token_lifetime_seconds\":60}",
         "from 600 to 43200"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *t = kl_arena_printf(&a, "{\"type\":\"external_account\",\"audience\":\"%s\","
                                            "\"subject_token_type\":\"urn:ietf:params:oauth:token-type:jwt\",%s}",
                                        aud, bad[i][0]);
        why = NULL;
        assert_int_equal(kl_gcp_cred_parse(t, NULL, &a, &c, &why), -1);
        if (!strstr(why, bad[i][1]))
            fail_msg("case %zu: %s", i, why);
    }
    kl_arena_free(&a);
}

/* "gcp-metadata": the metadata server's token for its default account, or
 * a named one; the server is GCE_METADATA_HOST when set. */
static void reads_metadata_server(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_gcp_cred c;
    const char *why = NULL;
    assert_int_equal(kl_gcp_cred_parse("gcp-metadata", NULL, &a, &c, &why), 1);
    assert_int_equal(c.source, KL_GCP_METADATA);
    assert_string_equal(c.email, "metadata:default");
    assert_string_equal(c.token_uri, "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/"
                                     "token?scopes=https://www.googleapis.com/auth/cloud-platform");
    assert_null(c.project_id);
    assert_int_equal(kl_gcp_cred_parse("gcp-metadata:vertex@p1.iam.gserviceaccount.com", "127.0.0.1:8080", &a, &c, &why),
                     1);
    assert_string_equal(c.email, "metadata:vertex@p1.iam.gserviceaccount.com");
    assert_string_equal(c.token_uri, "http://127.0.0.1:8080/computeMetadata/v1/instance/service-accounts/"
                                     "vertex@p1.iam.gserviceaccount.com/token?scopes=https://www.googleapis.com/auth/"
                                     "cloud-platform");
    assert_int_equal(kl_gcp_cred_parse("gcp-metadata:", NULL, &a, &c, &why), -1);
    assert_non_null(strstr(why, "must name the metadata server's account"));
    assert_int_equal(kl_gcp_cred_parse("gcp-metadata:a/../b", NULL, &a, &c, &why), -1);
    assert_int_equal(kl_gcp_cred_parse("gcp-metadata", "evil.example/x?", &a, &c, &why), -1);
    assert_non_null(strstr(why, "GCE_METADATA_HOST"));
    assert_int_equal(kl_gcp_cred_parse("gcp-metadatax", NULL, &a, &c, &why), 0); /* an ordinary key */
    kl_arena_free(&a);
}

/* A key file as Google writes it (indented, over many lines), with a byte
 * order mark and a space an editor left, read through "file:". */
static void config_reads_key_files(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    char path[] = "/tmp/kl-test-sa-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = kl_arena_concat(&a, "\xEF\xBB\xBF \n", key_file(&a, "service_account", true), "\n", NULL);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    const char *cfg = kl_arena_printf(&a, "{\"providers\": {\"vertex\": {\"baseurl\": \"https://aiplatform.googleapis.com\","
                                          " \"apikey\": \"file:%s\", \"models\": [\"m\"],"
                                          " \"compatibility\": {\"google_raw_predict\": true}}}}", path);
    kl_diags d = {0};
    kl_config *c = kl_config_parse(cfg, strlen(cfg), "t.hujson", &d);
    assert_non_null(c);
    for (size_t i = 0; i < d.n; i++) /* notes (no grants, no identity) only */
        assert_int_not_equal(d.v[i].sev, KL_SEV_ERROR);
    assert_non_null(c->providers[0].gcp_cred);
    assert_null(c->providers[0].apikey);
    kl_config_unref(c);
    kl_diags_free(&d);
    unlink(path);
    kl_arena_free(&a);
}

/* A credential a reload no longer uses is dropped, its secrets with it,
 * once it has no token still handed out (here: none was ever got). */
static void reload_drops_unused(void **state)
{
    (void)state;
    struct kl_gcp_cred c = {.source = KL_GCP_AUTHORIZED_USER, .email = "authorized_user:c1",
                            .token_uri = "http://127.0.0.1:1/token", .client_id = "c1",
                            .client_secret = "s1", .refresh_token = "r1"};
    const struct kl_gcp_cred *creds[] = {&c};
    kl_gcp_tokens *t = kl_gcp_tokens_start();
    kl_gcp_tokens_keep(t, creds, 1);
    kl_gcp_tokens_wait(t, 5000);
    assert_int_equal(kl_gcp_tokens_held(t), 1);
    kl_gcp_tokens_keep(t, NULL, 0);
    for (int i = 0; i < 200 && kl_gcp_tokens_held(t); i++)
        usleep(10000);
    assert_int_equal(kl_gcp_tokens_held(t), 0);
    kl_gcp_tokens_stop(t);
}

/* pthread_create, failing with EAGAIN (a pids limit reached) while
 * no_threads is set: the keeper's calls resolve to this one. */
static atomic_bool no_threads;

int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    if (atomic_load(&no_threads))
        return EAGAIN;
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "pthread_create");
    return real(th, attr, fn, arg);
}

/* A try that gets no thread of its own fails as a try does (its error
 * kept, tried again later), rather than ending the gateway. */
static void no_thread_is_a_failed_try(void **state)
{
    (void)state;
    struct kl_gcp_cred c = {.source = KL_GCP_AUTHORIZED_USER, .email = "authorized_user:c2",
                            .token_uri = "http://127.0.0.1:1/token", .client_id = "c2",
                            .client_secret = "s2", .refresh_token = "r2"};
    const struct kl_gcp_cred *creds[] = {&c};
    kl_gcp_tokens *t = kl_gcp_tokens_start();
    atomic_store(&no_threads, true);
    kl_gcp_tokens_keep(t, creds, 1);
    kl_gcp_tokens_wait(t, 5000);
    atomic_store(&no_threads, false);
    kl_arena a;
    kl_arena_init(&a);
    const char *problem = NULL, *project = NULL;
    assert_null(kl_gcp_token(t, &c, &a, &problem, &project));
    assert_non_null(strstr(problem, "refused or failed"));
    kl_arena_free(&a);
    kl_gcp_tokens_stop(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_key_files),
        cmocka_unit_test(reads_authorized_user),
        cmocka_unit_test(reads_impersonated),
        cmocka_unit_test(reads_metadata_server),
        cmocka_unit_test(reads_external_account),
        cmocka_unit_test(config_reads_key_files),
        cmocka_unit_test(reload_drops_unused),
        cmocka_unit_test(no_thread_is_a_failed_try),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
