/* keyless: the command line. Thin on purpose: it parses arguments and calls
 * into the server and the configuration reader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/exchange.h"
#include "core/log.h"
#include "listen/server.h"
#include "record/cli.h"
#include "record/record.h"
#include "record/store.h"

#define KL_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keyless <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve --config FILE     run the gateway\n"
            "  check --config FILE     validate a configuration; non-zero exit on errors\n"
            "        [--strict]        treat warnings as errors too\n"
            "  usage --config FILE     usage from the record store, as a table\n"
            "        [--by user,model,provider,day,session,node,endpoint] [--since 7d] [--until T]\n"
            "        [--user LOGIN] [--model M] [--json]\n"
            "  export --config FILE    every record as JSON lines\n"
            "        [--since T] [--until T] [--user LOGIN] [--format jsonl]\n"
            "  version                 print the version\n"
            "\n"
            "T: \"24h\", \"7d\" (ago), \"2026-11-01\", \"2026-11-01T12:00:00Z\" or Unix milliseconds\n");
}

static const char *opt_value(int argc, char **argv, const char *name)
{
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], name) == 0 && i + 1 < argc)
            return argv[i + 1];
        size_t n = strlen(name);
        if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=')
            return argv[i] + n + 1;
    }
    return NULL;
}

static bool has_flag(int argc, char **argv, const char *name)
{
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

/* Every argument after the command is one of the options it takes: a
 * mistyped --sinse must not quietly report everything. 0, or 2 with a
 * message. */
static int check_args(int argc, char **argv, const char *const *valued, const char *const *flags)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool known = false;
        for (const char *const *f = flags; *f && !known; f++)
            known = strcmp(a, *f) == 0;
        for (const char *const *v = valued; *v && !known; v++) {
            size_t n = strlen(*v);
            if (strncmp(a, *v, n) == 0 && a[n] == '=') {
                known = true;
            } else if (strcmp(a, *v) == 0) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "keyless %s: %s needs a value\n", argv[1], a);
                    return 2;
                }
                known = true;
                i++;
            }
        }
        if (!known) {
            fprintf(stderr, "keyless %s: unknown option '%s' (run keyless help)\n", argv[1], a);
            return 2;
        }
    }
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    static const char *const valued[] = {"--config", NULL}, *const flags[] = {"--strict", NULL};
    if (check_args(argc, argv, valued, flags))
        return 2;
    const char *path = opt_value(argc, argv, "--config");
    if (!path) {
        fprintf(stderr, "keyless check: --config FILE is required\n");
        return 2;
    }
    kl_diags d = {0};
    kl_config *cfg = kl_config_load(path, &d);
    if (cfg)
        kl_record_probe_store(cfg->store, &d);
    kl_diags_print(&d, path, stdout);
    bool strict = has_flag(argc, argv, "--strict");
    int rc = (!cfg || d.errors > 0 || (strict && d.warnings > 0)) ? 1 : 0;
    printf("%s: %d error%s, %d warning%s\n", path, d.errors, d.errors == 1 ? "" : "s", d.warnings,
           d.warnings == 1 ? "" : "s");
    kl_diags_free(&d);
    kl_config_unref(cfg);
    return rc;
}

static int cmd_serve(int argc, char **argv)
{
    static const char *const valued[] = {"--config", NULL}, *const flags[] = {NULL};
    if (check_args(argc, argv, valued, flags))
        return 2;
    const char *path = opt_value(argc, argv, "--config");
    if (!path) {
        fprintf(stderr, "keyless serve: --config FILE is required\n");
        return 2;
    }
    kl_diags d = {0};
    kl_config *cfg = kl_config_load(path, &d);
    kl_diags_print(&d, path, stderr);
    kl_diags_free(&d);
    if (!cfg) {
        fprintf(stderr, "keyless: not starting: the configuration has errors\n");
        return 1;
    }
    kl_log_set_level((enum kl_log_level)cfg->log_level);
    return kl_server_run(cfg);
}

/* Shared by usage and export: the store, and which records. */
static int cmd_report(int argc, char **argv, bool is_export)
{
    const char *name = is_export ? "export" : "usage";
    static const char *const usage_valued[] = {"--config", "--by", "--since", "--until", "--user", "--model", NULL};
    static const char *const usage_flags[] = {"--json", NULL};
    static const char *const export_valued[] = {"--config", "--since", "--until", "--user", "--model", "--format", NULL};
    static const char *const export_flags[] = {NULL};
    if (check_args(argc, argv, is_export ? export_valued : usage_valued, is_export ? export_flags : usage_flags))
        return 2;
    const char *path = opt_value(argc, argv, "--config");
    if (!path) {
        fprintf(stderr, "keyless %s: --config FILE is required\n", name);
        return 2;
    }
    kl_diags d = {0};
    kl_config *cfg = kl_config_load_reader(path, &d);
    if (!cfg) {
        kl_diags_print(&d, path, stderr);
        kl_diags_free(&d);
        return 1;
    }
    kl_diags_free(&d);
    struct kl_cli_opts o = {0};
    o.group_by = opt_value(argc, argv, "--by");
    o.json = has_flag(argc, argv, "--json");
    o.format = opt_value(argc, argv, "--format");
    o.f.user = opt_value(argc, argv, "--user");
    o.f.model = opt_value(argc, argv, "--model");
    int64_t now = kl_wall_ms();
    const char *since = opt_value(argc, argv, "--since"), *until = opt_value(argc, argv, "--until");
    int rc;
    if ((since && kl_parse_time(since, now, &o.f.since_ms) < 0) ||
        (until && kl_parse_time(until, now, &o.f.until_ms) < 0)) {
        fprintf(stderr, "keyless %s: --since/--until take 24h, 7d, 2026-11-01, 2026-11-01T12:00:00Z or Unix ms\n", name);
        rc = 2;
    } else {
        o.f.has_since = since != NULL;
        o.f.has_until = until != NULL;
        rc = is_export ? kl_cli_export(cfg, &o, stdout, stderr) : kl_cli_usage(cfg, &o, stdout, stderr);
    }
    kl_config_unref(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    setvbuf(stderr, NULL, _IOLBF, 0);
    kl_store_global_init();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc, argv);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc, argv);
    if (strcmp(cmd, "usage") == 0)
        return cmd_report(argc, argv, false);
    if (strcmp(cmd, "export") == 0)
        return cmd_report(argc, argv, true);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("keyless %s\n", KL_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "keyless: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
