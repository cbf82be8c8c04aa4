/* Configuration validation: every problem reported with its place. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "authorize/grants.h"
#include "core/config.h"
#include "guard/hooks.h"
#include "identity/identity.h"
#include "record/export.h"
#include "record/record.h"
#include "upstream/sigv4.h"

static kl_config *parse(const char *text, kl_diags *d)
{
    memset(d, 0, sizeof(*d));
    return kl_config_parse(text, strlen(text), "t.hujson", d);
}

static const struct kl_diag *find(const kl_diags *d, const char *needle)
{
    for (size_t i = 0; i < d->n; i++)
        if (strstr(d->v[i].msg, needle))
            return &d->v[i];
    return NULL;
}

/* config yields a diagnostic containing message; with error set the
 * configuration is refused, else it loads. */
static void expect_diag(const char *config, const char *message, bool error)
{
    kl_diags d;
    kl_config *c = parse(config, &d);
    if (!find(&d, message))
        fail_msg("no \"%s\" for %s", message, config);
    if (error)
        assert_null(c);
    else
        assert_non_null(c);
    kl_config_unref(c);
    kl_diags_free(&d);
}

static void full_provider(void **state)
{
    (void)state;
    setenv("KL_TEST_KEY", "sk-from-env", 1);
    kl_diags d;
    kl_config *c = parse("{\"providers\": {\"oa\": {\"baseurl\": \"https://api.openai.com/\","
                         "\"apikey\": \"${KL_TEST_KEY}\", \"models\": [\"gpt-4o\", \"gpt-5\"],"
                         "\"authorization\": \"bearer\", \"auth_mode\": \"passthrough\","
                         "\"compatibility\": {\"openai_responses\": true},"
                         "\"preference\": 5, \"add_headers\": [\"X-Org: acme\"], \"name\": \"OpenAI\"}}}",
                         &d);
    assert_non_null(c);
    assert_int_equal(d.errors, 0);
    assert_int_equal(c->nproviders, 1);
    const struct kl_provider *p = &c->providers[0];
    assert_string_equal(p->baseurl, "https://api.openai.com");
    assert_string_equal(p->apikey, "sk-from-env");
    assert_int_equal(p->nmodels, 2);
    assert_int_equal(p->auth_mode, KL_AUTHMODE_PASSTHROUGH);
    /* openai_chat is cleared when another flag is given without it */
    assert_int_equal(p->compat, KL_COMPAT_OPENAI_RESPONSES);
    assert_int_equal(p->preference, 5);
    assert_string_equal(p->add_headers[0], "X-Org: acme");
    assert_int_equal(c->listen.max_body_size, 32u << 20);
    kl_config_unref(c);
    kl_diags_free(&d);
}

static void default_compat_is_openai_chat(void **state)
{
    (void)state;
    kl_diags d;
    kl_config *c = parse("{\"providers\": {\"x\": {\"baseurl\": \"http://h\", \"models\": [\"m\"]}}}", &d);
    assert_non_null(c);
    assert_int_equal(c->providers[0].compat, KL_COMPAT_OPENAI_CHAT);
    kl_config_unref(c);
    kl_diags_free(&d);
}

static void unset_env_key_is_a_warning_with_reason(void **state)
{
    (void)state;
    unsetenv("KL_TEST_MISSING");
    kl_diags d;
    kl_config *c = parse("{\"providers\": {\"x\": {\"baseurl\": \"http://h\", \"apikey\": \"${KL_TEST_MISSING}\", \"models\": [\"m\"]}}}", &d);
    assert_non_null(c);
    assert_null(c->providers[0].apikey);
    assert_non_null(strstr(c->providers[0].key_problem, "KL_TEST_MISSING"));
    assert_non_null(find(&d, "KL_TEST_MISSING"));
    kl_config_unref(c);
    kl_diags_free(&d);
}

/* A provider's aws: credentials read as apikey is (an unset variable is a
 * 503, not an error), the region from the baseurl's host, which is kept in
 * lower case and without its default port (the Host header both clients
 * send, and SigV4 signs); mistakes are errors. */
