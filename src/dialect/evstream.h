/* AWS event stream (application/vnd.amazon.eventstream): the binary framing
 * of Bedrock's streamed answers (InvokeModelWithResponseStream,
 * ConverseStream). A message is a 12-byte prelude (total length, headers
 * length, CRC32 of those 8 bytes), typed headers, a payload and a CRC32 of
 * everything before it; all integers big-endian.
 *
 * kl_evs splits a byte stream into messages as they complete, like kl_sse
 * does for server-sent events; kl_evs_decode reads one message's headers;
 * kl_evs_encode builds one (keyless's own error message at the end of a
 * stream). */
#ifndef KL_EVSTREAM_H
#define KL_EVSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"

/* Larger messages are taken for a broken stream: Bedrock's payloads are
 * events of a few KiB (a base64 chunk, one Converse event). */
#define KL_EVS_MAX_MESSAGE (24u << 20)

typedef struct kl_evs {
    char *buf;                  /* an incomplete message carried over (malloc) */
    size_t len, cap;
    bool broken;                /* a prelude that cannot be right: no boundary can be trusted after it */
} kl_evs;

/* raw[0..len) is one message when ok; when !ok it is bytes that are not a
 * verified message: one whose message CRC is wrong (its boundaries are
 * known), or everything from a broken prelude on (handed out as it comes). */
typedef void (*kl_evs_fn)(void *arg, const char *raw, size_t len, bool ok);

void kl_evs_feed(kl_evs *s, const char *data, size_t len, kl_evs_fn fn, void *arg);
/* The stream ended: an incomplete message left over is handed out as !ok. */
void kl_evs_flush(kl_evs *s, kl_evs_fn fn, void *arg);
/* The stream broke: forget an incomplete message. */
void kl_evs_discard(kl_evs *s);
void kl_evs_free(kl_evs *s);

/* The headers keyless reads (pointers into the message, not terminated;
 * len 0 when absent or not a string) and the payload. */
struct kl_evs_msg {
    const char *message_type, *event_type, *exception_type, *content_type;
    size_t message_type_len, event_type_len, exception_type_len, content_type_len;
    const char *error_code;     /* an "error" message's :error-code, or NULL */
    size_t error_code_len;
    const char *payload;
    size_t payload_len;
};

/* Read one message whose framing kl_evs checked. -1 when its headers do not
 * parse (a length past their end, an unknown value type). */
int kl_evs_decode(const char *raw, size_t len, struct kl_evs_msg *m);

/* One message with n string headers (names[i]: values[i]) and the payload,
 * in the arena; *out_len its length (it holds NUL bytes). */
char *kl_evs_encode(kl_arena *a, const char *const *names, const char *const *values, size_t n,
                    const char *payload, size_t payload_len, size_t *out_len);

/* Standard base64 (with padding) decoded into the arena, NUL-terminated;
 * NULL when it is not base64. */
char *kl_base64_decode(kl_arena *a, const char *s, size_t len, size_t *out_len);
/* The same into *buf (malloc, grown to fit; the caller frees it): a stream's
 * chunks decoded one after another in one buffer, not one arena copy each. */
char *kl_base64_decode_buf(const char *s, size_t len, char **buf, size_t *cap, size_t *out_len);

#endif
