/* Grants: globs over provider/model, specificity, capability objects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "authorize/grants.h"
#include "core/glob.h"
#include "identity/identity.h"

static void globs(void **state)
{
    (void)state;
    assert_true(kl_glob_match("**", "openai/gpt-4o"));
    assert_true(kl_glob_match("anthropic/**", "anthropic/claude-sonnet-4-5"));
    assert_false(kl_glob_match("anthropic/**", "openai/gpt-4o"));
    assert_true(kl_glob_match("openai/gpt-5*", "openai/gpt-5-mini"));
    assert_true(kl_glob_match("openai/gpt-5*", "openai/gpt-5"));
    assert_false(kl_glob_match("openai/gpt-5*", "openai/gpt-4o"));
    assert_true(kl_glob_match("*/gpt-4o", "azure/gpt-4o"));
    /* one segment only */
    assert_false(kl_glob_match("self/*", "self/meta-llama/Llama-3"));
    assert_true(kl_glob_match("self/**", "self/meta-llama/Llama-3"));
    assert_true(kl_glob_match("self/*/Llama-*", "self/meta-llama/Llama-3"));
    assert_false(kl_glob_match("openai/gpt-4o", "openai/gpt-4o-mini"));
    assert_true(kl_glob_match("openai/gpt-4o", "openai/gpt-4o"));
    assert_false(kl_glob_match("gpt-4o", "openai/gpt-4o"));
    assert_true(kl_glob_match("**/gpt-4o", "openai/gpt-4o"));
    assert_false(kl_glob_match("*", "openai/gpt-4o"));
    assert_true(kl_glob_match("a/**/", "a/b/c"));
    assert_false(kl_glob_match("**/b", "b"));
    assert_true(kl_glob_match("", ""));
    assert_false(kl_glob_match("", "a"));
    assert_true(kl_glob_match("*", ""));
    /* a pattern longer than the matcher's small buffers */
    char longp[200];
    memset(longp, 'x', 150);
    strcpy(longp + 150, "*/**y");
    char longn[300];
    memset(longn, 'x', 160);
    strcpy(longn + 160, "/a/b/y");
    assert_true(kl_glob_match(longp, longn));
    longn[165] = 'z'; /* no final y */
    assert_false(kl_glob_match(longp, longn));
}

/* A name from a caller (a tool name in a request) may be megabytes, and
 * wildcards must not make matching it blow up (a backtracking matcher
 * took seconds on 160 KB with two stars, forever with four). */
static void globs_on_huge_names(void **state)
{
    (void)state;
    size_t n = 4 << 20;
    char *name = malloc(n + 2);
    assert_non_null(name);
    for (size_t i = 0; i < n; i++)
        name[i] = "Bash"[i % 4];
    name[n] = '/';
    name[n + 1] = '\0';
    assert_false(kl_glob_match("*Bash*", name));
    assert_false(kl_glob_match("*a*a*a*a*a*c", name));
    assert_true(kl_glob_match("**/", name));
    name[n] = 'c';
    assert_true(kl_glob_match("*a*a*a*a*a*c", name));
    free(name);
}

static void specificity(void **state)
{
    (void)state;
    assert_true(kl_glob_specificity("anthropic/claude-opus-*") > kl_glob_specificity("anthropic/**"));
    assert_true(kl_glob_specificity("anthropic/*") > kl_glob_specificity("anthropic/**"));
    assert_true(kl_glob_specificity("openai/gpt-4o") > kl_glob_specificity("openai/gpt-4*"));
    assert_true(kl_glob_specificity("anthropic/**") > kl_glob_specificity("**"));
}

static void capability_objects_and_best_match(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    cJSON *objs = cJSON_Parse("[{\"role\":\"admin\"},{\"models\":\"anthropic/**\",\"quotas\":[{\"bucket\":\"wide\"}]},"
                              "{\"models\":[\"anthropic/claude-opus-*\"],\"quotas\":[{\"bucket\":\"narrow\"}]},"
                              "{\"role\":\"root\"},{\"models\":7}]");
    struct kl_cap caps[5];
    const char *why;
    assert_int_equal(kl_cap_read(cJSON_GetArrayItem(objs, 0), &a, &caps[0], &why), 0);
    assert_int_equal(caps[0].role, KL_ROLE_ADMIN);
    assert_null(caps[0].models);
    assert_int_equal(kl_cap_read(cJSON_GetArrayItem(objs, 1), &a, &caps[1], &why), 0);
    assert_int_equal(kl_cap_read(cJSON_GetArrayItem(objs, 2), &a, &caps[2], &why), 0);
    assert_int_equal(caps[2].nmodels, 1);
    assert_int_equal(kl_cap_read(cJSON_GetArrayItem(objs, 3), &a, &caps[3], &why), -1);
    assert_int_equal(kl_cap_read(cJSON_GetArrayItem(objs, 4), &a, &caps[4], &why), -1);

    struct kl_cap_ref refs[3] = {{&caps[0], 0}, {&caps[1], 0}, {&caps[2], 1}};
    struct kl_grant_set s = {.role = KL_ROLE_ADMIN, .caps = refs, .ncaps = 3};
    const struct kl_cap_ref *best = kl_grant_set_best(&s, "anthropic/claude-opus-4-5");
    assert_ptr_equal(best->cap, &caps[2]); /* the most specific pattern wins */
    best = kl_grant_set_best(&s, "anthropic/claude-haiku-4-5");
    assert_ptr_equal(best->cap, &caps[1]);
    assert_false(kl_grant_set_allows(&s, "openai/gpt-4o")); /* admin does not imply models */
    cJSON_Delete(objs);
    kl_arena_free(&a);
}

