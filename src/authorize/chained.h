/* A stored Responses answer is carried on only by the caller it was for.
 *
 * OpenAI keeps a Responses answer (store: true, its default) under the
 * provider key, and a later request naming it as previous_response_id
 * carries on that conversation: its whole text is in the model's context.
 * Every caller of keyless shares the key, so anyone who learnt another's
 * resp_… id could have read their conversation through the model. keyless
 * knows which login each answer went to (the records' response_id column),
 * and refuses a request chained onto an answer another login received, as
 * OpenAI refuses an id it does not know (400 previous_response_not_found),
 * so the refusal tells nothing of whether it exists.
 *
 * Recent answers are remembered in memory, since their records may not be
 * written yet when the next turn comes; others are looked up in the store,
 * on a thread and connection of their own (a report on the query thread
 * never holds a turn up). An id neither knows (an answer from before
 * keyless, or whose record retention has purged) is let through: the
 * provider decides, as before. */
#ifndef KL_CHAINED_H
#define KL_CHAINED_H

#include "core/exchange.h"

/* The table of recent answers' owners (kl_server.answer_owners). */
#define KL_ANSWER_OWNERS_SLOTS 65536

/* The pipeline stage, after authorize: KL_NEXT, KL_DONE (refused), or
 * KL_WAIT while the store is asked. */
enum kl_step kl_chained_run(kl_exchange *ex);

/* At the end of an exchange: the answer it received, if any, is the
 * caller's (remembered until its record is written and long after). */
void kl_chained_note(kl_exchange *ex);

#endif
