#include "guard/answer.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "account/usage.h"
#include "core/jsoncheck.h"
#include "core/log.h"
#include "core/text.h"
#include "guard/notes.h"
#include "guard/scan.h"

/* The text an SDK joins from several parts, each part's start marked. */
struct joined {
    char *text;                 /* malloc */
    size_t len, cap;
    size_t *starts;             /* malloc: where each part after the first begins */
    size_t n, ncap;
};

static void join_part(struct joined *j, const char *t)
{
    size_t n = strlen(t);
    if (j->len) {
        if (j->n == j->ncap) {
            j->ncap = j->ncap ? j->ncap * 2 : 8;
            j->starts = realloc(j->starts, j->ncap * sizeof(*j->starts));
            if (!j->starts)
                abort();
        }
        j->starts[j->n++] = j->len;
    }
    if (j->len + n + 1 > j->cap) {
        j->cap = (j->len + n + 1) * 2;
        j->text = realloc(j->text, j->cap);
        if (!j->text)
            abort();
    }
    memcpy(j->text + j->len, t, n + 1);
    j->len += n;
}

/* Gemini's text of one candidate (its SDKs' .text), or a Responses answer's
 * output_text across its messages (the OpenAI SDK's output_text). */
static void join_answer(const cJSON *root, int kind, int cand, struct joined *j)
{
    const cJSON *e, *p;
    if (kind == KL_USAGE_GEMINI) {
        const cJSON *parts = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "candidates"),
                                                                cand), "content"), "parts");
        cJSON_ArrayForEach(p, parts) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
            if (cJSON_IsString(t))
                join_part(j, t->valuestring);
        }
        return;
    }
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "output")) {
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(e, "content")) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
            if (cJSON_IsString(t) && cJSON_IsString(type) && strcmp(type->valuestring, "output_text") == 0)
                join_part(j, t->valuestring);
        }
    }
}

/* A finding that only the joined text spells (it crosses from one part into
 * the next): its kinds, or NULL. Each part alone was scanned with the body. */
static const char *split_finding(kl_exchange *ex, const char *body, size_t len)
{
    int kind = kl_usage_kind_for(ex->ep->id);
    if (kind != KL_USAGE_GEMINI && kind != KL_USAGE_OPENAI_RESPONSES)
        return NULL;
    cJSON *root = cJSON_ParseWithLength(body, len);
    const char *found = NULL;
    int ncand = kind == KL_USAGE_GEMINI ? cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "candidates")) : 1;
    for (int c = 0; root && c < ncand && !found; c++) {
        struct joined j = {0};
        join_answer(root, kind, c, &j);
        struct kl_scan_hit *hits = NULL;
        size_t n = 0;
        const char *why;
        if (j.n && kl_scan_text(ex->cfg->guardrails, &ex->worker->scan, j.text, j.len, &hits, &n, &why) == 0) {
            for (size_t i = 0; i < n && !found; i++)
                for (size_t k = 0; k < j.n && !found; k++)
                    if (hits[i].action >= KL_SCAN_REDACT && hits[i].from < j.starts[k] && j.starts[k] < hits[i].to)
                        found = hits[i].kind;
        }
        free(hits);
        free(j.text);
        free(j.starts);
    }
    cJSON_Delete(root);
    return found;
}

static bool read_otherwise(const char *body, size_t len)
{
    if (kl_json_has_nul_escape(body, len))
        return true;
    cJSON *j = cJSON_ParseWithLength(body, len);
    bool dup = j && kl_json_has_duplicate_keys(j);
    cJSON_Delete(j);
    return dup;
}

