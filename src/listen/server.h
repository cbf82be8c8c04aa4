/* The server: listening sockets, worker threads, signals, graceful stop. */
#ifndef KL_SERVER_H
#define KL_SERVER_H

#include "core/config.h"
#include "core/worker.h"

/* Run until SIGTERM/SIGINT. Takes over cfg's reference. Returns the exit
 * status for main. */
int kl_server_run(kl_config *cfg);

/* Keep the access tokens of cfg's Google credentials fresh (those already
 * kept keep their tokens; those cfg no longer has are no longer renewed),
 * and start the keeper of AWS credentials from the environment when a
 * provider first needs it. Whether there is anything to wait for
 * (kl_server_wait_accounts). */
bool kl_server_watch_accounts(kl_server *srv, const kl_config *cfg);
/* Wait, at most ms in all, for every Google credential's first token and
 * the AWS keeper's first credentials: their threads ask at the same time,
 * so a slow token endpoint and a slow AWS source do not add up. */
void kl_server_wait_accounts(kl_server *srv, int ms);

/* Called after an exchange ends and after a connection closes: a draining
 * worker stops once its last exchange and connection are gone. */
void kl_server_maybe_stopped(kl_worker *w);

/* A worker at its share of listen.max_connections stops accepting (on
 * false) until one of its connections closes (on true); the kernel's
 * backlog holds new callers meanwhile. */
void kl_server_accepting(kl_worker *w, bool on);

/* An access log line, on w's thread: buffered, written within 100 ms, when
 * the buffer fills, or when the worker stops (see kl_log_buffered). */
void kl_server_access_log(kl_worker *w, const struct kl_log_line *l);

#endif
