/* Stage 8 for a stream (guardrails.answers, with a rule that blocks or
 * redacts): a streamed answer scanned as it passes, so that what a rule
 * blocks or redacts does not reach the caller, when it can be recognised
 * within stream_hold bytes (what cannot is recorded once the stream ends).
 *
 * A model spells a secret across many events (a token or two each), so an
 * event alone says little. Each event's text deltas (a choice's content, a
 * tool call's arguments, a content block) are added to their channel's
 * text, and that text is scanned where it grew, with stream_hold bytes
 * before it; the event is held until stream_hold more bytes of each
 * channel it added to have come, or that channel's block, choice or item
 * has ended, or the stream has (a JWT, recognised only once its signature
 * begins, is held from its "eyJ" until whole). A finding that
 * needs no more than stream_hold bytes to be recognised is therefore seen
 * before any of it is relayed, and one that goes on growing (a private key)
 * is followed from where it began. Everything else in an event (names,
 * identifiers, the whole text a Responses stream repeats at the end) is
 * scanned in the event alone.
 *
 * block: the rest of the answer is withheld, the stream ends with an error
 * event in the caller's dialect. redact: the held events are rewritten,
 * their text with [REDACTED:kind] where the finding was. An event nothing
 * was taken from is relayed byte for byte as it came. */
#ifndef KL_GUARD_STREAM_H
#define KL_GUARD_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "core/exchange.h"

typedef struct kl_guard_stream kl_guard_stream;

/* What account does with bytes that may go on to the caller; mark is the
 * one given with the event they are (or were rewritten from). */
typedef void (*kl_guard_relay_fn)(kl_exchange *ex, const char *data, size_t len, int mark);

/* How the stream's events are framed, for those rewritten. */
enum kl_guard_framing {
    KL_GUARD_SSE,               /* server-sent events */
    KL_GUARD_FRAMES,            /* an AWS event stream (Bedrock) */
    KL_GUARD_ARRAY,             /* Gemini's JSON array: each element an event, the bytes between them too */
};

/* kind: the answer's enum kl_usage_kind (account/usage.h). */
kl_guard_stream *kl_guard_stream_new(kl_exchange *ex, int kind, enum kl_guard_framing framing,
                                     kl_guard_relay_fn relay);

/* One whole event as it came (raw, len), its SSE event name or Converse
 * event type (ev, NULL for none), and its data: JSON (an InvokeModel
 * chunk's decoded), other bytes to scan as they are (between array
 * elements), or NULL when it carries none to read (a comment, an
 * exception). It is relayed when it may be; a finding whose rule blocks
 * sets ex->cut_off (why in ex->error_message) and nothing held goes on, as
 * does an event read otherwise than the caller would (data that is not JSON
 * where it should be, a repeated member, more parts or channels than are
 * followed). */
void kl_guard_stream_event(kl_guard_stream *s, kl_exchange *ex, const char *raw, size_t len, const char *ev,
                           size_t evl, const char *data, size_t dl, int mark);

/* The stream of one answer stops before a tool call a policy refuses
 * (account.c): the answer's text before the call is whole, so what is held goes on as at
 * the stream's end (a stop for anything else drops it: the text may go on
 * in what is not relayed, a finding with it). */
void kl_guard_stream_flush(kl_guard_stream *s, kl_exchange *ex);

/* An event that cannot be read (an AWS event stream message that does not
 * check out, an InvokeModel chunk without one base64 "bytes"): the stream
 * is stopped, as for a scan that failed, since the caller might read it. */
void kl_guard_stream_unreadable(kl_guard_stream *s, kl_exchange *ex, const char *why);

/* The stream has ended: what is held goes on if it ended as it should
 * (not cut off, no error class: a stream broken off may end inside a
 * finding), and the record's notes say what was done. Each channel's text
 * is then scanned whole (up to 16 MiB): true when a finding that blocks or
 * redacts went on after all (it matched only once longer than
 * stream_hold), so the answer should be kept neither in the capture nor
 * for the hooks after it. Called again, it does nothing. */
bool kl_guard_stream_end(kl_guard_stream *s, kl_exchange *ex);

void kl_guard_stream_free(kl_guard_stream *s);

#endif
