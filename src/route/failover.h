/* Failover, part of stage 6 (route): when the provider chosen for a request
 * fails before the caller got anything (unreachable, a connection reset or
 * a connect timeout before any answer, or an answer whose status is in
 * failover.statuses: 429 and 5xx by default), the same request goes to the
 * next provider that serves the same model, and the caller sees one answer.
 *
 * The next provider must be one the caller could have been routed to under
 * exactly the same policy: enabled, speaking the endpoint's API, listing
 * the same model id, allowed by the caller's grants, and with every grant
 * capability applying to it as it applies to the failed one. Then the guard,
 * tool policy and quota decisions already made hold for it unchanged, and
 * only the dollar reservation is made again at its price. A model asked for
 * by a qualified name ("openai/gpt-4o") names its provider and never fails
 * over; nor do passthrough providers (the caller's credential is for the
 * provider it named), nor a request pre_request hooks were asked about
 * (they are told the provider and may judge by it). */
#ifndef KL_FAILOVER_H
#define KL_FAILOVER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/exchange.h"
#include "pipeline.h"

/* A failed answer that fails over is read to its end, so its connection
 * can be reused, but for at most this long and 64 KiB: then it is cut. */
#define KL_FAILOVER_DRAIN_MS 1000
#define KL_FAILOVER_DRAIN_BYTES 65536

/* One provider that failed, as the record keeps it. */
struct kl_attempt {
    const char *provider;
    int status;                     /* its answer's status, or 0 when there was none */
    enum kl_error_class error_class;
    const char *error;
    int64_t at_ms;                  /* when it failed, from the request's start */
};

/* Does this failure of the current provider fail over? status: the status
 * it answered with; 0 for a transport failure of class ec. Only before the
 * caller got anything. */
bool kl_failover_wanted(const kl_exchange *ex, int status, enum kl_error_class ec);

/* Tell provider health (route/health.h) how the current provider did:
 * status, the status it answered with (a failure when it is one failover
 * acts on); 0 for a transport failure of class ec. */
void kl_failover_observe(kl_exchange *ex, int status, enum kl_error_class ec);
/* At the end of the exchange: a provider it was to probe after a cool-down
 * and never asked (refused before it was sent, its caller gone) is left for
 * the next request to probe. */
void kl_failover_end(kl_exchange *ex);

/* Right after authorize, before guard, hooks and quotas see the provider:
 * one that cools down after failures is passed over for the next that may
 * serve the request (an attempt of class provider_down, not counted in
 * max_attempts), unless there is none. A pipeline stage; a failover calls it
 * too. */
enum kl_step kl_failover_health_run(kl_exchange *ex);

/* Could a failure of the current provider fail over: is there a provider
 * to go to, with attempts left? Whether the quota covers its price is not
 * asked. For what only waits on a failover that may come (a stream's head
 * held until its first event shows it is no error, account.c). */
bool kl_failover_possible(const kl_exchange *ex);

/* Find the next provider, with the quota reservation moved to its price,
 * and keep the current provider's failure for the record; NULL when there
 * is none (no other provider qualifies, the attempts are used up, or none
 * can be reserved for). Does not switch: see kl_failover_switch. */
const struct kl_provider *kl_failover_next(kl_exchange *ex, int status, enum kl_error_class ec,
                                           const char *why);

/* Count the failure kept by kl_failover_next, make p the exchange's
 * provider and clear what the failed attempt left, so stage 6 (route) can
 * build the request for p. */
void kl_failover_switch(kl_exchange *ex, const struct kl_provider *p);

/* A failover decided on an answer's status will not happen (the client
 * left, the gateway stops): that answer's status is the current
 * provider's again. */
void kl_failover_abandon(kl_exchange *ex);

/* The failed attempts as JSON text for the record
 * ([{"provider","status","error_class","error","at_ms"}, ...]), or NULL
 * when the first provider answered. */
const char *kl_failover_attempts_json(kl_exchange *ex);

#endif
