/* libFuzzer: guardrails over a streamed answer as it passes (guard/stream.c).
 * The first byte picks the dialect and framing; the rest is events, split at
 * blank lines, each "name|data" or just data. Whatever they hold, the scan
 * must not crash, leak or misuse memory; unless it stopped the stream, every
 * event goes on exactly once, in order, as it came or rewritten as JSON;
 * and for OpenAI chat chunks of one choice, the text the caller can put
 * together from what was relayed holds nothing a rule redacts or blocks
 * (the rules' findings are shorter than the hold). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "account/usage.h"
#include "core/config.h"
#include "core/exchange.h"
#include "guard/notes.h"
#include "guard/scan.h"
#include "guard/stream.h"

/* "s[a-z]{3}t" is one Debian 12's Vectorscan missed (docs/design.md,
 * "Guard"): keyless builds against Intel's Hyperscan on amd64, and this
 * target would report such a miss as a finding that survived. */
static kl_config *cfg;
static kl_worker worker;

struct out {
    char *v[4096];
    size_t len[4096];
    size_t n;
};
static struct out relayed;

static void relay(kl_exchange *ex, const char *data, size_t len, int mark)
{
    (void)ex;
    (void)mark;
    if (relayed.n == 4096)
        abort(); /* no more went on than came */
    relayed.v[relayed.n] = malloc(len + 1);
    if (!relayed.v[relayed.n])
        abort();
    memcpy(relayed.v[relayed.n], data, len);
    relayed.v[relayed.n][len] = '\0';
    relayed.len[relayed.n++] = len;
}

/* The content of an OpenAI chunk of one choice (index 0), appended; false
 * when the chunk has another shape (the check is then skipped). */
