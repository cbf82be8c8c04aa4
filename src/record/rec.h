/* One request record: a self-contained copy of what the exchange learned,
 * in a single allocation, so it can cross to the writer thread after the
 * exchange (and its arena) is gone. */
#ifndef KL_REC_H
#define KL_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kl_rec_state {
    KL_REC_IN_PROGRESS,         /* forwarded upstream, not finished yet */
    KL_REC_DONE,
    KL_REC_INTERRUPTED,         /* the gateway died while it ran */
};

struct kl_rec {
    char id[40];
    enum kl_rec_state state;
    int64_t started_ms, first_byte_ms, ended_ms;    /* Unix ms; 0 = not yet */
    int64_t latency_ms, ttft_ms;                    /* -1 = not applicable */
    /* who */
    const char *login, *display_name, *node, *stable_node_id, *tags, *identity_source, *source_addr;
    /* what */
    const char *method, *path, *endpoint, *dialect;
    const char *model_requested, *model_served, *provider;
    bool stream;
    int status, upstream_status;
    const char *error_class, *error_message;
    /* usage and cost */
    int usage_known;            /* 0 none, 1 the provider's own counts, 2 a stream cut short before them:
                                   its running counts, output at least what its text came to (usage.h) */
    int64_t input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens;
    bool cost_known;
    int64_t cost_nanodollars;
    int64_t bytes_in, bytes_out;
    int tool_calls;
    const char *tool_names, *stop_reason, *session_id, *user_agent;
    /* captures (NULL when not captured) */
    const char *request_headers, *response_headers;
    const char *request_body, *response_body;
    size_t request_body_len, response_body_len;
    const char *instance;       /* the gateway that wrote it */
    const char *attempts;       /* providers failed over from, JSON text, or NULL */
    const char *guardrails;     /* what guardrails and hooks did (guard/notes.h), JSON text, or NULL */
    const char *response_id;    /* the stored Responses answer it received (authorize/owner.h), or NULL */
    /* A final record whose in-progress record was written before: the
     * store updates that row instead of writing a whole new one. Only a
     * hint (the store falls back to an insert when the row is not there);
     * the writer clears it when it drops the in-progress record. */
    bool begun;
    size_t packed_size;         /* the bytes kl_rec_pack allocated (the writer's queue counts them) */
};

/* Strings a record points at are packed behind it in one malloc block;
 * kl_rec_pack copies src (whose strings live anywhere) into such a block. */
struct kl_rec *kl_rec_pack(const struct kl_rec *src);
void kl_rec_free(struct kl_rec *r);

const char *kl_rec_state_name(enum kl_rec_state s);

#endif
