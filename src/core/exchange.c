#include "core/exchange.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/text.h"

int64_t kl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t kl_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timespec kl_mono_deadline(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

void kl_request_id(char out[40], int64_t ms, uint16_t rand_a, uint64_t rand_b)
{
    /* clamped as kl_store_id_floor clamps, so time ranges by id hold for
     * every start a clock can report */
    uint64_t t = ms < 0 ? 0 : (uint64_t)ms > 0xffffffffffffull ? 0xffffffffffffull : (uint64_t)ms;
    rand_b = (rand_b & 0x3fffffffffffffffull) | 0x8000000000000000ull;
    /* 8-4-4-4-12 hex digits (printf here showed in per-request profiles) */
    kl_fmt_hex(out, t >> 16, 8);
    out[8] = '-';
    kl_fmt_hex(out + 9, t, 4);
    out[13] = '-';
    kl_fmt_hex(out + 14, 0x7000u | (rand_a & 0x0fffu), 4);
    out[18] = '-';
    kl_fmt_hex(out + 19, rand_b >> 48, 4);
    out[23] = '-';
    kl_fmt_hex(out + 24, rand_b, 12);
    out[36] = '\0';
}

/* rand_a: the worker's index and counter, so ids never collide across
 * workers; rand_b: random. */
static void make_id(kl_worker *w, int64_t ms, char out[40])
{
    uint16_t rand_a = (uint16_t)(((uint64_t)w->index << 8 | (w->seq & 0xff)) & 0x0fff);
    kl_request_id(out, ms, rand_a, xorshift(&w->rng));
}

kl_exchange *kl_exchange_new(kl_worker *w)
{
    kl_exchange *ex = calloc(1, sizeof(*ex));
    if (!ex)
        abort();
    kl_arena_init(&ex->arena);
    ex->worker = w;
    ex->cfg = kl_config_ref(w->cfg);
    ex->t_start_ns = kl_now_ns();
    ex->wall_start_ms = kl_wall_ms();
    ex->max_output_tokens = -1;
    ex->thinking_budget = -1;
    ex->reasoning_room = -1;
    ex->choices = 1;
    w->seq++;
    make_id(w, ex->wall_start_ms, ex->id);
    kl_owner_add(&w->inflight, 1);
    return ex;
}

/* The id is made again: reports bound time ranges and order pages by id
 * (kl_store_id_floor), so an id 30 s after its started_at put the record
 * outside an until= that its start is inside. */
void kl_exchange_backdate(kl_exchange *ex, uint32_t ms)
{
    ex->t_start_ns -= (int64_t)ms * 1000000;
    ex->wall_start_ms -= ms;
    make_id(ex->worker, ex->wall_start_ms, ex->id);
}

void kl_exchange_free(kl_exchange *ex)
{
    kl_owner_add(&ex->worker->inflight, (uint64_t)-1);
    kl_owner_add(&ex->worker->body_bytes, (uint64_t)0 - (ex->body_charged + ex->up_body_charged + ex->answer_charged));
    free(ex->body);
    kl_config_unref(ex->cfg);
    kl_arena_free(&ex->arena);
    free(ex);
}

bool kl_exchange_charge(kl_exchange *ex, size_t *held, size_t bytes, size_t limit)
{
    _Atomic uint64_t *total = &ex->worker->body_bytes;
    if (bytes > *held && limit && atomic_load_explicit(total, memory_order_relaxed) + (bytes - *held) > limit)
        return false;
    kl_owner_add(total, (uint64_t)bytes - (uint64_t)*held);
    *held = bytes;
    return true;
}

size_t kl_body_memory(const kl_worker *w)
{
    const struct kl_listen_cfg *l = &w->cfg->listen;
    size_t total = l->max_body_memory ? l->max_body_memory : w->server->body_memory;
    size_t n = (total + (size_t)w->server->nworkers - 1) / (size_t)w->server->nworkers;
    return n > l->max_body_size + 1 ? n : l->max_body_size + 1;
}

void kl_body_memory_return(kl_worker *w, size_t bytes)
{
    kl_owner_add(&w->body_bytes, (uint64_t)0 - bytes);
}

void kl_body_memory_full(kl_worker *w)
{
    int64_t now = kl_wall_ms();
    if (now - w->body_full_warned_ms < 10000)
        return;
    kl_warn("worker %d: request bodies and held answers take %llu bytes, its share of listen.max_body_memory (%zu): "
            "refusing more with 503 until some are done", w->index, (unsigned long long)w->body_bytes,
            kl_body_memory(w));
    w->body_full_warned_ms = now;
}

void kl_exchange_take_facts(kl_exchange *ex, const struct kl_request_facts *f)
{
    ex->stream = f->stream;
    ex->max_output_tokens = f->max_output_tokens;
    ex->thinking_budget = f->thinking_budget;
    ex->reasons = f->reasons;
    ex->reasoning_declined = f->reasoning_declined;
    ex->choices = f->choices;
    ex->include_usage = f->has_include_usage;
    ex->body_map = f->map;
}

const char *kl_error_class_name(enum kl_error_class ec)
{
    static const char *names[] = {
        [KL_EC_NONE] = "",
        [KL_EC_BAD_REQUEST] = "bad_request",
        [KL_EC_NOT_FOUND] = "not_found",
        [KL_EC_METHOD] = "method_not_allowed",
        [KL_EC_TOO_LARGE] = "too_large",
        [KL_EC_UNAUTHENTICATED] = "unauthenticated",
        [KL_EC_FORBIDDEN] = "forbidden",
        [KL_EC_RATE_LIMITED] = "rate_limited",
        [KL_EC_QUOTA] = "quota_exceeded",
        [KL_EC_UNAVAILABLE] = "unavailable",
        [KL_EC_UPSTREAM_UNREACHABLE] = "upstream_unreachable",
        [KL_EC_UPSTREAM_RESET] = "upstream_reset",
        [KL_EC_UPSTREAM_TIMEOUT] = "upstream_timeout",
        [KL_EC_UPSTREAM_ERROR] = "upstream_error",
        [KL_EC_CLIENT_CLOSED] = "client_closed",
        [KL_EC_STREAM_INTERRUPTED] = "stream_interrupted",
        [KL_EC_SHUTDOWN] = "shutdown",
        [KL_EC_INTERNAL] = "internal",
        [KL_EC_BLOCKED] = "blocked",
        [KL_EC_PROVIDER_DOWN] = "provider_down",
        [KL_EC_CLIENT_TIMEOUT] = "client_timeout",
    };
    return names[ec];
}
