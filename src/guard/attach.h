/* Text files a request carries in base64 (a .env as Gemini inlineData, a
 * Bedrock Converse document's bytes, an OpenAI file_data or data: URL, an
 * Anthropic base64 source, a Bedrock CountTokens body): the provider reads
 * them decoded, so the guardrails scan them decoded (guard/scan.c), and a
 * redaction is encoded again in their place. Images, PDFs and other binary
 * files are left alone: what they hold is not text a pattern can find. */
#ifndef KL_ATTACH_H
#define KL_ATTACH_H

#include <stdbool.h>
#include <stddef.h>

struct kl_attachment {
    size_t from, to;            /* the base64 in the body: inside its JSON string (after a data: URL's comma) */
    char *text;                 /* decoded (malloc, NUL-terminated) */
    size_t len;
    bool url_safe;              /* written with - and _ (base64url) */
    bool padded;                /* padded to a multiple of four, or needing none */
};

/* The attachments at the places at[0..n) of body (a JSON request, escapes
 * decoded) where the guardrails' scan found the opening of a string value
 * of a member named "data", "bytes", "file_data" or "body" (an offset times two),
 * or the "data:" of a data: URL (an offset times two, plus one): those
 * whose string (after a ";base64," media type's comma) is base64, line
 * breaks and spaces allowed, and decodes to text. *out is malloc'd (NULL
 * when none); free with kl_attachments_free. */
size_t kl_attachments_at(const char *body, size_t len, const size_t *at, size_t n, struct kl_attachment **out);

/* text (len bytes) encoded as a's base64 was written: its alphabet and
 * padding. malloc'd, NUL-terminated, *out_len its length. */
char *kl_attachment_encode(const struct kl_attachment *a, const char *text, size_t len, size_t *out_len);

void kl_attachments_free(struct kl_attachment *v, size_t n);

#endif