static bool one_choice_content(const char *data, size_t len, char **text, size_t *tlen)
{
    /* a \u0000 read as the caller's JSON reader reads it (not as the end of
     * the string): as a space, as the scan reads it */
    char *copy = malloc(len + 1);
    if (!copy)
        abort();
    memcpy(copy, data, len);
    for (size_t i = 0, slashes = 0; i < len; i++) {
        if (copy[i] == 'u' && slashes % 2 == 1 && len - i >= 5 && memcmp(copy + i + 1, "0000", 4) == 0)
            memcpy(copy + i + 3, "20", 2);
        slashes = copy[i] == '\\' ? slashes + 1 : 0;
    }
    cJSON *j = cJSON_ParseWithLength(copy, len);
    free(copy);
    if (!j)
        return true; /* not JSON: no text */
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    bool ok = !choices || (cJSON_IsArray(choices) && cJSON_GetArraySize(choices) <= 1);
    const cJSON *c = cJSON_GetArrayItem(choices, 0);
    const cJSON *idx = cJSON_GetObjectItemCaseSensitive(c, "index");
    if (idx && !(cJSON_IsNumber(idx) && idx->valuedouble == 0))
        ok = false;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "delta"), "content");
    if (ok && cJSON_IsString(s)) {
        size_t n = strlen(s->valuestring);
        *text = realloc(*text, *tlen + n + 1);
        if (!*text)
            abort();
        memcpy(*text + *tlen, s->valuestring, n);
        *tlen += n;
    }
    cJSON_Delete(j);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!cfg) {
        static const char text[] =
            "{\"guardrails\": {\"answers\": true, \"stream_hold\": 64, \"patterns\": ["
            " {\"name\": \"word\", \"regex\": \"s[a-z]{3}t\", \"action\": \"redact\"},"
            " {\"name\": \"stop\", \"regex\": \"zq[0-9]{2}\", \"action\": \"block\"},"
            " {\"name\": \"note\", \"regex\": \"nb[0-9]\", \"action\": \"log\"}]}}";
        kl_diags d = {0};
        cfg = kl_config_parse(text, sizeof(text) - 1, "fuzz.hujson", &d);
        kl_diags_free(&d);
        if (!cfg || !cfg->guardrails)
            abort();
    }
    if (size < 1)
        return 0;
    static const int kinds[] = {KL_USAGE_OPENAI_CHAT, KL_USAGE_OPENAI_RESPONSES, KL_USAGE_ANTHROPIC, KL_USAGE_GEMINI,
                                KL_USAGE_BEDROCK_CONVERSE};
    int kind = kinds[data[0] % 5];
    enum kl_guard_framing framing = (enum kl_guard_framing)(data[0] / 5 % 3);
    kl_exchange ex;
    memset(&ex, 0, sizeof(ex));
    kl_arena_init(&ex.arena);
    ex.cfg = cfg;
    ex.worker = &worker;
    memcpy(ex.id, "fuzz", 5);
    relayed.n = 0;
    kl_guard_stream *s = kl_guard_stream_new(&ex, kind, framing, relay);
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    size_t events = 0;
    while (p < end && !ex.cut_off && events < 4096) { /* as many as are kept to check */
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        size_t n = e ? (size_t)(e - p) : (size_t)(end - p);
        const char *bar = memchr(p, '|', n < 32 ? n : 32);
        if (bar && (memchr(p, '\n', (size_t)(bar - p)) || memchr(p, '\r', (size_t)(bar - p))))
            bar = NULL; /* an SSE event's name is one line */
        const char *d = bar ? bar + 1 : p;
        size_t dl = (size_t)(p + n - d);
        kl_guard_stream_event(s, &ex, p, n, bar ? p : NULL, bar ? (size_t)(bar - p) : 0, d, dl, 0);
        events++;
        p += n + (e ? 2 : 0);
    }
    kl_guard_stream_end(s, &ex);
    kl_guard_stream_free(s);
    if (!ex.cut_off) {
        if (relayed.n != events)
            abort(); /* each event once */
        char *text = NULL;
        size_t tlen = 0;
        bool check = kind == KL_USAGE_OPENAI_CHAT && framing == KL_GUARD_SSE;
        p = (const char *)data + 1;
        for (size_t i = 0; i < relayed.n; i++) {
            const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
            size_t n = e ? (size_t)(e - p) : (size_t)(end - p);
            bool same = relayed.len[i] == n && memcmp(relayed.v[i], p, n) == 0;
            if (!same) { /* rewritten: its data is JSON */
                const char *dstart = relayed.v[i];
                /* Gemini's bare JSON (an event that is only that, after
                 * blank lines or spaces) stays bare */
                size_t lead = 0;
                while (lead < n && (p[lead] == ' ' || p[lead] == '\t' || p[lead] == '\r' || p[lead] == '\n'))
                    lead++;
                bool bare = framing == KL_GUARD_SSE && kind == KL_USAGE_GEMINI && lead < n && p[lead] == '{';
                if (framing == KL_GUARD_SSE && !bare && strncmp(dstart, "data: ", 6) != 0)
                    dstart = strstr(dstart, "\ndata: ") ? strstr(dstart, "\ndata: ") + 1 : NULL;
                if (!dstart)
                    abort();
                if (framing == KL_GUARD_SSE && !bare)
                    dstart += 6;
                cJSON *j = framing == KL_GUARD_FRAMES ? NULL : cJSON_Parse(dstart);
                if (framing != KL_GUARD_FRAMES && !j)
                    abort();
                cJSON_Delete(j);
            }
            if (check) {
                const char *dd = relayed.v[i];
                size_t dn = relayed.len[i];
                if (same) {
                    const char *bar = memchr(dd, '|', dn < 32 ? dn : 32);
                    if (bar && (memchr(dd, '\n', (size_t)(bar - dd)) || memchr(dd, '\r', (size_t)(bar - dd))))
                        bar = NULL;
                    if (bar) {
                        dn -= (size_t)(bar + 1 - dd);
                        dd = bar + 1;
                    }
                } else {
                    dd = strncmp(dd, "data: ", 6) == 0 ? dd + 6 : strstr(dd, "\ndata: ") + 7;
                    dn = strlen(dd);
                    while (dn && dd[dn - 1] == '\n')
                        dn--;
                }
                check = one_choice_content(dd, dn, &text, &tlen);
            }
            p += n + (e ? 2 : 0);
        }
        if (check && tlen) {
            struct kl_scan_hit *hits;
            size_t nh;
            const char *why;
            if (kl_scan_text(cfg->guardrails, &worker.scan, text, tlen, &hits, &nh, &why) < 0)
                abort();
            for (size_t i = 0; i < nh; i++)
                if (hits[i].action >= KL_SCAN_REDACT)
                    abort(); /* a finding went on */
            free(hits);
        }
        free(text);
    }
    for (size_t i = 0; i < relayed.n; i++)
        free(relayed.v[i]);
    kl_arena_free(&ex.arena);
    return 0;
}
