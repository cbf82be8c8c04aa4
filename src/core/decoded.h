/* A JSON text with the escapes that can spell a finding decoded, as the
 * provider (or the caller) will read it: \uXXXX (a surrogate pair as one
 * character, a lone surrogate as U+FFFD) and \/. The other escapes (\n,
 * \", \\ ...), and \u escapes of a control character, a quote or a
 * backslash, stay as written: no finding holds one, kl_scan's checks read
 * them as boundaries, and the strings stay where they were. An offset in
 * the decoded text maps back to the bytes it came from (a redaction
 * replaces those): by walking the original from the nearest checkpoint,
 * one kept every KL_DECODED_STRIDE escapes, so the map costs a fraction of
 * the text (a mark per escape cost five times a body of CJK escapes). */
#ifndef KL_DECODED_H
#define KL_DECODED_H

#include <stdbool.h>
#include <stddef.h>

#define KL_DECODED_STRIDE 64

struct kl_decoded_mark {
    size_t at, raw;             /* where an escape starts, in the decoded text and in the original */
};

struct kl_decoded {
    char *text;                 /* malloc: never longer than the original */
    size_t len;
    const char *src;            /* the original (the caller's: it must outlive this) */
    size_t src_len;
    struct kl_decoded_mark *marks;  /* malloc, in order: every KL_DECODED_STRIDE-th decoded escape */
    size_t n;
    bool nested;                /* kl_decode's */
};

/* Does s[0..len) hold an escape kl_decode would decode? */
bool kl_decode_needed(const char *s, size_t len);

/* Does s[0..len) hold a \u escape of a letter, digit, '_', '.' or '-', or a
 * \/? Member names and the values byte filters look for ("usage",
 * "https://") are made of those, so only such an escape can hide one from a
 * byte match ("usag\u0065"); escapes of other characters (non-ASCII text,
 * Go's \u003c for '<') cannot. */
bool kl_decode_word_escaped(const char *s, size_t len);

/* Decode s[0..len) into d (kl_decoded_free when done). nested: also the
 * escapes of a JSON text inside a JSON string, "\\u0041" (a tool call's
 * arguments): for a scan, never for reading member names (decoded.c). */
void kl_decode(const char *s, size_t len, bool nested, struct kl_decoded *d);

/* The original offset of decoded offset x: a start (inside a decoded
 * character: where its escape begins) or, with end, an end (just past the
 * escape of the character before x). */
size_t kl_decoded_raw(const struct kl_decoded *d, size_t x, bool end);

void kl_decoded_free(struct kl_decoded *d);

#endif
