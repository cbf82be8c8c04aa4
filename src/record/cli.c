#include "record/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "record/record.h"

static struct kl_store *open_store(const kl_config *cfg, FILE *err)
{
    const struct kl_store_cfg *sc = cfg->store;
    char e[512];
    struct kl_store *s = kl_store_open(sc->driver, sc->target, false, e, sizeof(e));
    if (!s)
        fprintf(err, "keyless: cannot read the record store: %s\n", e);
    return s;
}

/* A SQLite store that serve has not made yet (no request has been served, or
 * this is a new host): no records, said on err, and the file is not made. A
 * reader that made it would leave an empty file that no store could open. */
static bool store_not_made(const kl_config *cfg, FILE *err, const char *cmd)
{
    const struct kl_store_cfg *sc = cfg->store;
    struct stat st;
    if (sc->driver != KL_STORE_SQLITE || strcmp(sc->target, ":memory:") == 0 || stat(sc->target, &st) == 0 ||
        errno != ENOENT)
        return false;
    fprintf(err, "keyless %s: no record store at %s yet (keyless serve makes it): no records\n", cmd, sc->target);
    return true;
}

static void cell_text(const cJSON *v, char *buf, size_t len)
{
    if (cJSON_IsString(v) || cJSON_IsRaw(v)) /* raw: an exact sum's digits (report.c) */
        snprintf(buf, len, "%s", v->valuestring);
    else if (cJSON_IsNumber(v))
        snprintf(buf, len, "%.0f", v->valuedouble);
    else
        snprintf(buf, len, "-");
}

/* Width on a terminal: UTF-8 code points, not bytes. */
static size_t text_width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* Columns are two blanks apart; the last one ends its line with no blanks. */
static void print_cell(FILE *out, const char *text, size_t width, bool left, bool last)
{
    size_t pad = width - text_width(text);
    if (!left)
        fprintf(out, "%*s", (int)pad, "");
    fputs(text, out);
    if (!last)
        fprintf(out, "%*s  ", left ? (int)pad : 0, "");
}

/* A row's cell for one column. A cost is "-" when no request in the row had
 * a price: $0 would say they cost nothing. */
static void row_cell(const cJSON *r, const char *column, char *buf, size_t len)
{
    if (strcmp(column, "cost_usd") == 0) {
        const cJSON *n = cJSON_GetObjectItem(r, "requests"), *u = cJSON_GetObjectItem(r, "unpriced_requests");
        if (cJSON_IsNumber(n) && cJSON_IsNumber(u) && n->valuedouble > 0 && u->valuedouble >= n->valuedouble) {
            snprintf(buf, len, "-");
            return;
        }
    }
    cell_text(cJSON_GetObjectItem(r, column), buf, len);
}

/* A readable table: one column per group and figure, right-aligned numbers. */
static void print_table(cJSON *rows, const char *group_by, FILE *out)
{
    static const char *figures[] = {"requests", "input_tokens", "output_tokens", "cache_read_tokens",
                                    "cache_write_tokens", "reasoning_tokens", "cost_usd", "unpriced_requests"};
    static const char *titles[] = {"requests", "input", "output", "cache read", "cache write", "reasoning",
                                   "cost", "unpriced"};
    char groups[8][32];
    size_t ng = 0;
    char list[128];
    snprintf(list, sizeof(list), "%s", group_by);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t && ng < 8; t = strtok_r(NULL, ",", &save))
        snprintf(groups[ng++], sizeof(groups[0]), "%s", t);
    size_t ncol = ng + 8;
    size_t width[16];
    for (size_t c = 0; c < ncol; c++)
        width[c] = strlen(c < ng ? groups[c] : titles[c - ng]);
    char cell[16][1024];
    const cJSON *r;
    cJSON_ArrayForEach(r, rows) {
        for (size_t c = 0; c < ncol; c++) {
            row_cell(r, c < ng ? groups[c] : figures[c - ng], cell[c], sizeof(cell[c]));
            if (text_width(cell[c]) > width[c])
                width[c] = text_width(cell[c]);
        }
    }
    for (size_t c = 0; c < ncol; c++)
        print_cell(out, c < ng ? groups[c] : titles[c - ng], width[c], c < ng, c + 1 == ncol);
    fputc('\n', out);
    cJSON_ArrayForEach(r, rows) {
        for (size_t c = 0; c < ncol; c++) {
            row_cell(r, c < ng ? groups[c] : figures[c - ng], cell[c], sizeof(cell[c]));
            print_cell(out, cell[c], width[c], c < ng, c + 1 == ncol);
        }
        fputc('\n', out);
    }
}

/* 0 when everything written to out got there; else 1, said on err (an
 * export to a full disk is no success). */
static int output_written(FILE *out, FILE *err, const char *cmd)
{
    errno = 0;
    int flushed = fflush(out);
    if (flushed == 0 && !ferror(out))
        return 0;
    /* an earlier write's errno is gone: only the flush's own is said */
    fprintf(err, "keyless %s: writing the output failed%s%s\n", cmd, flushed && errno ? ": " : "",
            flushed && errno ? strerror(errno) : "");
    return 1;
}

int kl_cli_usage(const kl_config *cfg, const struct kl_cli_opts *o, FILE *out, FILE *err)
{
    const char *group_by = o->group_by ? o->group_by : "user,model";
    cJSON *rows = NULL;
    if (store_not_made(cfg, err, "usage")) {
        rows = cJSON_CreateArray();
    } else {
        struct kl_store *s = open_store(cfg, err);
        if (!s)
            return 1;
        char e[512];
        bool truncated;
        int rc = kl_report_usage(s, group_by, &o->f, 0, &rows, &truncated, e, sizeof(e));
        kl_store_close(s);
        if (rc < 0) {
            fprintf(err, "keyless usage: %s\n", e);
            return 1;
        }
    }
    if (o->json) {
        char *j = cJSON_PrintUnformatted(rows);
        fprintf(out, "%s\n", j);
        cJSON_free(j);
    } else {
        print_table(rows, group_by, out);
    }
    cJSON_Delete(rows);
    return output_written(out, err, "usage");
}

static void emit_line(void *arg, cJSON *row)
{
    char *j = cJSON_PrintUnformatted(row);
    fprintf(arg, "%s\n", j);
    cJSON_free(j);
}

int kl_cli_export(const kl_config *cfg, const struct kl_cli_opts *o, FILE *out, FILE *err)
{
    if (o->format && strcmp(o->format, "jsonl") != 0) {
        fprintf(err, "keyless export: --format must be jsonl\n");
        return 2;
    }
    if (store_not_made(cfg, err, "export"))
        return output_written(out, err, "export");
    struct kl_store *s = open_store(cfg, err);
    if (!s)
        return 1;
    char e[512];
    int rc = kl_report_export(s, &o->f, emit_line, out, e, sizeof(e));
    kl_store_close(s);
    if (rc < 0) {
        fprintf(err, "keyless export: %s\n", e);
        return 1;
    }
    return output_written(out, err, "export");
}
