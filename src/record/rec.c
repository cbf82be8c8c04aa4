#include "record/rec.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

/* Every string member, so sizing and copying walk the same list. */
static const size_t string_fields[] = {
    offsetof(struct kl_rec, login), offsetof(struct kl_rec, display_name),
    offsetof(struct kl_rec, node), offsetof(struct kl_rec, stable_node_id),
    offsetof(struct kl_rec, tags), offsetof(struct kl_rec, identity_source),
    offsetof(struct kl_rec, source_addr), offsetof(struct kl_rec, method),
    offsetof(struct kl_rec, path), offsetof(struct kl_rec, endpoint),
    offsetof(struct kl_rec, dialect), offsetof(struct kl_rec, model_requested),
    offsetof(struct kl_rec, model_served), offsetof(struct kl_rec, provider),
    offsetof(struct kl_rec, error_class), offsetof(struct kl_rec, error_message),
    offsetof(struct kl_rec, tool_names), offsetof(struct kl_rec, stop_reason),
    offsetof(struct kl_rec, session_id), offsetof(struct kl_rec, user_agent),
    offsetof(struct kl_rec, request_headers), offsetof(struct kl_rec, response_headers),
    offsetof(struct kl_rec, instance), offsetof(struct kl_rec, attempts),
    offsetof(struct kl_rec, guardrails), offsetof(struct kl_rec, response_id),
};

#define NFIELDS (sizeof(string_fields) / sizeof(string_fields[0]))

static const char **field(struct kl_rec *r, size_t i)
{
    return (const char **)((char *)r + string_fields[i]);
}

struct kl_rec *kl_rec_pack(const struct kl_rec *src)
{
    /* Text fields are made UTF-8 here, once for both stores: a caller's
     * User-Agent byte 0xff had made PostgreSQL refuse the whole batch. */
    size_t size = sizeof(struct kl_rec), len[NFIELDS];
    bool clean[NFIELDS];
    for (size_t i = 0; i < NFIELDS; i++) {
        const char *s = *field((struct kl_rec *)src, i);
        size_t raw = s ? strlen(s) : 0;
        len[i] = s ? kl_utf8_clean_len_n(s, raw) : 0;
        clean[i] = len[i] == raw;
        if (s)
            size += len[i] + 1;
    }
    if (src->request_body)
        size += src->request_body_len + 1;
    if (src->response_body)
        size += src->response_body_len + 1;
    struct kl_rec *r = malloc(size);
    if (!r)
        abort();
    *r = *src;
    r->packed_size = size;
    char *p = (char *)(r + 1);
    for (size_t i = 0; i < NFIELDS; i++) {
        const char **f = field(r, i);
        if (*f) {
            /* UTF-8 already (every field of almost every record): copied,
             * not walked a second time */
            if (clean[i])
                memcpy(p, *f, len[i] + 1);
            else
                kl_utf8_clean(p, *f);
            *f = p;
            p += len[i] + 1;
        }
    }
    if (src->request_body) {
        memcpy(p, src->request_body, src->request_body_len);
        p[src->request_body_len] = '\0';
        r->request_body = p;
        p += src->request_body_len + 1;
    }
    if (src->response_body) {
        memcpy(p, src->response_body, src->response_body_len);
        p[src->response_body_len] = '\0';
        r->response_body = p;
    }
    return r;
}

void kl_rec_free(struct kl_rec *r)
{
    free(r);
}

const char *kl_rec_state_name(enum kl_rec_state s)
{
    return s == KL_REC_IN_PROGRESS ? "in_progress" : s == KL_REC_INTERRUPTED ? "interrupted" : "done";
}
