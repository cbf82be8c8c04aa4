/* Reading a small file whole, without waiting on one that is not a file. */
#ifndef KL_FILE_H
#define KL_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* A small regular file holding a secret (a token a kubelet or an agent
 * writes, read again each time since they rotate it; a credentials file; a
 * provider key's file:), whole: 0 with *out (malloc, NUL-terminated, no
 * NUL inside, at most max bytes; wipe it), or -1 with err ("WHAT PATH:
 * why"), -2 when there is no such file. Opened without blocking and only
 * as a regular file: a FIFO or a device there would hold the thread that
 * reads it (a credential keeper, the main thread on SIGHUP), and keyless's
 * stop with it; a directory is "not a regular file", not an empty key. */
/* A regular file opened for reading without waiting on one that is not
 * (a FIFO there would hold the thread that opens it: the main thread on
 * SIGHUP, and keyless's stop with it), or NULL with why (and *absent when
 * there is no such file; absent may be NULL). */
FILE *kl_open_regular(const char *path, const char **why, bool *absent);

int kl_sync_read_file(const char *what, const char *path, size_t max, char **out, char *err, size_t errlen);

#endif
