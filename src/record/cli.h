/* `keyless usage` and `keyless export`: the records, read straight from a
 * configuration's store (outside any running gateway). */
#ifndef KL_RECORD_CLI_H
#define KL_RECORD_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "core/config.h"
#include "record/report.h"

struct kl_cli_opts {
    const char *group_by;       /* usage */
    bool json;                  /* usage: JSON instead of a table */
    const char *format;         /* export: "jsonl" */
    struct kl_report_filter f;
};

int kl_cli_usage(const kl_config *cfg, const struct kl_cli_opts *o, FILE *out, FILE *err);
int kl_cli_export(const kl_config *cfg, const struct kl_cli_opts *o, FILE *out, FILE *err);

#endif