static void config_grants_report_problems(void **state)
{
    (void)state;
    kl_diags d = {0};
    const char *t = "{\"grants\": [{\"src\": [\"tagged-devices\", \"alice@example.com\"], \"dst\": [\"x\"],"
                    " \"app\": {\"tailscale.com/cap/aperture\": [{\"role\": \"owner\"}]}}, {\"src\": []}]}";
    kl_config *c = kl_config_parse(t, strlen(t), "t", &d);
    assert_null(c);
    int found = 0;
    for (size_t i = 0; i < d.n; i++) {
        if (strstr(d.v[i].msg, "tagged-devices")) found |= 1;
        if (strstr(d.v[i].msg, "\"dst\" belongs to tailnet policy")) found |= 2;
        if (strstr(d.v[i].msg, "\"role\" must be")) found |= 4;
        if (strstr(d.v[i].msg, "non-empty array of selectors")) found |= 8;
    }
    assert_int_equal(found, 15);
    kl_diags_free(&d);
}

/* A pattern without a '/' (and without a "**", which crosses it) is over
 * provider/model and matches nothing: warned, the others are not
 * ("openai**" matches openai/gpt-4o). */
static void config_grants_warn_unmatchable_patterns(void **state)
{
    (void)state;
    kl_diags d = {0};
    const char *t = "{\"grants\": [{\"src\": [\"*\"], \"app\": {\"tailscale.com/cap/aperture\": [{\"role\": "
                    "\"user\"}, {\"models\": [\"gpt-4o\", \"**\", \"**-mini\", \"anthropic/**\", \"*/o3\", \"openai**\"]},"
                    " {\"models\": \"claude-*\"}]}}]}";
    kl_config *c = kl_config_parse(t, strlen(t), "t", &d);
    assert_non_null(c);
    int warned = 0, about_gpt = 0, about_claude = 0;
    for (size_t i = 0; i < d.n; i++) {
        if (!strstr(d.v[i].msg, "matches no model"))
            continue;
        warned++;
        about_gpt += strstr(d.v[i].msg, "\"gpt-4o\"") != NULL;
        about_claude += strstr(d.v[i].msg, "\"*/claude-*\"") != NULL;
    }
    assert_int_equal(warned, 2);
    assert_true(kl_glob_match("openai**", "openai/gpt-4o"));
    assert_int_equal(about_gpt, 1);
    assert_int_equal(about_claude, 1);
    kl_config_unref(c);
    kl_diags_free(&d);
}

static void selectors(void **state)
{
    (void)state;
    const char *groups[] = {"group:eng"};
    const char *tags[] = {"tag:ci", "tag:prod"};
    struct kl_identity user = {.login = "Alice@Example.com", .groups = groups, .ngroups = 1, .source = "tailscale"};
    struct kl_identity tagged = {.login = "tag:ci,tag:prod", .tags = tags, .ntags = 2, .tagged = true, .source = "tailscale"};
    struct kl_identity loop = {.login = "(loopback)", .source = "loopback"};
    struct kl_identity served = {.login = "erin@example.com", .source = "serve"};
    assert_true(kl_selector_matches(&user, "*"));
    assert_true(kl_selector_matches(&user, "alice@example.com"));
    /* a workload login (token claims, SPIFFE id) matches only exactly */
    struct kl_identity wl = {.login = "repo:acme/app@refs/heads/main", .source = "oidc"};
    assert_true(kl_selector_matches(&wl, "repo:acme/app@refs/heads/main"));
    assert_false(kl_selector_matches(&wl, "repo:acme/app@refs/heads/MAIN"));
    struct kl_identity spiffe = {.login = "spiffe://example.org/ns/CI/sa/RUNNER", .source = "mtls"};
    assert_false(kl_selector_matches(&spiffe, "spiffe://example.org/ns/ci/sa/runner"));
    assert_true(kl_selector_matches(&user, "group:eng"));
    assert_false(kl_selector_matches(&user, "group:ops"));
    /* a SCIM group by its e-mail, as Aperture's grants name it */
    const char *scim[] = {"group:engineering@example.com"};
    struct kl_identity member = {.login = "bob@example.com", .groups = scim, .ngroups = 1, .source = "tailscale"};
    assert_true(kl_selector_matches(&member, "engineering@example.com"));
    assert_true(kl_selector_matches(&member, "group:engineering@example.com"));
    assert_false(kl_selector_matches(&member, "ops@example.com"));
    assert_false(kl_selector_matches(&user, "engineering@example.com"));
    assert_false(kl_selector_matches(&user, "tag:ci"));
    assert_false(kl_selector_matches(&user, "(loopback)"));
    assert_true(kl_selector_matches(&tagged, "tag:prod"));
    assert_false(kl_selector_matches(&tagged, "tag:ci,tag:prod")); /* never by its joined login */
    assert_false(kl_selector_matches(&tagged, "tagged-devices"));
    assert_true(kl_selector_matches(&loop, "(loopback)"));
    assert_true(kl_selector_matches(&loop, "*"));
    assert_false(kl_selector_matches(&served, "(loopback)")); /* proxied by tailscale serve */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(globs),
        cmocka_unit_test(globs_on_huge_names),
        cmocka_unit_test(selectors),
        cmocka_unit_test(specificity),
        cmocka_unit_test(capability_objects_and_best_match),
        cmocka_unit_test(config_grants_report_problems),
        cmocka_unit_test(config_grants_warn_unmatchable_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