static void aws_provider(void **state)
{
    (void)state;
    unsetenv("KL_TEST_MISSING");
    kl_diags d;
    kl_config *c = parse("{\"providers\": {\"b\": {\"baseurl\": \"https://Bedrock-Runtime.EU-West-1.amazonaws.com:443/\","
                         "\"aws\": {\"access_key_id\": \"AKIAEXAMPLE\", \"access_secret\": \"${KL_TEST_MISSING}\"},"
                         "\"models\": [\"m\"], \"compatibility\": {\"bedrock_converse\": true}},"
                         "\"h\": {\"baseurl\": \"http://127.0.0.1:80\", \"models\": [\"x\"]},"
                         "\"k\": {\"baseurl\": \"http://127.0.0.1:8080\", \"models\": [\"y\"]}}}",
                         &d);
    assert_non_null(c);
    const struct kl_provider *p = &c->providers[0];
    assert_string_equal(p->baseurl, "https://bedrock-runtime.eu-west-1.amazonaws.com");
    assert_non_null(p->aws);
    assert_string_equal(p->aws->region, "eu-west-1");
    assert_string_equal(p->aws->service, "bedrock");
    assert_non_null(strstr(p->key_problem, "KL_TEST_MISSING"));
    assert_string_equal(c->providers[1].baseurl, "http://127.0.0.1");
    assert_string_equal(c->providers[2].baseurl, "http://127.0.0.1:8080");
    kl_config_unref(c);
    kl_diags_free(&d);
    expect_diag("{\"providers\": {\"b\": {\"baseurl\": \"http://127.0.0.1:9\", \"aws\": {\"access_key_id\": \"A\","
                " \"access_secret\": \"s\"}, \"models\": [\"m\"]}}}",
                "aws needs a region", true);
    expect_diag("{\"providers\": {\"b\": {\"baseurl\": \"http://127.0.0.1:9\", \"apikey\": \"k\", \"aws\": {\"access_key_id\":"
                " \"A\", \"access_secret\": \"s\", \"region\": \"us-east-1\"}, \"models\": [\"m\"]}}}",
                "apikey and aws both set", true);
    expect_diag("{\"providers\": {\"b\": {\"baseurl\": \"http://127.0.0.1:9\", \"aws\": {\"access_key_id\": \"A\","
                " \"region\": \"us-east-1\"}, \"models\": [\"m\"]}}}",
                "aws needs access_key_id and access_secret together", true);
    expect_diag("{\"providers\": {\"b\": {\"baseurl\": \"http://127.0.0.1:9\", \"auth_mode\": \"passthrough\", \"aws\":"
                " {\"access_key_id\": \"A\", \"access_secret\": \"s\", \"region\": \"us-east-1\"}, \"models\": [\"m\"]}}}",
                "auth_mode must be override", true);
}

static void file_key(void **state)
{
    (void)state;
    char path[] = "/tmp/kl-key-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("sk-in-file\n", f);
    fclose(f);
    char text[256];
    snprintf(text, sizeof(text), "{\"providers\": {\"x\": {\"baseurl\": \"http://h\", \"apikey\": \"file:%s\", \"models\": [\"m\"]}}}", path);
    kl_diags d;
    kl_config *c = parse(text, &d);
    assert_non_null(c);
    assert_string_equal(c->providers[0].apikey, "sk-in-file");
    kl_config_unref(c);
    kl_diags_free(&d);
    /* a long key whole, not cut at 8 KiB */
    f = fopen(path, "w");
    for (int i = 0; i < 9000; i++)
        fputc('k', f);
    fputc('\n', f);
    fclose(f);
    c = parse(text, &d);
    assert_non_null(c);
    assert_int_equal(strlen(c->providers[0].apikey), 9000);
    kl_config_unref(c);
    kl_diags_free(&d);
    unlink(path);
    /* a directory is no empty key, and a FIFO nobody writes does not hold the reader */
    char dir[] = "/tmp/kl-keydir-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char fifo[64];
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    const char *paths[] = {dir, fifo};
    for (int i = 0; i < 2; i++) {
        snprintf(text, sizeof(text), "{\"providers\": {\"x\": {\"baseurl\": \"http://h\", \"apikey\": \"file:%s\", "
                 "\"models\": [\"m\"]}}}", paths[i]);
        c = parse(text, &d);
        assert_non_null(c);
        assert_null(c->providers[0].apikey);
        assert_non_null(strstr(c->providers[0].key_problem, "not a regular file"));
        kl_config_unref(c);
        kl_diags_free(&d);
    }
    unlink(fifo);
    rmdir(dir);
}

