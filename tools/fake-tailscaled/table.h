/* The identity table: which peer IP gets which WhoIs answer.
 *
 * The table is a JSON object, {"IP": "file.json" | "!directive", ...}. File
 * entries are served byte for byte (never re-serialized: node IDs do not fit
 * a double), and are read when answered, so editing a fixture file takes
 * effect on the next request. The table itself is reloaded when its file
 * changes and on SIGHUP. "Changes" is decided by comparing bytes, not
 * mtimes: file timestamps tick in jiffies, and a test that rewrites the
 * table twice within one tick must still see its second edit. */
#ifndef FTS_TABLE_H
#define FTS_TABLE_H

#include <stddef.h>

#include "netip.h"

enum fts_entry_kind {
    FTS_ENTRY_FILE,               /* serve the file's bytes */
    FTS_ENTRY_GARBAGE,            /* "!garbage": 200, a body that is not JSON */
    FTS_ENTRY_TRUNCATED,          /* "!truncated": 200, a cut-off WhoIs document */
    FTS_ENTRY_STATUS,             /* "!NNN [message]": that status, text/plain */
    FTS_ENTRY_HANG,               /* "!hang": never answer */
    FTS_ENTRY_CLOSE               /* "!close": close the connection, no answer */
};

struct fts_entry {
    struct fts_ip ip;
    unsigned port;                /* 0: any port; else only this IP:port (userspace networking's proxymap) */
    char *key;                    /* the key as written in the table */
    enum fts_entry_kind kind;
    char *path;                   /* FILE: resolved path */
    int status;                   /* STATUS: the code */
    char *message;                /* STATUS: the error text */
};

struct fts_table {
    char *path;                   /* the table file */
    char *dir;                    /* its directory, for relative entries */
    struct fts_entry *entries;
    size_t n;
    char *loaded;                 /* bytes of the version in use */
    size_t loaded_len;
    char *failed;                 /* bytes of the last version rejected */
    size_t failed_len;
    unsigned long loads;          /* successful loads, the first included */
};

/* Loads the table for the first time. 0, or -1 with a message in err. */
int fts_table_open(struct fts_table *t, const char *path, char *err, size_t errlen);

/* Reads the file and reloads if its bytes changed (or always, if force).
 * Returns 1 when a new version was loaded, 0 when nothing changed (or the
 * file is momentarily missing, as during a replace), -1 when the new
 * version is broken (err says why; the previous entries stay in use). A
 * broken version is reported once, not on every request. */
int fts_table_refresh(struct fts_table *t, int force, char *err, size_t errlen);

/* The entry for ip and port: an IP:port key first (tailscaled in
 * userspace networking knows each connection it forwarded to 127.0.0.1 by
 * its port), then the IP's own key. port 0: only IP keys. */
const struct fts_entry *fts_table_lookup(const struct fts_table *t, const struct fts_ip *ip, unsigned port);

/* The first file entry whose document has Node.Key equal to key (32 raw
 * bytes), for tailscaled's "addr=nodekey:<hex>" form. */
const struct fts_entry *fts_table_lookup_nodekey(const struct fts_table *t,
                                                 const unsigned char key[32]);

/* "nodekey:" followed by 64 hex digits, as key.NodePublic.UnmarshalText.
 * 0 with the 32 key bytes in out, or -1. */
int fts_nodekey_decode(const char *s, size_t n, unsigned char out[32]);

/* Reads a file entry's bytes. 0, or -1 with a message in err. */
int fts_table_read(const struct fts_entry *e, char **data, size_t *len, char *err,
                   size_t errlen);

void fts_table_close(struct fts_table *t);

#endif
