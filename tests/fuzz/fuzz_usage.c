/* libFuzzer: every entry point of usage.c, prices.c and session.c.
 *
 * The first byte picks the usage parser kind and how the rest is fed: as a
 * whole body, as an SSE stream through kl_sse in uneven pieces, or as
 * JSON-array bytes in uneven pieces; with its high bit the parser is strict,
 * as under a tool policy (each call's name told to a callback, the bytes an
 * array element still waits for never more than were fed). The same bytes
 * are then read as a price
 * table, as a model_cost_map, and as a request body plus headers for the
 * session id, and the usage, settled as at the end of an answer, is
 * priced. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "account/prices.h"
#include "account/session.h"
#include "account/sse.h"
#include "account/usage.h"
#include "dialect/dialect.h"

static const char table_json[] =
    "{\"models\":{\"m\":{\"provider\":\"p\",\"input\":1.25,\"output\":10,\"cache_read\":0.125,"
    "\"tiers\":[{\"above_input_tokens\":200,\"input\":2.5,\"output\":15}]},"
    "\"m-*\":{\"provider\":\"q\",\"input\":0.000000001}}}";

static void on_event(void *arg, const char *raw, size_t len)
{
    const char *ev;
    size_t evl, dl;
    char *data;
    kl_sse_fields(raw, len, &ev, &evl, &data, &dl);
    kl_usage_event(arg, ev, evl, data, dl);
    free(data);
}

static void on_tool(void *arg, const char *ns, const char *name)
{
    (void)ns;
    size_t *n = arg;
    *n += name ? strlen(name) > 0 : 0;
}

static void check(const struct kl_usage *u)
{
    if (u->input < 0 || u->output < 0 || u->cache_read < 0 || u->cache_write < 0 || u->reasoning < 0 ||
        u->tool_calls < 0 || u->ntool_names > KL_USAGE_MAX_TOOL_NAMES ||
        u->ntool_names > (size_t)u->tool_calls)
        abort();
    for (size_t i = 0; i < u->ntool_names; i++)
        if (!u->tool_names[i])
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    kl_arena a;
    kl_arena_init(&a);

    /* usage */
    kl_usage_parser *p = kl_usage_parser_new(&a, (enum kl_usage_kind)(sel % 7));
    size_t named = 0;
    if (sel & 0x80)
        kl_usage_on_tool(p, on_tool, &named);
    size_t off = 0, step = 1 + sel / 21;
    switch (sel / 7 % 3) {
    case 0:
        kl_usage_whole(p, s, n);
        break;
    case 1: {
        kl_sse sse = {0};
        while (off < n) {
            size_t k = n - off < step ? n - off : step;
            kl_sse_feed(&sse, s + off, k, on_event, p);
            off += k;
            step = step * 3 % 17 + 1;
        }
        kl_sse_flush(&sse, on_event, p);
        kl_sse_free(&sse);
        break;
    }
    default:
        while (off < n) {
            size_t k = n - off < step ? n - off : step;
            kl_usage_array_bytes(p, s + off, k);
            check(kl_usage_result(p));
            if (kl_usage_array_pending(p) > off + k)
                abort();
            off += k;
            step = step * 5 % 23 + 1;
        }
        break;
    }
    const struct kl_usage *u = kl_usage_result(p);
    check(u);
    /* the end of the answer: a stream cut short is estimated, never lowered */
    int64_t out_before = u->output;
    bool was_final = u->final;
    kl_usage_settle(p, 1 + sel % 5, (int64_t)(size % 3) * 7, size % 2 == 0);
    if ((u->final && !u->known) || (u->partial && (was_final || !u->known)) || u->output < out_before ||
        (was_final && u->output != out_before))
        abort();
    check(u);

    /* prices: the input as a table, and the usage priced */
    char why[128];
    kl_prices *fuzzed = kl_prices_parse(s, n, why, sizeof(why));
    kl_prices *t = kl_prices_parse(table_json, sizeof(table_json) - 1, why, sizeof(why));
    if (!t)
        abort();
    int64_t nd;
    const char *models[] = {"m", "m-x", "models/m", u->model_served ? u->model_served : "none"};
    for (size_t i = 0; i < 4; i++) {
        if (kl_cost(t, NULL, NULL, models[i], u, &nd) == 0 && nd < 0)
            abort();
        kl_cost(t, "q", NULL, models[i], u, &nd);
        if (fuzzed)
            kl_cost(fuzzed, NULL, NULL, models[i], u, &nd);
        kl_cost_estimate_max(t, NULL, NULL, models[i], u->input, u->output, &nd);
    }
    for (size_t i = 0; fuzzed && i < kl_prices_count(fuzzed); i++) {
        const struct kl_price *e = kl_prices_at(fuzzed, i);
        struct kl_price_rates r;
        kl_price_rates_for(e, u->input, &r);
        if (r.input < 0 || r.output < 0 || r.cache_read < 0 || r.cache_write < 0)
            abort();
        kl_cost(fuzzed, e->provider, NULL, e->key, u, &nd);
    }
    kl_prices_free(fuzzed);

    /* the input as JSON: a model_cost_map and a request body */
    cJSON *j = cJSON_ParseWithLength(s, n);
    struct kl_cost_map map;
    const char *mwhy = NULL;
    if (kl_cost_map_parse(j, &a, &map, &mwhy) == 0) {
        for (size_t i = 0; i < 4; i++)
            kl_cost(t, NULL, &map, models[i], u, &nd);
        for (size_t i = 0; i < map.n; i++)
            kl_cost_glob(map.rules[i].match, models[3]);
    }
    kl_prices_free(t);

    /* headers: the input's lines, alternately names and values */
    struct kl_header h[8];
    size_t nh = 0;
    char *copy = kl_arena_strndup(&a, s, n);
    for (char *line = copy, *next; line && nh < 8; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = '\0';
            h[nh].name = line;
            h[nh].value = colon + 1;
            nh++;
        }
    }
    /* a session id from a body that validates, as the pipeline reads it */
    struct kl_body_map bm;
    const char *dup = NULL;
    bool body_ok = kl_dialect_body_map(s, n, &bm, NULL, &dup) == 0;
    kl_session_id(&a, h, nh, body_ok ? s : NULL, body_ok ? &bm : NULL,
                  (sel & 1) ? "alice@example.com" : NULL, NULL);
    kl_session_id(&a, NULL, 0, body_ok ? s : NULL, body_ok ? &bm : NULL, "bob", NULL);
    cJSON_Delete(j);
    kl_arena_free(&a);
    return 0;
}