static void errors_have_line_and_column(void **state)
{
    (void)state;
    kl_diags d;
    kl_config *c = parse("{\n\"providers\": {\"x\": {\n  \"baseurl\": \"ftp://h\",\n  \"authorization\": \"basic\",\n"
                         "  \"preference\": 1.5,\n  \"wat\": 1}},\n\"listen\": {\"workers\": -1, \"timeouts\": {\"idle\": \"forever\"}}\n}", &d);
    assert_null(c);
    const struct kl_diag *g = find(&d, "baseurl must start with http");
    assert_non_null(g);
    assert_int_equal(g->line, 3);
    assert_int_equal(g->col, 14);
    g = find(&d, "authorization must be");
    assert_non_null(g);
    assert_int_equal(g->line, 4);
    assert_non_null(find(&d, "preference must be a whole number"));
    g = find(&d, "unknown key \"wat\"");
    assert_non_null(g);
    assert_int_equal(g->sev, KL_SEV_WARNING);
    assert_int_equal(g->line, 6);
    assert_non_null(find(&d, "workers must be"));
    assert_non_null(find(&d, "idle must be a duration"));
    assert_true(d.errors >= 5);
    kl_diags_free(&d);
    /* a number past a long's range is an error, not a cast (the fuzzer's
     * find: UBSan caught 2e96 converted to long) */
    c = parse("{\"listen\": {\"workers\": 2e96}}", &d);
    assert_null(c);
    assert_non_null(find(&d, "workers must be a whole number"));
    kl_diags_free(&d);
    /* a section twice (the fuzzer's find: the second was read into the
     * first's place and past it) is refused, not read */
    assert_null(parse("{\"providers\": {\"a\": {\"baseurl\": \"http://a\"}},\n"
                      " \"providers\": {\"b\": {\"baseurl\": \"http://b\"}, \"c\": {\"baseurl\": \"http://c\"}}}", &d));
    g = find(&d, "duplicate key \"providers\"");
    assert_non_null(g);
    assert_int_equal(g->line, 2);
    kl_diags_free(&d);
    /* no host (the fuzzer's find: it crashed the check) */
    for (size_t i = 0; i < 3; i++) {
        const char *urls[] = {"http://", "https:///v1", "http://?x"};
        char text[160];
        snprintf(text, sizeof(text), "{\"providers\": {\"x\": {\"baseurl\": \"%s\", \"models\": [\"m\"]}}}", urls[i]);
        assert_null(parse(text, &d));
        assert_non_null(find(&d, "baseurl has no host"));
        kl_diags_free(&d);
    }
}

static void later_sections_are_announced(void **state)
{
    (void)state;
    kl_diags d;
    kl_config *c = parse("{\"connectors\": {}, \"exporters\": {\"otel\": {}}, \"temp_grants\": [], \"zzz\": 1}", &d);
    assert_non_null(c);
    assert_non_null(find(&d, "\"connectors\" is read but not enforced yet"));
    assert_non_null(find(&d, "exporter \"otel\" is not supported"));
    /* absent grants deny everything, and say so */
    assert_non_null(find(&d, "no grants: every request will be refused"));
    assert_non_null(find(&d, "\"temp_grants\" is deprecated"));
    assert_non_null(find(&d, "unknown key \"zzz\""));
    assert_int_equal(d.errors, 0);
    kl_config_unref(c);
    kl_diags_free(&d);
}

static void duplicate_keys_are_errors(void **state)
{
    (void)state;
    kl_diags d;
    kl_config *c = parse("{\"providers\": {\"x\": {\"baseurl\": \"http://a\", \"baseurl\": \"http://b\", \"models\": [\"m\"]}}}", &d);
    assert_null(c);
    assert_non_null(find(&d, "duplicate key \"baseurl\""));
    /* the document was not read: nothing is said of sections it has */
    assert_null(find(&d, "no providers are configured"));
    assert_null(find(&d, "no grants"));
    assert_int_equal(d.warnings, 0);
    kl_diags_free(&d);
    assert_null(parse("[]", &d));
    assert_non_null(find(&d, "must be a JSON object"));
    assert_int_equal(d.n, 1);
    kl_diags_free(&d);
}


/* Aperture configurations that had been accepted while meaning something
 * else here: each is now an error (or, for a misspelt capability key, a
 * warning), never silently a weaker policy. */
