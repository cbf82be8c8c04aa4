/* by_addr keys: the IP the request asked about, without its port and in
 * Go's canonical spelling ("127.0.0.2", "fd7a:115c:a1e0::1",
 * "::ffff:127.0.0.2" - an IPv4-mapped address is counted as sent, before
 * tailscaled unmaps it); "nodekey:..." as sent; and for an addr that does
 * not parse, the decoded text as sent. A request without addr only counts
 * towards "whois". The keying is done by the caller (localapi.c). */
#include "stats.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "alloc.h"

void fts_stats_count(struct fts_stats *s, const char *addr, size_t addr_len)
{
    s->whois++;
    if (addr == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        if (strlen(s->rows[i].addr) == addr_len && memcmp(s->rows[i].addr, addr, addr_len) == 0) {
            s->rows[i].count++;
            return;
        }
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->rows = fts_realloc(s->rows, s->cap * sizeof(*s->rows));
    }
    s->rows[s->n].addr = fts_memdup(addr, addr_len);
    s->rows[s->n].count = 1;
    s->n++;
}

void fts_stats_reset(struct fts_stats *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->rows[i].addr);
    s->n = 0;
    s->whois = 0;
}

char *fts_stats_json(const struct fts_stats *s, unsigned long table_loads, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *by = cJSON_CreateObject();
    char *text, *out;

    if (root == NULL || by == NULL)
        abort();
    cJSON_AddNumberToObject(root, "whois", (double)s->whois);
    cJSON_AddItemToObject(root, "by_addr", by);
    for (size_t i = 0; i < s->n; i++)
        cJSON_AddNumberToObject(by, s->rows[i].addr, (double)s->rows[i].count);
    cJSON_AddNumberToObject(root, "table_loads", (double)table_loads);

    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (text == NULL)
        abort();
    *len = strlen(text) + 1;
    out = fts_malloc(*len + 1);
    memcpy(out, text, *len - 1);
    out[*len - 1] = '\n';
    out[*len] = '\0';
    cJSON_free(text);
    return out;
}

void fts_stats_free(struct fts_stats *s)
{
    fts_stats_reset(s);
    free(s->rows);
    memset(s, 0, sizeof(*s));
}