enum kl_answer_verdict kl_guard_answer_whole(kl_exchange *ex, const char *body, size_t len, const char **out,
                                             size_t *outlen)
{
    struct kl_scan_result res;
    const char *why = NULL;
    if (kl_scan(ex->cfg->guardrails, &ex->worker->scan, body, len, NULL, 0, &ex->arena, &res, &why) < 0) {
        /* what cannot be checked is not relayed */
        ex->error_message = kl_arena_printf(&ex->arena, "guardrails could not check the answer: %s", why);
        ex->cut_kind = KL_ERR_UNAVAILABLE;
        ex->cut_class = KL_EC_UNAVAILABLE;
        return KL_ANSWER_WITHHELD;
    }
    /* a repeated member (cJSON, which the checks below read with, takes
     * the first; the SDKs the last) or a \u0000 escape (which ends a cJSON
     * string): the caller would read another answer than the one checked,
     * as a stream's event (guard/stream.c) */
    if (kl_guardrails_strongest(ex->cfg->guardrails) >= KL_SCAN_REDACT && read_otherwise(body, len)) {
        const char *odd = "a repeated member or a \\u0000 escape, which readers read differently";
        kl_guard_note(ex, "answer", NULL, "unscanned", NULL, 0, odd);
        ex->error_message = kl_arena_printf(&ex->arena, "guardrails could not check the answer: it holds %s", odd);
        ex->cut_kind = KL_ERR_UNAVAILABLE;
        ex->cut_class = KL_EC_UNAVAILABLE;
        return KL_ANSWER_WITHHELD;
    }
    /* parts the SDK joins (Gemini's text parts, a Responses answer's
     * output_text): a finding split across two is in neither alone, and
     * cannot be taken out of one */
    const char *split = res.action != KL_SCAN_BLOCK ? split_finding(ex, body, len) : NULL;
    if (split) {
        kl_guard_note(ex, "answer", NULL, "block", split, 0, "split across parts the caller's SDK joins");
        ex->error_message = kl_arena_printf(&ex->arena, "the answer was withheld by guardrails: it contains %s, "
                                            "split across parts the caller's SDK joins", split);
        ex->cut_kind = KL_ERR_BLOCKED;
        ex->cut_class = KL_EC_BLOCKED;
        return KL_ANSWER_WITHHELD;
    }
    switch (res.action) {
    case KL_SCAN_OFF:
        return KL_ANSWER_PASS;
    case KL_SCAN_LOG:
        kl_guard_note(ex, "answer", NULL, "log", res.kinds, 0, NULL);
        kl_warn("%s: guardrails found %s in the answer (logged only)", ex->id, res.kinds);
        return KL_ANSWER_PASS;
    case KL_SCAN_REDACT:
        kl_guard_note(ex, "answer", NULL, "redact", res.kinds, res.redacted, NULL);
        kl_info("%s: guardrails redacted %zu span%s of the answer (%s)", ex->id, res.redacted,
                res.redacted == 1 ? "" : "s", res.kinds);
        *out = res.body;
        *outlen = res.body_len;
        return KL_ANSWER_REDACTED;
    case KL_SCAN_BLOCK:
        break;
    }
    kl_guard_note(ex, "answer", NULL, "block", res.overflow ? res.kinds : res.block_kinds, 0,
                  res.overflow ? res.block_kinds : NULL);
    /* a 400: the caller's SDK does not retry it (a retry would be charged
     * and most likely answered alike) */
    ex->error_message = kl_arena_printf(&ex->arena, "the answer was withheld by guardrails: it contains %s",
                                        res.block_kinds);
    ex->cut_kind = KL_ERR_BLOCKED;
    ex->cut_class = KL_EC_BLOCKED;
    return KL_ANSWER_WITHHELD;
}

/* An answer relayed without being scanned: said in the record and the log. */
static void unscanned(kl_exchange *ex, const char *why)
{
    kl_guard_note(ex, "answer", NULL, "unscanned", NULL, 0, why);
    kl_warn("%s: guardrails could not scan the streamed answer: %s", ex->id, why);
}

bool kl_guard_answer_relayed(kl_exchange *ex, const cJSON *answer, const char *why)
{
    char *text = answer ? cJSON_PrintUnformatted(answer) : NULL;
    if (!text) {
        unscanned(ex, why);
        return false;
    }
    struct kl_scan_result res;
    int rc = kl_scan(ex->cfg->guardrails, &ex->worker->scan, text, strlen(text), NULL, 0, &ex->arena, &res, &why);
    cJSON_free(text);
    if (rc < 0) {
        unscanned(ex, why);
        return false;
    }
    if (res.action == KL_SCAN_OFF)
        return false;
    /* "found": whatever the rule says, the caller has had it */
    kl_guard_note(ex, "answer", NULL, "found", res.kinds, 0, NULL);
    kl_warn("%s: guardrails found %s in the streamed answer, already relayed", ex->id, res.kinds);
    return res.action >= KL_SCAN_REDACT;
}
