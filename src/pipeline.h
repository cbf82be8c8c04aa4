/* The request pipeline: the one place that knows the order of the stages.
 * See pipeline.c for the list. */
#ifndef KL_PIPELINE_H
#define KL_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/exchange.h"

/* What a stage tells the pipeline. */
enum kl_step {
    KL_NEXT,    /* go on to the next stage */
    KL_WAIT,    /* the stage went asynchronous; it calls kl_pipeline_resume */
    KL_DONE,    /* the stage answered (an error, or a local reply) */
};

/* listen: a request head has arrived (its body is read in the body
 * stage, kl_conn_body). */
void kl_pipeline_start(kl_exchange *ex);
/* An asynchronous stage finished: continue with the stage after it. */
void kl_pipeline_resume(kl_exchange *ex);
/* An asynchronous stage has its answer: KL_NEXT resumes with the next
 * stage, KL_DONE finishes (the stage has responded). */
void kl_pipeline_continue(kl_exchange *ex, enum kl_step step);
/* Refuse ex outside a stage: a head refused before the pipeline, a body
 * refused while it arrives (413, 408, malformed chunks). */
void kl_pipeline_reject(kl_exchange *ex, enum kl_err_kind kind, enum kl_error_class ec,
                        const char *message);
/* The client went away: cancel whatever is running, record, free. */
void kl_pipeline_client_gone(kl_exchange *ex, enum kl_error_class why);
/* The response is complete (or has failed): account, record, free. */
void kl_pipeline_finish(kl_exchange *ex);

/* Answer with a gateway error in the caller's dialect. Returns KL_DONE so a
 * stage can `return kl_fail(...)`. */
enum kl_step kl_fail(kl_exchange *ex, enum kl_err_kind kind, enum kl_error_class ec,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* upstream -> pipeline: the provider's answer, passed on through account.
 * headers are preformatted "Name: value\r\n" lines, already filtered. */
void kl_pipeline_response_head(kl_exchange *ex, int status, const char *headers,
                               int64_t content_length, bool event_stream);
/* False: account stopped the answer (a quota cannot cover it); the
 * upstream transfer must end and kl_pipeline_upstream_failed follow. */
bool kl_pipeline_response_data(kl_exchange *ex, const char *data, size_t len);
/* The provider's answer is complete. */
void kl_pipeline_response_end(kl_exchange *ex);
/* The upstream transfer failed (before or after the response began). */
void kl_pipeline_upstream_failed(kl_exchange *ex, enum kl_err_kind kind,
                                 enum kl_error_class ec, const char *message);

#endif
