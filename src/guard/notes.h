/* What the guardrails and the pre_request hooks did to one request, kept
 * for its record (the requests table's guardrails column), so an auditor
 * sees a redaction, a hook's verdict or a secret in an answer without
 * reading the log. */
#ifndef KL_NOTES_H
#define KL_NOTES_H

#include <stddef.h>

#include "core/exchange.h"

/* One thing done, in the exchange's arena (ex->guard_notes). */
struct kl_guard_note {
    const char *stage;          /* "request" or "answer" */
    const char *hook;           /* the hook's name, or NULL for the built-in guardrails */
    const char *action;         /* guardrails: block, redact, log; for a relayed stream found,
                                 * or unscanned (why says why);
                                 * hooks: allow, modify, block, failed_open, failed_closed */
    const char *kinds;          /* guardrails: the kinds found, comma-separated */
    size_t spans;               /* redact: how many spans were replaced */
    const char *why;            /* a failed hook or an unscanned answer: why; a hook's block: its
                                 * message (strings are copied) */
    struct kl_guard_note *next;
};

void kl_guard_note(kl_exchange *ex, const char *stage, const char *hook, const char *action, const char *kinds,
                   size_t spans, const char *why);

/* The notes as a JSON array (arena), in the order they were taken, or
 * NULL when there are none:
 * [{"stage": "request", "by": "guardrails", "action": "redact", "kinds": ["email"], "spans": 1},
 *  {"stage": "request", "by": "hook", "hook": "pii", "action": "allow"}] */
const char *kl_guard_notes_json(kl_exchange *ex);

#endif
