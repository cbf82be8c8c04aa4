/* Built-in guardrails (the `guardrails` section): secrets and personal data
 * found in a request body (and in an answer, guard/answer.h) by
 * Hyperscan, one compiled database per configuration, and blocked,
 * redacted or logged. */
#ifndef KL_SCAN_H
#define KL_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "core/arena.h"
#include "core/config.h"

enum kl_scan_action { KL_SCAN_OFF, KL_SCAN_LOG, KL_SCAN_REDACT, KL_SCAN_BLOCK };

struct kl_guardrails;           /* compiled rules (config snapshot) */
struct kl_scan_scratch;         /* per thread: Hyperscan's scratch space */

void kl_guardrails_read_config(kl_cfg_ctx *c, const cJSON *v);

/* Are answers scanned too (guardrails.answers)? false for NULL. */
bool kl_guardrails_answers(const struct kl_guardrails *g);
/* How many bytes of a streamed answer's text are held back while it is
 * scanned (guardrails.stream_hold; guard/stream.h). */
#define KL_STREAM_HOLD_DEFAULT 256
size_t kl_guardrails_stream_hold(const struct kl_guardrails *g);
/* Are answers scanned, with a rule that redacts? */
bool kl_guardrails_redacts_answers(const struct kl_guardrails *g);
/* Does a rule of this kind block or redact? */
bool kl_guardrails_stops(const struct kl_guardrails *g, const char *kind);
/* The strongest action any rule has (OFF for NULL). */
enum kl_scan_action kl_guardrails_strongest(const struct kl_guardrails *g);

/* What a scan found and what to do about it. */
struct kl_scan_result {
    enum kl_scan_action action; /* the strongest action of any finding; OFF when none */
    const char *kinds;          /* the kinds found, comma-separated (arena), or NULL */
    const char *block_kinds;    /* those whose action is block, or NULL */
    char *body;                 /* with action REDACT: the body with the findings replaced (arena) */
    size_t body_len;
    size_t redacted;            /* how many spans were replaced */
    size_t files;               /* of them, in how many base64 text files (encoded again: guard/attach.h) */
    bool overflow;              /* more findings than are kept track of: block_kinds says so */
};

/* Bytes [from, to) of a body. */
struct kl_scan_span {
    size_t from, to;
};

/* Scan body (any bytes). A redaction replaces whole escapes only and stays
 * inside one JSON string, so a redacted JSON body stays JSON; a finding that
 * cannot be taken out that way makes the result BLOCK. A finding (or a
 * base64 file) that begins inside one of the nskip spans, in order, counts
 * for nothing (guard/signed.h). scratch is the calling thread's (*scratch
 * NULL at first; kl_scan_scratch_free at the end). -1 with why when the
 * scan itself failed. */
int kl_scan(const struct kl_guardrails *g, struct kl_scan_scratch **scratch, const char *body, size_t len,
            const struct kl_scan_span *skip, size_t nskip, kl_arena *a, struct kl_scan_result *out,
            const char **why);

/* One finding in a plain text: its bytes [from, to), its rule's action and
 * kind (the configuration's). */
struct kl_scan_hit {
    size_t from, to;
    enum kl_scan_action action;
    const char *kind;
};

/* Every finding in text (a stream's text as it is put together, not JSON:
 * guard/stream.c), in *hits (malloc, the caller frees it; NULL when none).
 * -1 with why when the scan failed, or found more than it keeps track of. */
int kl_scan_text(const struct kl_guardrails *g, struct kl_scan_scratch **scratch, const char *text, size_t len,
                 struct kl_scan_hit **hits, size_t *n, const char **why);

/* [*from, *to) of text[0..len) widened to whole UTF-8 characters: a
 * configured pattern (\S{1,11}, .{0,20}) counts bytes, and a mark put in
 * place of part of a character would leave the rest of it, which is no
 * UTF-8 (a provider refuses the body; an SDK reads U+FFFD). */
void kl_scan_whole_chars(const char *text, size_t len, size_t *from, size_t *to);

void kl_scan_scratch_free(struct kl_scan_scratch *s);

#endif