static void mistakes_that_weakened_policy(void **state)
{
    (void)state;
    static const struct {
        const char *config, *message;
        bool error;
    } cases[] = {
        /* a duplicate anywhere: readers disagree on which one counts */
        {"{\"quotas\": {\"b\": {\"capacity\": \"$100\"}, \"b\": {\"capacity\": \"$0.01\"}}}", "duplicate key \"b\"", true},
        {"{\"grants\": [{\"src\": [\"*\"], \"app\": {\"tailscale.com/cap/aperture\": [{\"models\": \"a/**\", "
         "\"models\": \"a/b\"}]}}]}",
         "duplicate key \"models\"", true},
        /* quotas as a string metered nothing */
        {"{\"quotas\": {\"tiny\": {\"capacity\": \"$1\"}}, \"grants\": [{\"src\": [\"*\"], \"app\": "
         "{\"tailscale.com/cap/aperture\": [{\"models\": \"**\", \"quotas\": \"tiny\"}]}}]}",
         "\"quotas\" must be an array", true},
        /* a misspelt key meant no quota */
        {"{\"grants\": [{\"src\": [\"*\"], \"app\": {\"tailscale.com/cap/aperture\": [{\"models\": \"**\", "
         "\"quota\": [{\"bucket\": \"x\"}]}]}}]}",
         "unknown key \"quota\"", false},
        /* a tailnet grant's conditions, which keyless cannot check: the
         * grant had held for every device of its src */
        {"{\"grants\": [{\"src\": [\"*\"], \"srcPosture\": [\"posture:latestMac\"], \"app\": "
         "{\"tailscale.com/cap/aperture\": [{\"role\": \"admin\"}]}}]}",
         "grant \"srcPosture\" narrows who the grant applies to", true},
        {"{\"grants\": [{\"src\": [\"*\"], \"via\": [\"tag:exit\"], \"app\": "
         "{\"tailscale.com/cap/aperture\": [{\"role\": \"admin\"}]}}]}",
         "grant \"via\" narrows who the grant applies to", true},
        {"{\"grants\": [{\"src\": [\"*\"], \"ip\": [\"*\"], \"app\": {\"tailscale.com/cap/aperture\": []}}]}",
         "unknown key \"ip\" in a grant", false},
        /* Go's reader (Aperture's) takes "Quotas" for quotas */
        {"{\"quotas\": {\"q\": {\"capacity\": \"$1\"}}, \"grants\": [{\"src\": [\"*\"], \"app\": "
         "{\"tailscale.com/cap/aperture\": [{\"models\": \"**\", \"Quotas\": [{\"bucket\": \"q\"}]}]}}]}",
         "a capability names \"Quotas\", which Aperture reads as \"quotas\"", true},
        /* members keyless does not read in a quota reference or a send_hooks entry */
        {"{\"quotas\": {\"q\": {\"capacity\": \"$1\"}, \"t\": {\"capacity\": \"$1\"}}, \"grants\": [{\"src\": "
         "[\"*\"], \"app\": {\"tailscale.com/cap/aperture\": [{\"quotas\": [{\"bucket\": \"q\", \"overdraft\": "
         "[\"t\"]}]}]}}]}",
         "unknown key \"overdraft\" in a quota reference", false},
        {"{\"hooks\": {\"h\": {\"url\": \"http://127.0.0.1:9/\"}}, \"grants\": [{\"src\": [\"*\"], \"app\": "
         "{\"tailscale.com/cap/aperture\": [{\"send_hooks\": [{\"name\": \"h\", \"events\": [\"pre_request\"], "
         "\"fail_policy\": \"fail_closed\"}]}]}}]}",
         "unknown key \"fail_policy\" in a send_hooks entry", false},
        /* "purge": "captures" read as no list deleted whole rows */
        {"{\"database\": {\"retention\": {\"duration\": \"1s\", \"purge\": \"captures\"}}}",
         "database.retention.purge has the wrong type", true},
        {"{\"database\": {\"retention\": {\"duration\": 0}}}", "database.retention.duration has the wrong type", true},
        {"{\"database\": \"x\"}", "database must be an object", true},
        /* out of range before the cast: 1e300 had meant no timeout, 1e19 a negative cap */
        {"{\"listen\": {\"timeouts\": {\"header\": 1e300}}}", "is too long", true},
        /* 0 was no time limit: a hung tailscaled held its callers for good */
        {"{\"identity\": {\"tailscale\": {\"timeout\": \"0s\"}}}", "identity.tailscale.timeout must be at least",
         true},
        {"{\"limits\": {\"default_max_output_tokens\": 1e19}}", "limits.default_max_output_tokens must be a whole number",
         true},
        {"{\"grants\": [{\"src\": [\"*\"], \"app\": {\"tailscale.com/cap/aperture\": [{\"rate_limit\": "
         "{\"requests_per_minute\": 1e19}}]}}]}",
         "rate_limit values must be whole numbers", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_diag(cases[i].config, cases[i].message, cases[i].error);
}


/* ${NAME} is replaced in every string of the document, not only in
 * provider fields (a store path had created a file named "${...}", a grant
 * src matched nobody); an unset one is an error wherever it is. */
static void macros_everywhere(void **state)
{
    (void)state;
    setenv("KL_TEST_WHO", "alice@example.com", 1);
    setenv("KL_TEST_DB", "/tmp/kl-test-macro.db", 1);
    unsetenv("KL_TEST_UNSET");
    kl_diags d;
    kl_config *c = parse("{\"store\": {\"path\": \"${KL_TEST_DB}\"}, \"grants\": [{\"src\": [\"${KL_TEST_WHO}\"], "
                         "\"app\": {\"tailscale.com/cap/aperture\": [{\"role\": \"user\"}]}}]}",
                         &d);
    assert_non_null(c);
    assert_string_equal(c->store->target, "/tmp/kl-test-macro.db");
    assert_string_equal(c->grants->v[0].src[0], "alice@example.com");
    kl_config_unref(c);
    kl_diags_free(&d);
    c = parse("{\"quotas\": {\"q\": {\"capacity\": \"${KL_TEST_UNSET}\"}}}", &d);
    assert_null(c);
    assert_non_null(find(&d, "unsubstituted macro ${KL_TEST_UNSET}"));
    kl_diags_free(&d);
}


/* Provider settings and selectors that would have done nothing, or
 * something else, without a word. */
static void provider_and_selector_mistakes(void **state)
{
    (void)state;
    static const struct {
        const char *config, *message;
        bool error;
    } cases[] = {
        {"{\"providers\": {\"p\": {\"baseurl\": \"http://a\", \"models\": [\"m\"], \"cost_basis\": \"OpenAI\"}}}",
         "priced by model id", false},
        {"{\"providers\": {\"p\": {\"baseurl\": \"http://a\", \"models\": [\"m\"], \"add_headers\": "
         "[\"Authorization: Bearer other\"]}}}",
         "add_headers sets a credential header, which only auth_mode \"none\" leaves to it", true},
        {"{\"providers\": {\"p\": {\"baseurl\": \"http://a\", \"models\": [\"m\"], \"auth_mode\": \"passthrough\", "
         "\"add_headers\": [\"x-api-key: k\"]}}}",
         "add_headers sets a credential header, which only auth_mode \"none\" leaves to it", true},
        {"{\"providers\": {\"p\": {\"baseurl\": \"http://a\", \"models\": [\"m\"], \"add_headers\": "
         "[\"Host: other\"]}}}",
         "add_headers cannot set Host", true},
        {"{\"providers\": {\"p\": {\"baseurl\": \"http://a\", \"models\": [\"m\"], \"add_headers\": [\"X-Ok: v\", \"X Bad: v\"]}}}",
         "add_headers entry 2 must look like \"Name: value\"", true},
        {"{\"providers\": {\"p\": {\"baseurl\": \"http://a\", \"models\": [\"m\"], \"apikey\": \"\"}}}",
         "apikey is empty", false},
        {"{\"grants\": [{\"src\": [\"100.64.0.0/10\"], \"app\": {\"tailscale.com/cap/aperture\": [{\"role\": \"user\"}]}}]}",
         "looks like an address", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_diag(cases[i].config, cases[i].message, cases[i].error);
    /* a malformed entry may be a secret, whole or in part: it is never repeated */
    kl_diags d;
    kl_config *c = parse("{\"providers\": {\"p\": {\"baseurl\": \"http://a\", \"models\": [\"m\"], \"add_headers\": "
                         "[\"Helicone-Auth Bearer sk-helicone-SECRET\", \"sk-SECRET2\"]}}}", &d);
    assert_null(c);
    assert_non_null(find(&d, "add_headers entry 1 must look like"));
    assert_non_null(find(&d, "add_headers entry 2 must look like"));
    assert_null(find(&d, "SECRET"));
    kl_diags_free(&d);
}

static void durations_and_sizes(void **state)
{
    (void)state;
    uint64_t ms;
    assert_int_equal(kl_parse_duration_ms("30s", &ms), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(kl_parse_duration_ms("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(kl_parse_duration_ms("2m", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(kl_parse_duration_ms("1.5h", &ms), 0);
    assert_int_equal(ms, 5400000);
    assert_int_equal(kl_parse_duration_ms("5", &ms), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(kl_parse_duration_ms("5 parsecs", &ms), -1);
    assert_int_equal(kl_parse_duration_ms("-1s", &ms), -1);
    /* strtod reads these; a duration is plain decimal (NaN had reached a cast) */
    static const char *const odd[] = {"nan", "NaN", "nanh", "inf", "infinity", "0x10h", "1e3s", "+1h", " 1s", ".s", ""};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        assert_int_equal(kl_parse_duration_ms(odd[i], &ms), -1);
        assert_int_equal(kl_parse_size(odd[i], &(size_t){0}), -1);
    }
    assert_int_equal(kl_parse_duration_ms(".5s", &ms), 0);
    assert_int_equal(ms, 500);
    /* under a millisecond is one: 0 is "none" to every timer that takes it */
    assert_int_equal(kl_parse_duration_ms("500us", &ms), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(kl_parse_duration_ms("0.0001", &ms), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(kl_parse_duration_ms("0s", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(kl_parse_duration_ms("0", &ms), 0);
    assert_int_equal(ms, 0);
    /* Go's compound durations, as Aperture's configurations may write them */
    assert_int_equal(kl_parse_duration_ms("1h30m", &ms), 0);
    assert_int_equal(ms, 5400000);
    assert_int_equal(kl_parse_duration_ms("1m30s", &ms), 0);
    assert_int_equal(ms, 90000);
    assert_int_equal(kl_parse_duration_ms("2h45m30.5s", &ms), 0);
    assert_int_equal(ms, 9930500);
    assert_int_equal(kl_parse_duration_ms("1500000us", &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(kl_parse_duration_ms("1h30", &ms), -1);
    assert_int_equal(kl_parse_duration_ms("1h 30m", &ms), -1);
    assert_int_equal(kl_parse_duration_ms("1x30m", &ms), -1);
    size_t sz;
    assert_int_equal(kl_parse_size("32MiB", &sz), 0);
    assert_int_equal(sz, 32u << 20);
    assert_int_equal(kl_parse_size("1KB", &sz), 0);
    assert_int_equal(sz, 1000);
    assert_int_equal(kl_parse_size("1024", &sz), 0);
    assert_int_equal(sz, 1024);
    assert_int_equal(kl_parse_size("lots", &sz), -1);
}

/* failover: defaults, a replaced status list, and the mistakes. */
static void failover_settings(void **state)
{
    (void)state;
    kl_diags d;
    kl_config *c = parse("{}", &d);
    assert_non_null(c);
    assert_int_equal(c->failover.max_attempts, 3);
    assert_int_equal(c->failover.cooldown_after, 3);
    assert_int_equal(c->failover.cooldown_ms, 30000);
    assert_true(c->failover.on_status[503 - 400] && c->failover.on_status[429 - 400] &&
                c->failover.on_status[529 - 400]);
    assert_false(c->failover.on_status[400 - 400] || c->failover.on_status[501 - 400]);
    kl_config_unref(c);
    kl_diags_free(&d);

    c = parse("{\"failover\": {\"max_attempts\": 1, \"statuses\": [500, 599], \"cooldown\": \"0\", "
              "\"cooldown_after\": 5}}", &d);
    assert_non_null(c);
    assert_int_equal(c->failover.max_attempts, 1);
    assert_int_equal(c->failover.cooldown_ms, 0);
    assert_int_equal(c->failover.cooldown_after, 5);
    assert_true(c->failover.on_status[500 - 400] && c->failover.on_status[599 - 400]);
    assert_false(c->failover.on_status[503 - 400] || c->failover.on_status[429 - 400]);
    kl_config_unref(c);
    kl_diags_free(&d);

    expect_diag("{\"failover\": {\"max_attempts\": 0}}", "failover.max_attempts must be a whole number from 1 to 16",
                true);
    expect_diag("{\"failover\": {\"statuses\": [200]}}", "each of failover.statuses must be a whole number from 400",
                true);
    expect_diag("{\"failover\": {\"statuses\": 503}}", "failover.statuses must be an array", true);
    expect_diag("{\"failover\": true}", "failover must be an object", true);
    expect_diag("{\"failover\": {\"cooldown\": \"soon\"}}", "failover.cooldown must be a duration", true);
    expect_diag("{\"failover\": {\"cooldown_after\": 0}}", "failover.cooldown_after must be a whole number from 1",
                true);
    expect_diag("{\"failover\": {\"retries\": 2}}", "unknown key \"retries\" in failover", false);
}

static void s3_exporter(void **state)
{
    (void)state;
    setenv("KL_TEST_S3_SECRET", "s3cr3t", 1);
    kl_diags d;
    kl_config *c = parse("{\"exporters\": {\"s3\": {\"endpoint\": \"https://storage.example.com/\", "
                         "\"bucket_name\": \"audit\", \"region\": \"us-east-1\", \"access_key_id\": \"AKID\", "
                         "\"access_secret\": \"${KL_TEST_S3_SECRET}\", \"every\": \"5m\", \"max_records\": 50}}, "
                         "\"database\": {\"retention\": {\"duration\": \"30d\", \"require_export\": true}}}", &d);
    assert_non_null(c);
    const struct kl_export_cfg *e = c->store->exporter;
    assert_non_null(e);
    assert_string_equal(e->endpoint, "https://storage.example.com"); /* trailing slash dropped */
    assert_string_equal(e->access_secret, "s3cr3t");
    assert_string_equal(e->prefix, "");
    assert_int_equal(e->every_ms, 300000);
    assert_int_equal(e->max_records, 50);
    assert_true(c->store->require_export);
    assert_null(find(&d, "no exporter is configured"));
    kl_config_unref(c);
    kl_diags_free(&d);

    /* Aperture: an empty bucket_name leaves it off; require_export then
     * keeps everything, and says so */
    c = parse("{\"exporters\": {\"s3\": {\"bucket_name\": \"\"}}, "
              "\"database\": {\"retention\": {\"duration\": \"30d\", \"require_export\": true}}}", &d);
    assert_non_null(c);
    assert_null(c->store->exporter);
    assert_non_null(find(&d, "no exporter is configured: retention removes nothing"));
    kl_config_unref(c);
    kl_diags_free(&d);

    /* a secret that cannot be read is an error, not a silent archive gap */
    unsetenv("KL_TEST_S3_SECRET");
    expect_diag("{\"exporters\": {\"s3\": {\"bucket_name\": \"audit\", \"region\": \"us-east-1\", "
                "\"access_key_id\": \"AKID\", \"access_secret\": \"${KL_TEST_S3_SECRET}\"}}}",
                "environment variable KL_TEST_S3_SECRET is not set", true);
    expect_diag("{\"exporters\": {\"s3\": {\"bucket_name\": \"a b\", \"region\": \"us-east-1\", "
                "\"access_key_id\": \"AKID\", \"access_secret\": \"x\"}}}", "bucket_name may hold", true);
    expect_diag("{\"exporters\": {\"s3\": {\"bucket_name\": \"a\", \"region\": \"us-east-1\", "
                "\"access_key_id\": \"AKID\", \"access_secret\": \"x\", \"max_records\": 0}}}",
                "max_records must be", true);
    /* segments libcurl would resolve, so the key logged is not the key written */
    const char *bad_prefixes[] = {"a/../b/", "./a", "a//b", "a/..", "/a"};
    for (size_t i = 0; i < sizeof(bad_prefixes) / sizeof(bad_prefixes[0]); i++) {
        char cfg[512];
        snprintf(cfg, sizeof(cfg), "{\"exporters\": {\"s3\": {\"bucket_name\": \"a\", \"region\": \"r\", "
                 "\"access_key_id\": \"K\", \"access_secret\": \"x\", \"prefix\": \"%s\"}}}", bad_prefixes[i]);
        expect_diag(cfg, "prefix may hold", true);
    }
    expect_diag("{\"exporters\": {\"s3\": {\"bucket_name\": \"a\", \"region\": \"r\", \"access_key_id\": \"K\", "
                "\"access_secret\": \"x\", \"prefix\": \"gw.v1/a..b/\"}}}", "no grants", false);
    expect_diag("{\"exporters\": {\"s3\": {\"bucket_name\": \"a\", \"region\": \"r\", \"access_key_id\": \"K\", "
                "\"access_secret\": \"x\", \"endpoint\": \"https://u:p@minio:9000\"}}}", "must not hold credentials", true);
    char longp[400];
    memset(longp, 'p', 300);
    longp[300] = '\0';
    char cfgp[600];
    snprintf(cfgp, sizeof(cfgp), "{\"exporters\": {\"s3\": {\"bucket_name\": \"a\", \"region\": \"r\", "
             "\"access_key_id\": \"K\", \"access_secret\": \"x\", \"prefix\": \"%s\"}}}", longp);
    expect_diag(cfgp, "longer than 256 bytes", true);
    /* retention without require_export: what it removes first never reaches the bucket */
    expect_diag("{\"exporters\": {\"s3\": {\"bucket_name\": \"a\", \"region\": \"r\", \"access_key_id\": \"K\", "
                "\"access_secret\": \"x\"}}, \"database\": {\"retention\": {\"duration\": \"7d\"}}}",
                "without database.retention.require_export", false);
    /* a rotated secret is a reload, anything else about the bucket a restart */
    struct kl_export_cfg a = {.bucket = "b", .region = "r", .access_key_id = "K1", .access_secret = "s1", .prefix = "",
                              .every_ms = 1000, .max_records = 5};
    struct kl_export_cfg b = a;
    b.access_key_id = "K2";
    b.access_secret = "s2";
    assert_false(kl_export_cfg_differs(&a, &b));
    b.bucket = "other";
    assert_true(kl_export_cfg_differs(&a, &b));
    assert_true(kl_export_cfg_differs(&a, NULL));
}

/* docs/config.md: a duration may be a number of seconds and a size a number
 * of bytes, in every section: store.capture_max had been warned about as a
 * mistyped key and left at 64 KiB, the others refused. */
static void numbers_for_durations_and_sizes(void **state)
{
    (void)state;
    kl_diags d;
    kl_config *c = parse("{\"store\": {\"capture_max\": 1048576, \"queue_bytes\": 2097152}, "
                         "\"identity\": {\"tailscale\": {\"timeout\": 2, \"cache_ttl\": 90, \"negative_cache_ttl\": 0.5}}, "
                         "\"hooks\": {\"h\": {\"url\": \"http://127.0.0.1:1/\", \"timeout\": 7}}, "
                         "\"exporters\": {\"s3\": {\"bucket_name\": \"b\", \"region\": \"r\", "
                         "\"access_key_id\": \"a\", \"access_secret\": \"s\", \"every\": 60}}}", &d);
    assert_non_null(c);
    assert_int_equal(d.errors, 0);
    assert_null(find(&d, "mistyped"));
    assert_int_equal(c->store->capture_max, 1048576);
    assert_int_equal(c->store->queue_bytes, 2097152);
    assert_int_equal(c->identity->ts_timeout_ms, 2000);
    assert_int_equal(c->identity->ts_ttl_ms, 90000);
    assert_int_equal(c->identity->ts_negative_ttl_ms, 500);
    assert_int_equal(c->hooks->v[0].timeout_ms, 7000);
    assert_int_equal(c->store->exporter->every_ms, 60000);
    kl_config_unref(c);
    kl_diags_free(&d);
    expect_diag("{\"store\": {\"capture_max\": -1}}", "store.capture_max must be a size", true);
    expect_diag("{\"hooks\": {\"h\": {\"url\": \"http://127.0.0.1:1/\", \"timeout\": -1}}}", "timeout must be a duration", true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_provider),
        cmocka_unit_test(default_compat_is_openai_chat),
        cmocka_unit_test(unset_env_key_is_a_warning_with_reason),
        cmocka_unit_test(file_key),
        cmocka_unit_test(errors_have_line_and_column),
        cmocka_unit_test(later_sections_are_announced),
        cmocka_unit_test(duplicate_keys_are_errors),
        cmocka_unit_test(mistakes_that_weakened_policy),
        cmocka_unit_test(macros_everywhere),
        cmocka_unit_test(provider_and_selector_mistakes),
        cmocka_unit_test(durations_and_sizes),
        cmocka_unit_test(failover_settings),
        cmocka_unit_test(s3_exporter),
        cmocka_unit_test(numbers_for_durations_and_sizes),
        cmocka_unit_test(aws_provider),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
