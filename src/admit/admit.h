/* Stage 5, admit: spend quotas and rate limits, reserved before forwarding.
 *
 * Every peer checks a budget first and debits after the response, so a
 * burst of concurrent requests sails past the limit. keyless reserves each
 * request's maximum cost (prompt estimate + max output tokens, priced) in
 * every bucket that applies, atomically, before anything is forwarded;
 * settles to the real cost at the end; and extends the reservation while a
 * stream runs, cutting it off in the caller's dialect when a bucket cannot
 * cover it. See buckets.h for the arithmetic. */
#ifndef KL_ADMIT_H
#define KL_ADMIT_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "core/exchange.h"
#include "pipeline.h"

enum kl_step kl_admit_run(kl_exchange *ex);
/* Before pre_request hooks are asked (guard.c): the rate limits a hook
 * cannot change the cost of, checked without reserving anything (the
 * admit stage reserves them after the hooks): requests and concurrency
 * slots, and a token limit with no token left. A caller over one is refused
 * as the admit stage refuses it (429), without a hook call. */
enum kl_step kl_admit_rate_check(kl_exchange *ex);
/* Mid-stream: may the answer go on? False: a bucket cannot cover the usage
 * reported so far, or the tool calls met so far (ex->error_message,
 * cut_kind and cut_class say which). */
bool kl_admit_stream_ok(kl_exchange *ex);
/* The same for tool-call limits only (a whole answer, read before it is
 * relayed: what it cost is spent either way, its calls are not yet made). */
bool kl_admit_tool_calls_ok(kl_exchange *ex);
/* How many bytes make a token where only bytes are known (a prompt before
 * it is answered, a stream's text cut short before its count): the
 * quotas' bytes_per_token, 3 without quotas. */
int64_t kl_admit_bytes_per_token(const kl_exchange *ex);
/* The output a request may be billed when each of its answers is held to
 * per_answer tokens: per_answer times the answers it asks for (chat's n,
 * Gemini's candidateCount), saturating. */
int64_t kl_admit_output_bound(const kl_exchange *ex, int64_t per_answer);
/* The prompt every bucket reserved for the request, in tokens: the body's
 * size at bytes_per_token and the stored context it chains onto whose size
 * keyless knows, not the share for inputs it only points at (which a small
 * bucket may reserve in part). An estimate that leans high. */
int64_t kl_admit_prompt_reserved(kl_exchange *ex);
/* Does a tool-call limit apply (rate_limit.tool_calls_per_minute)? */
bool kl_admit_counts_tool_calls(const kl_exchange *ex);
/* A bucket template for the caller: "daily:<user>" -> "daily:alice@example.com"
 * (<node> is the node name, or the login when there is none). */
const char *kl_quota_bucket_name(kl_exchange *ex, const char *tmpl);
/* A bucket name as the tables keep it: shortened, with a hash of the whole,
 * past KL_BUCKET_NAME_MAX bytes. */
const char *kl_admit_fit_name(kl_exchange *ex, const char *name);
/* Make quota q's bucket called name live, with the balance saved for it
 * before a restart, reserving nothing (a look at it, or a refill). */
struct kl_quota;
struct kl_bucket_spec;
void kl_admit_quota_bucket(kl_exchange *ex, const struct kl_quota *q, const char *name);
/* The spec of quota q's bucket called name. */
void kl_admit_quota_spec(kl_exchange *ex, const struct kl_quota *q, const char *name, struct kl_bucket_spec *out);
/* Each dollar bucket the caller's grants name (only those of capabilities
 * that apply to qualified, "provider/model", unless it is NULL), made to
 * exist (a bucket is created full on first use) and passed to fn. */
void kl_admit_each_dollar_bucket(kl_exchange *ex, const char *qualified,
                                 void (*fn)(void *arg, const char *name), void *arg);
/* Are dollar quotas shared through PostgreSQL (leased) in this config? */
bool kl_quota_pooled(const kl_config *cfg);
/* The dollar buckets the request was charged to (before admit: the ones it
 * will be charged to), as Aperture's hook metadata.quotas: {"<bucket>":
 * {"current": nd, "capacity": nd, "rate": "$5.00/day"}} (a new object; empty
 * when none apply). */
cJSON *kl_admit_quota_states(kl_exchange *ex);
/* What quotas will reserve for the request, before it runs, as Aperture's
 * hook metadata.estimated_cost: {"dollars", "cost_basis", "usage":
 * {"input_tokens" (from the body's size), "output_tokens" (its cap)}}; NULL
 * when the model has no price. */
cJSON *kl_admit_cost_estimate(kl_exchange *ex);
/* Failover to provider p for the same model: the dollar reservations are
 * made again at p's price, in the same buckets (the difference taken or
 * given back); every other reservation stands, as it is the same request.
 * False, with nothing changed, when a dollar quota applies and p's price is
 * unknown or a bucket cannot cover the difference. */
bool kl_admit_reprice(kl_exchange *ex, const struct kl_provider *p);
/* At the end: charge the real amounts and release the rest. */
void kl_admit_settle(kl_exchange *ex);

int  kl_admit_server_init(kl_server *srv);
void kl_admit_server_free(kl_server *srv);

#endif
