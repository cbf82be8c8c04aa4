/* Stage 8, the answer's guardrails (guardrails.answers): the built-in
 * guardrails over what the provider answered. A whole answer is held by
 * account and scanned before it is relayed, with the actions requests get
 * (block, redact, log). A stream is scanned as it passes when a rule blocks
 * or redacts (guard/stream.h); with only rules that log, it is scanned when
 * it has ended, from the answer assembled from its events (a finding split
 * across deltas is still found): what it held is logged and recorded. */
#ifndef KL_ANSWER_H
#define KL_ANSWER_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "core/exchange.h"

enum kl_answer_verdict {
    KL_ANSWER_PASS,             /* relay it as it is (nothing found, or only kinds that are logged) */
    KL_ANSWER_REDACTED,         /* relay the redacted copy */
    KL_ANSWER_WITHHELD,         /* refuse it: ex->error_message, cut_kind and cut_class say why */
};

/* A whole answer (any bytes), before it is relayed. With REDACTED, *out
 * and *outlen are the redacted copy (arena). */
enum kl_answer_verdict kl_guard_answer_whole(kl_exchange *ex, const char *body, size_t len, const char **out,
                                             size_t *outlen);

/* A stream's answer once it has been relayed (with only rules that log),
 * assembled (NULL when it could not be: why says so). true when it held a
 * kind whose rule would block or redact: its capture should not be kept. */
bool kl_guard_answer_relayed(kl_exchange *ex, const cJSON *answer, const char *why);

#endif
