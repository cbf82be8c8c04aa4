#include "guard/answer.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/text.h"
#include "guard/notes.h"
#include "guard/scan.h"

enum kl_answer_verdict kl_guard_answer_whole(kl_exchange *ex, const char *body, size_t len, const char **out,
                                             size_t *outlen)
{
    struct kl_scan_result res;
    const char *why = NULL;
    if (kl_scan(ex->cfg->guardrails, &ex->worker->scan, body, len, &ex->arena, &res, &why) < 0) {
        /* what cannot be checked is not relayed */
        ex->error_message = kl_arena_printf(&ex->arena, "guardrails could not check the answer: %s", why);
        ex->cut_kind = KL_ERR_UNAVAILABLE;
        ex->cut_class = KL_EC_UNAVAILABLE;
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
    /* 403: the caller's SDK does not retry it (a retry would be charged
     * and most likely answered alike) */
    ex->error_message = kl_arena_printf(&ex->arena, "the answer was withheld by guardrails: it contains %s",
                                        res.block_kinds);
    ex->cut_kind = KL_ERR_FORBIDDEN;
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
    int rc = kl_scan(ex->cfg->guardrails, &ex->worker->scan, text, strlen(text), &ex->arena, &res, &why);
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
