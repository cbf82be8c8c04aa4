/* Request counters that tests read through GET /fake/stats, e.g. to check
 * that the gateway caches identities instead of asking for every call. */
#ifndef FTS_STATS_H
#define FTS_STATS_H

#include <stddef.h>

struct fts_stat_row {
    char *addr;                   /* as described in stats.c */
    unsigned long count;
};

struct fts_stats {
    unsigned long whois;          /* every request for /localapi/v0/whois */
    struct fts_stat_row *rows;    /* per addr, in order of first sight */
    size_t n, cap;
};

/* Counts one whois request; addr may be NULL (no addr parameter). */
void fts_stats_count(struct fts_stats *s, const char *addr, size_t addr_len);

void fts_stats_reset(struct fts_stats *s);

/* {"whois": N, "by_addr": {...}, "table_loads": N} plus "\n"; the caller
 * frees the result. */
char *fts_stats_json(const struct fts_stats *s, unsigned long table_loads, size_t *len);

void fts_stats_free(struct fts_stats *s);

#endif
