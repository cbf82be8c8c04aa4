/* Server-sent events split incrementally: bytes go in as they arrive from
 * the provider, whole events come out as soon as their blank line does.
 * Only an incomplete trailing event is held back. */
#ifndef KL_SSE_H
#define KL_SSE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct kl_sse {
    char *buf;                  /* an incomplete event carried over */
    size_t len, cap;
    size_t scanned;             /* buf[0..scanned) holds no event end: scanning resumes there */
    bool scanned_mid;           /* ... in the middle of a line (one that is not empty) */
    bool lf_pending;            /* the last event ended on a '\r' that was the last byte so far */
} kl_sse;

typedef void (*kl_sse_event_fn)(void *arg, const char *raw, size_t len);

/* Call on_event for every complete event (raw bytes, terminator included),
 * as soon as its terminator is in: an event ending in "\r\r" or "\r\n\r" comes
 * out at that '\r', and a '\n' following it in the next bytes leads the next
 * event's raw bytes (so the bytes handed out are always the bytes fed). */
void kl_sse_feed(kl_sse *s, const char *data, size_t len, kl_sse_event_fn on_event, void *arg);
/* The stream ended: hand over whatever incomplete event remains. */
void kl_sse_flush(kl_sse *s, kl_sse_event_fn on_event, void *arg);
/* The stream broke: forget an incomplete event (relayed half, it would run
 * into the error event that follows it). */
void kl_sse_discard(kl_sse *s);
void kl_sse_free(kl_sse *s);

/* Fields of one raw event. *data is a malloc'd NUL-terminated string of the
 * data lines joined with '\n' (NULL when the event has none); the event name
 * points into raw (not terminated), *event_len 0 when absent. data and
 * data_len NULL: only the name is wanted, and nothing is copied. */
void kl_sse_fields(const char *raw, size_t len, const char **event, size_t *event_len,
                   char **data, size_t *data_len);

/* Has the event a line that is no field the SSE standard names ("data",
 * "event", "id", "retry") nor a comment? Readers that are not the
 * standard's (the Gemini SDKs trim a line before looking for "data:", and
 * google-genai takes a line of bare JSON for a chunk) may read it as data. */
bool kl_sse_unknown_field(const char *raw, size_t len);

/* Where the JSON object of an event written as bare JSON, with no field,
 * starts (past leading white space): how Google sends a Gemini stream's
 * error (kl_dialect_error_tail). len when the event does not begin with
 * '{'. */
size_t kl_sse_bare_json(const char *raw, size_t len);

#endif
