/* libFuzzer: the built-in guardrails over any bytes, every kind redacted
 * (the widest path: checks, private-key extension, escapes, merging,
 * splicing, base64 text files decoded and encoded again). The redacted body
 * must keep every byte outside the findings (with the markers taken out it
 * is a subsequence of the input; not checked when a base64 file was encoded
 * again), and when the input is JSON the redacted body must be JSON too (a
 * finding that cannot be taken out of a string blocks instead). JSON input
 * is scanned skipping its signed reasoning (guard/signed.h), whose spans
 * must be strings, in order, inside the body. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/config.h"
#include "core/jsonscan.h"
#include "guard/scan.h"
#include "guard/signed.h"

static kl_config *cfg;
static struct kl_scan_scratch *scratch;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!cfg) {
        static const char text[] =
            "{\"guardrails\": {\"secrets\": \"redact\", \"pii\": \"redact\","
            " \"patterns\": [{\"name\": \"word\", \"regex\": \"s[a-z]+t\", \"action\": \"redact\"},"
            " {\"name\": \"any\", \"regex\": \"x\\\\S+\", \"action\": \"redact\"}]}}";
        kl_diags d = {0};
        cfg = kl_config_parse(text, sizeof(text) - 1, "fuzz.hujson", &d);
        kl_diags_free(&d);
        if (!cfg || !cfg->guardrails)
            abort();
    }
    kl_arena a;
    kl_arena_init(&a);
    struct kl_scan_result r;
    const char *why = NULL;
    struct kl_scan_span *skip = NULL;
    size_t nskip = 0, err_at;
    if (kl_json_validate((const char *)data, size, &err_at) == 0)
        nskip = kl_guard_signed_spans((const char *)data, size, &a, &skip);
    for (size_t i = 0; i < nskip; i++)
        if (skip[i].to > size || skip[i].to < skip[i].from + 2 || data[skip[i].from] != '"' ||
            data[skip[i].to - 1] != '"' || (i && skip[i].from < skip[i - 1].to))
            abort();
    if (kl_scan(cfg->guardrails, &scratch, (const char *)data, size, skip, nskip, &a, &r, &why) < 0)
        abort();
    if (r.action == KL_SCAN_REDACT) {
        if (!r.body || r.body[r.body_len] != '\0' || !r.redacted)
            abort();
        /* markers out, what is left came from the input, in order */
        size_t i = 0, k = 0, markers = 0;
        while (!r.files && i < r.body_len) {
            if (r.body_len - i > 10 && memcmp(r.body + i, "[REDACTED:", 10) == 0) {
                const char *close = memchr(r.body + i, ']', r.body_len - i);
                if (close) {
                    i = (size_t)(close - r.body) + 1;
                    markers++;
                    continue;
                }
            }
            while (k < size && data[k] != (uint8_t)r.body[i])
                k++;
            if (k == size)
                abort();
            k++;
            i++;
        }
        if (!r.files && markers < r.redacted)
            abort();
        cJSON *in = cJSON_ParseWithLength((const char *)data, size);
        if (in) {
            cJSON *outj = cJSON_ParseWithLength(r.body, r.body_len);
            if (!outj)
                abort();
            cJSON_Delete(outj);
            cJSON_Delete(in);
        }
    } else if (r.body) {
        abort();
    }
    kl_arena_free(&a);
    return 0;
}
