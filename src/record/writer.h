/* The writer thread: the only writer of the record store. Workers hand it
 * finished records through a bounded queue and never wait for the disk.
 *
 * Slots are reserved before work starts, so a record is never dropped for
 * want of room (only one the store itself refuses, see kl_store_write): an
 * exchange reserves the slot for its final record when it arrives (a full
 * queue refuses the request with 503 instead), and one more when it is
 * still running 100 ms after it was forwarded, for the "in progress" record that
 * makes a request cut short by kill -9 visible as interrupted after a
 * restart (record.c; none when the queue is full then). */
#ifndef KL_WRITER_H
#define KL_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record/rec.h"
#include "record/store.h"

struct kl_writer;

struct kl_writer_opts {
    /* Run on the writer thread about once a second and once at the end,
     * with last set (quota balances are saved, leases returned this way). */
    void (*tick)(struct kl_store *s, void *arg, bool last);
    void *tick_arg;
    size_t queue;               /* records */
    size_t queue_bytes;         /* their memory (captures are most of it); 0: no bound */
    size_t batch;               /* records per transaction */
    uint32_t wait_ms;           /* longest a request waits for a batch (kl_writer_admit); 0: 100 */
    int64_t retention_ms;       /* 0 = keep forever */
    bool purge_captures_only;   /* retention removes captures, keeps the metric rows */
    bool spare_queued;          /* retention leaves records on the export queue alone */
};

/* Takes ownership of store. */
struct kl_writer *kl_writer_start(struct kl_store *store, const struct kl_writer_opts *o);
/* Write everything queued, then stop the thread and close the store. */
void kl_writer_stop(struct kl_writer *w);

/* Reserve n slots; false when the queue cannot take them. */
bool kl_writer_reserve(struct kl_writer *w, size_t n);
/* Reserve the slot for a new request's final record, first waiting for a
 * batch when the writer has fallen behind (see writer.c); false when the
 * queue is full, or holds queue_bytes of records already. */
bool kl_writer_admit(struct kl_writer *w);
/* Give back reserved slots that will not be used. */
void kl_writer_unreserve(struct kl_writer *w, size_t n);
/* Queue a record into a reserved slot (takes ownership). */
void kl_writer_push(struct kl_writer *w, struct kl_rec *r);

struct kl_writer_stats {
    uint64_t written, queued, failures;
    uint64_t refused;           /* records the store refused (logged, not kept) */
    uint64_t waits;             /* requests that waited for a batch (kl_writer_admit) */
};
void kl_writer_stats(struct kl_writer *w, struct kl_writer_stats *out);

#endif
