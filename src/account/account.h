/* Stage 8, account: watches the provider's answer as it passes to the
 * caller. It reads usage, cost and tool calls from whole responses and from
 * streams, and removes what keyless itself added upstream (the usage chunk
 * of an OpenAI stream that did not ask for one). */
#ifndef KL_ACCOUNT_H
#define KL_ACCOUNT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "core/exchange.h"

/* headers: the response head as relayed ("Name: value\r\n" lines). The
 * body arrives plain: one the provider compressed anyway is inflated
 * before it gets here (core/coding.h; libcurl on https://). */
void kl_account_begin(kl_exchange *ex, int status, bool event_stream, const char *headers);
/* Start the response to the caller with the provider's head, or hold it
 * while a tool policy must read the whole answer first (a non-stream one):
 * kl_account_end then relays it or refuses it with the policy's error. */
void kl_account_respond_start(kl_exchange *ex, int status, const char *headers, int64_t content_length);
/* Pass a piece of the response on to the client (through kl_respond_data).
 * False when the answer must stop here (a quota cannot cover the usage it
 * reports, or it calls a tool the tool policy refuses, or more tools than
 * it allows): ex->cut_off, cut_kind, cut_class and error_message are set,
 * nothing more is forwarded. */
bool kl_account_data(kl_exchange *ex, const char *data, size_t len);
/* Is the answer a stream an error event can end: server-sent events or an
 * AWS event stream? */
bool kl_account_is_event_stream(const kl_exchange *ex);
/* What an Anthropic stream the gateway stops needs before its error event
 * (a text block with message, when no block with content has ended), or
 * NULL (arena). */
const char *kl_account_close_blocks(kl_exchange *ex, const char *message, size_t *len);
/* Is the answer's head held until its first event (kl_account_begin)? */
bool kl_account_head_held(const kl_exchange *ex);
/* After body bytes, or at the end (kl_account_end reads an event the
 * stream left without its blank line): once a held stream's first event
 * has been read, the status it stands for (200, or the status of the
 * provider's error it is, with *error saying which); 0 before that, and
 * after it was said once. The caller then fails over, or releases the
 * head. */
int kl_account_first_event(kl_exchange *ex, const char **error);
/* Send the held head, and the events held with it; from now on events go
 * on as they come. Nothing when the head is not held. */
void kl_account_release_head(kl_exchange *ex);
/* The exchange is over: settle the usage (a stream cut short keeps partial
 * counts, kl_usage_settle) and price it (ex->cost_known, ex->cost_nd; 0
 * when kl_account_unbilled). */
void kl_account_finish(kl_exchange *ex);
/* Did the provider fail the request without serving any of it: an error
 * status, a redirect (keyless follows none), or a 2xx answer that was
 * only its error (a stream's first event: overloaded, throttled, even after
 * the usage its message_start opens with)? Then nothing is billed: the
 * quotas charge nothing and the record costs 0, whatever counts the answer
 * reported. */
bool kl_account_unbilled(const kl_exchange *ex);
/* A 2xx answer the provider ended with its own error (an error event, a
 * Responses stream's response.failed) failed, as the caller's SDK says: it
 * is recorded so (and counted so in /metrics and /api/usage), and one that
 * carried nothing of an answer is charged nothing (kl_admit_settle), as the
 * same failure sent as a status is. */
void kl_account_note_error_end(kl_exchange *ex);
struct kl_usage;
/* What usage u costs on ex's provider (nanodollars): priced as the record
 * prices it, mid-stream too, so a reservation is extended by what will be
 * charged. -1 when there is no price. */
int kl_account_cost(const kl_exchange *ex, const struct kl_usage *u, int64_t *nd);
/* The upstream broke mid-stream: an incomplete event is not relayed (half
 * an event would run into the error event that ends the stream). */
void kl_account_drop_partial(kl_exchange *ex);
/* The response ended (normally or not): forward anything held back. */
void kl_account_end(kl_exchange *ex);
void kl_account_free(kl_exchange *ex);

struct kl_rec;
struct kl_usage;
/* The usage read so far (running totals mid-stream), or NULL. */
const struct kl_usage *kl_account_usage(const kl_exchange *ex);
/* What account learned (usage, cost, tools, captured answer) into a record. */
void kl_account_fill_record(kl_exchange *ex, struct kl_rec *r);
/* The answer, for the hooks told after it (kept only when ex->keep_answer
 * was set before the response began, up to 16 MiB decoded): a whole body
 * parsed, or a stream's events (Gemini's array elements) put back together
 * into one answer, with *events set to their parsed data (caller deletes
 * both). NULL when nothing was kept, the answer was larger, or it is not
 * JSON. */
cJSON *kl_account_answer(kl_exchange *ex, cJSON **events);
/* A stream relayed under guardrails.answers (rules that only log): its
 * answer, assembled, goes through them now (guard/answer.h), before the
 * record is written. A whole answer went through them before it was
 * relayed; one that never was (it broke off, the caller left) is not told
 * to the hooks after it. */
void kl_account_scan_relayed(kl_exchange *ex);
/* The tool calls in an answer from kl_account_answer ([{"name", "params"}]),
 * or NULL for an endpoint without them. */
cJSON *kl_account_tool_calls(const kl_exchange *ex, const cJSON *answer);
/* The request's session id (computed once, on first use), or NULL. */
const char *kl_account_session_id(kl_exchange *ex);

#endif
