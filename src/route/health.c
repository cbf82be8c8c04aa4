#include "route/health.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

#define NSLOTS 1024         /* open addressing; more providers than this are not tracked */

struct entry {
    _Atomic uint32_t fails;         /* failures in a row */
    _Atomic int64_t down_until_ms;  /* monotonic ms; 0: healthy */
    char id[];
};

struct kl_health {
    pthread_mutex_t lock;           /* taken to add an entry and to change one's count */
    _Atomic size_t n;
    _Atomic(struct entry *) slot[NSLOTS];
};

int kl_health_server_init(kl_server *srv)
{
    struct kl_health *h = calloc(1, sizeof(*h));
    if (!h)
        abort();
    pthread_mutex_init(&h->lock, NULL);
    srv->health = h;
    return 0;
}

void kl_health_server_free(kl_server *srv)
{
    struct kl_health *h = srv->health;
    if (!h)
        return;
    for (size_t i = 0; i < NSLOTS; i++)
        free(atomic_load(&h->slot[i]));
    pthread_mutex_destroy(&h->lock);
    free(h);
    srv->health = NULL;
}

static size_t hash(const char *s)
{
    return (size_t)(kl_fnv64(KL_FNV64_START, s, strlen(s)) % NSLOTS);
}

/* The entry for id, or NULL; with add, made when missing (NULL only when
 * the table is full). */
static struct entry *find(struct kl_health *h, const char *id, bool add)
{
    size_t i = hash(id);
    for (size_t k = 0; k < NSLOTS; k++, i = (i + 1) % NSLOTS) {
        struct entry *e = atomic_load_explicit(&h->slot[i], memory_order_acquire);
        if (!e)
            break;
        if (strcmp(e->id, id) == 0)
            return e;
    }
    if (!add)
        return NULL;
    pthread_mutex_lock(&h->lock);
    struct entry *found = NULL;
    i = hash(id);
    for (size_t k = 0; k < NSLOTS; k++, i = (i + 1) % NSLOTS) {
        struct entry *e = atomic_load_explicit(&h->slot[i], memory_order_relaxed);
        if (e && strcmp(e->id, id) == 0) {
            found = e;
            break;
        }
        if (!e) {
            size_t len = strlen(id);
            found = calloc(1, sizeof(*found) + len + 1);
            if (!found)
                abort();
            memcpy(found->id, id, len + 1);
            atomic_store_explicit(&h->slot[i], found, memory_order_release);
            atomic_fetch_add(&h->n, 1);
            break;
        }
    }
    pthread_mutex_unlock(&h->lock);
    return found;
}

void kl_health_report(kl_server *srv, const char *provider, bool ok, uint32_t cooldown_after,
                      uint32_t cooldown_ms, int64_t now_ms)
{
    struct kl_health *h = srv->health;
    if (!h || !cooldown_ms)
        return;
    struct entry *e;
    if (ok) {
        /* the common case: nothing has ever failed, or this provider has
         * not, or not lately: no lock */
        e = atomic_load_explicit(&h->n, memory_order_relaxed) ? find(h, provider, false) : NULL;
        if (!e || (!atomic_load(&e->fails) && !atomic_load(&e->down_until_ms)))
            return;
    } else if (!(e = find(h, provider, true))) {
        return;
    }
    /* count and cool-down change together, or a success racing a failure
     * could leave a provider cooling down with no failure counted */
    pthread_mutex_lock(&h->lock);
    if (ok) {
        atomic_store(&e->fails, 0);
        atomic_store(&e->down_until_ms, 0);
    } else if (atomic_fetch_add(&e->fails, 1) + 1 >= cooldown_after) {
        atomic_store(&e->down_until_ms, now_ms + (int64_t)cooldown_ms);
    }
    pthread_mutex_unlock(&h->lock);
}

bool kl_health_down(kl_server *srv, const char *provider, uint32_t cooldown_ms, int64_t now_ms, uint32_t *fails,
                    int64_t *probe_until)
{
    struct kl_health *h = srv->health;
    *probe_until = 0;
    if (!h || !atomic_load_explicit(&h->n, memory_order_relaxed))
        return false;
    struct entry *e = find(h, provider, false);
    if (!e)
        return false;
    *fails = atomic_load(&e->fails);
    int64_t until = atomic_load(&e->down_until_ms);
    if (!until)
        return false;
    if (until > now_ms)
        return true;
    /* the cool-down is over: the one request that moves it on tries the
     * provider; the others keep passing it over until that one's outcome
     * clears the count or starts the next cool-down */
    int64_t next = now_ms + (int64_t)cooldown_ms;
    if (!atomic_compare_exchange_strong(&e->down_until_ms, &until, next))
        return true;
    *probe_until = next;
    return false;
}

void kl_health_probe_unused(kl_server *srv, const char *provider, int64_t probe_until)
{
    struct kl_health *h = srv->health;
    struct entry *e = h ? find(h, provider, false) : NULL;
    /* 1 ms after the clock's start: still cooling (not 0, healthy), and over */
    if (e)
        atomic_compare_exchange_strong(&e->down_until_ms, &probe_until, 1);
}

void kl_health_each(kl_server *srv, int64_t now_ms, void (*fn)(void *arg, const char *provider, bool down),
                    void *arg)
{
    struct kl_health *h = srv->health;
    for (size_t i = 0; h && i < NSLOTS; i++) {
        struct entry *e = atomic_load_explicit(&h->slot[i], memory_order_acquire);
        if (e)
            fn(arg, e->id, atomic_load(&e->down_until_ms) != 0);
    }
}
