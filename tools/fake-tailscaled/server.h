/* The fixture's one piece of mutable state: the server struct, which owns
 * the event loop, the unix-socket listener, the identity table, the
 * counters and every open connection. */
#ifndef FTS_SERVER_H
#define FTS_SERVER_H

#include <stddef.h>

#include "response.h"
#include "stats.h"
#include "table.h"

struct event_base;
struct evconnlistener;
struct event;
struct fts_conn;

struct fts_config {
    const char *socket_path;
    const char *table_path;
    long delay_ms;                /* wait before every whois answer */
    enum fts_chunk_mode chunk_mode;
    size_t chunk_size;            /* 0: one chunk per body, as Go writes it */
    int no_unmap;                 /* tailscaled < 1.102: ::ffff:a.b.c.d not unmapped */
};

struct fts_server {
    struct fts_config cfg;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *sig_term, *sig_int, *sig_hup;
    struct fts_table table;
    struct fts_stats stats;
    struct fts_conn *conns;       /* open connections, for shutdown */
    int socket_bound;             /* we created cfg.socket_path */
};

/* Loads the table and binds the socket. 0, or -1 with a message in err;
 * fts_server_free is safe afterwards either way. */
int fts_server_init(struct fts_server *s, const struct fts_config *cfg, char *err,
                    size_t errlen);

/* Serves until SIGTERM or SIGINT. Returns 0, or -1 if the loop failed. */
int fts_server_run(struct fts_server *s);

/* Closes every connection, removes the socket file, frees everything. */
void fts_server_free(struct fts_server *s);

/* Runtime diagnostics (reloads, unreadable fixture files) on stderr. */
void fts_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
