/* SIGHUP: the configuration file read again and swapped in whole.
 *
 * A snapshot is immutable and reference-counted (core/config.h): the holder
 * gets the new one, each worker is asked through its mailbox to take it,
 * and exchanges already running finish on the snapshot they started with.
 * A reload is all or nothing: a file with errors, or one that changes what
 * only a restart can apply (addresses and workers, where and how records are
 * kept), leaves the running configuration as it is and says why. */
#include "listen/reload.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/log.h"
#include "core/mailbox.h"
#include "identity/identity.h"
#include "listen/conn.h"
#include "listen/server.h"
#include "record/record.h"
#include "upstream/gcp.h"

static bool same_list(const char **a, size_t na, const char **b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

/* The first setting that differs and only a restart applies, or NULL. */
static const char *restart_only(const kl_config *o, const kl_config *n)
{
    if (!same_list(o->listen.addresses, o->listen.naddresses, n->listen.addresses, n->listen.naddresses))
        return "listen.addresses";
    if (o->listen.workers != n->listen.workers)
        return "listen.workers";
    if (!same_list(o->identity->mtls_addresses, o->identity->nmtls, n->identity->mtls_addresses,
                   n->identity->nmtls))
        return "identity.mtls.listen";
    return kl_record_restart_only(o, n);
}

/* On a worker: take the holder's snapshot for exchanges and connections
 * that start from now on. */
static void adopt(void *arg)
{
    kl_worker *w = arg;
    kl_config *n = kl_config_holder_get(&w->server->config);
    kl_config *old = w->cfg;
    w->cfg = n;
    kl_config_unref(old);
    /* a trust domain or CA taken out must not keep working on a
     * connection that was verified with it */
    kl_conn_retire_tls(w);
    atomic_fetch_add(&w->server->adopted, 1);
}

/* Until every worker has taken the new snapshot (at most ms): "reloaded"
 * in the log then means the next request runs on it. */
static void wait_adopted(kl_server *srv, int before, int ms)
{
    const struct timespec tick = {0, 1000000};
    for (int waited = 0; atomic_load(&srv->adopted) - before < srv->nworkers && waited < ms; waited++)
        nanosleep(&tick, NULL);
}

void kl_server_reload(kl_server *srv)
{
    kl_config *cur = kl_config_holder_get(&srv->config);
    kl_diags d = {0};
    kl_config *n = kl_config_load(cur->path, &d);
    kl_diags_print(&d, cur->path, stderr);
    kl_diags_free(&d);
    const char *what = n ? restart_only(cur, n) : NULL;
    atomic_store(&srv->reload_failed, !n || what);
    if (!n || what)
        atomic_fetch_add(&srv->reload_failures, 1);
    if (!n) {
        kl_error("SIGHUP: %s has errors; keeping the running configuration", cur->path);
    } else if (what) {
        kl_error("SIGHUP: %s changed in %s, which takes a restart; nothing was reloaded", what, cur->path);
        kl_config_unref(n);
    } else {
        atomic_store(&srv->config_loaded_ms, kl_wall_ms());
        /* a new account (a rotated key) has its first token before the
         * workers adopt the snapshot, as at start-up */
        if (kl_server_watch_accounts(srv, n))
            kl_server_wait_accounts(srv, 5000);
        size_t nproviders = n->nproviders;
        int log_level = n->log_level;
        kl_config_holder_swap(&srv->config, n);
        kl_record_server_reloaded(srv, n);
        int before = atomic_load(&srv->adopted);
        for (int i = 0; i < srv->nworkers; i++)
            kl_mailbox_post(&srv->workers[i], adopt, &srv->workers[i]);
        wait_adopted(srv, before, 5000);
        kl_info("SIGHUP: configuration reloaded from %s (%zu provider%s)", cur->path, nproviders,
                nproviders == 1 ? "" : "s");
        kl_log_set_level((enum kl_log_level)log_level); /* after the line above, which a quieter level would drop */
    }
    kl_config_unref(cur);
}
