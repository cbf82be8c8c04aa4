/* Provider health, shared by the workers: a provider that failed
 * failover.cooldown_after times in a row (the failures failover acts on:
 * unreachable, broken before the request was sent, or an answer in
 * failover.statuses) cools down for failover.cooldown. While it does,
 * requests start at the next provider that may serve them (route/
 * failover.h), instead of each paying for the failure again (a connect
 * timeout is 10 s by default). One request after the cool-down tries it
 * again while the others still pass it over: one more failure starts
 * another cool-down, a success clears its count.
 *
 * Providers are keyed by id, so health survives a reload that keeps the id.
 * An entry is made on a provider's first failure and kept until the gateway
 * stops; slots are published with release stores and read lock-free (every
 * request that succeeds looks its provider up, and none when no provider
 * has failed yet). */
#ifndef KL_HEALTH_H
#define KL_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "core/worker.h"

struct kl_health;

int  kl_health_server_init(kl_server *srv);
void kl_health_server_free(kl_server *srv);

/* The provider answered (ok) or failed as failover counts failures. */
void kl_health_report(kl_server *srv, const char *provider, bool ok, uint32_t cooldown_after,
                      uint32_t cooldown_ms, int64_t now_ms);
/* Is it cooling down now? *fails: its failures in a row. When a cool-down
 * is over, the first request to ask gets false (it probes the provider) and
 * the cool-down is moved on cooldown_ms for the others; *probe_until is then
 * that new end (0 otherwise), for kl_health_probe_unused. Times are
 * monotonic milliseconds (a wall clock stepped back would cool for hours). */
bool kl_health_down(kl_server *srv, const char *provider, uint32_t cooldown_ms, int64_t now_ms,
                    uint32_t *fails, int64_t *probe_until);
/* The request that was to probe the provider ended without its outcome
 * (refused before it was sent, its caller gone): the next request probes
 * instead of the provider being passed over for another whole cool-down,
 * unless an outcome has changed the cool-down since (probe_until). */
void kl_health_probe_unused(kl_server *srv, const char *provider, int64_t probe_until);

/* Calls fn(arg, provider, down) for every provider that has failed since
 * start (for /metrics): down while cooling down or being probed. */
void kl_health_each(kl_server *srv, int64_t now_ms, void (*fn)(void *arg, const char *provider, bool down),
                    void *arg);

#endif
