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
            "  check --config FILE     validate a configuration: problems to stderr, a summary\n"
            "                          to stdout; exit 1 on errors\n"
            "        [--strict]        treat warnings as errors too\n"
            "  usage --config FILE     usage from the record store, as a table\n"
            "        [--by user,model,provider,day,session,node,endpoint] [--since 7d] [--until T]\n"
            "        [--user LOGIN] [--model M] [--json]\n"
            "  export --config FILE    every record as JSON lines\n"
            "        [--since T] [--until T] [--user LOGIN] [--model M] [--format jsonl]\n"
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

/* The option an argument names, or NULL: "--since" and "--since=7d" both
 * name --since. */
static const char *option_named(const char *arg, const char *const *names, bool *inline_value)
{
    for (const char *const *v = names; *v; v++) {
        size_t n = strlen(*v);
        if (strncmp(arg, *v, n) == 0 && (arg[n] == '\0' || arg[n] == '=')) {
            *inline_value = arg[n] == '=';
            return *v;
        }
    }
    return NULL;
}

/* Every argument after the command is one of the options it takes, each
 * at most once: a mistyped --sinse must not quietly report everything, and
 * of two --since the one meant is not ours to guess. A valued option
 * followed by another option ("--user --json") has no value; a value that
 * starts with "--" is written --user=--x. 0, 1 when help was asked for
 * (printed), or 2 with a message. */
static int check_args(int argc, char **argv, const char *const *valued, const char *const *flags)
{
    const char *seen[16];
    size_t nseen = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        bool inline_value = false;
        const char *name = option_named(a, flags, &inline_value);
        if (name && inline_value) {
            fprintf(stderr, "keyless %s: %s takes no value\n", argv[1], name);
            return 2;
        }
        if (!name && (name = option_named(a, valued, &inline_value)) && !inline_value) {
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                fprintf(stderr, "keyless %s: %s needs a value\n", argv[1], a);
                return 2;
            }
            i++;
        }
        if (!name) {
            fprintf(stderr, "keyless %s: unknown option '%s' (run keyless help)\n", argv[1], a);
            return 2;
        }
        for (size_t k = 0; k < nseen; k++) {
            if (seen[k] == name) {
                fprintf(stderr, "keyless %s: %s is given twice\n", argv[1], name);
                return 2;
            }
        }
        if (nseen < sizeof(seen) / sizeof(seen[0]))
            seen[nseen++] = name;
    }
    return 0;
}

/* check_args' answer as the command's exit status: help asked for is 0. */
static int args_status(int rc)
{
    return rc == 1 ? 0 : rc;
}

static int cmd_check(int argc, char **argv)
{
    static const char *const valued[] = {"--config", NULL}, *const flags[] = {"--strict", NULL};
    int args = check_args(argc, argv, valued, flags);
    if (args)
        return args_status(args);
    const char *path = opt_value(argc, argv, "--config");
    if (!path || !*path) { /* an empty one too: --config "$UNSET" in a script */
        fprintf(stderr, "keyless check: --config FILE is required\n");
        return 2;
    }
    kl_diags d = {0};
    kl_config *cfg = kl_config_load(path, &d);
    if (cfg)
        kl_record_probe_store(cfg->store, &d);
    /* as nginx -t, caddy validate and systemd-analyze verify: the problems
     * go to stderr (where serve writes them too, and where a script's
     * 2>errors.log looks), the one-line verdict to stdout */
    kl_diags_print(&d, path, stderr);
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
    int args = check_args(argc, argv, valued, flags);
    if (args)
        return args_status(args);
    const char *path = opt_value(argc, argv, "--config");
    if (!path || !*path) {
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
    int args = check_args(argc, argv, is_export ? export_valued : usage_valued, is_export ? export_flags : usage_flags);
    if (args)
        return args_status(args);
    const char *path = opt_value(argc, argv, "--config");
    if (!path || !*path) {
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
    char why[256];
    if (!is_export && o.group_by && kl_report_check_group_by(o.group_by, why, sizeof(why)) < 0) {
        fprintf(stderr, "keyless usage: %s\n", why);
        rc = 2;
    } else if ((since && kl_parse_time(since, now, &o.f.since_ms) < 0) ||
        (until && kl_parse_time(until, now, &o.f.until_ms) < 0)) {
        fprintf(stderr, "keyless %s: --since/--until take 24h, 7d, 2026-11-01, 2026-11-01T12:00:00Z or Unix ms\n", name);
        rc = 2;
    } else if (since && until && o.f.since_ms >= o.f.until_ms) {
        /* as /api/usage refuses it: an empty report would pass for no usage */
        fprintf(stderr, "keyless %s: --since must be before --until\n", name);
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
        if (argc > 2) {
            fprintf(stderr, "keyless: %s takes no arguments\n", cmd);
            return 2;
        }
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
