#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

FILE *kl_open_regular(const char *path, const char **why, bool *absent)
{
    /* opened without waiting: a FIFO or a device there would hold the
     * thread that reads it, and keyless's stop with it */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (absent)
        *absent = fd < 0 && (errno == ENOENT || errno == ENOTDIR);
    struct stat st;
    *why = fd < 0 ? strerror(errno) : NULL;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)))
        *why = "not a regular file";
    FILE *f = *why ? NULL : fdopen(fd, "rb");
    if (!f && fd >= 0) {
        if (!*why)
            *why = strerror(errno);
        close(fd);
    }
    return f;
}

int kl_sync_read_file(const char *what, const char *path, size_t max, char **out, char *err, size_t errlen)
{
    const char *why;
    bool absent;
    FILE *f = kl_open_regular(path, &why, &absent);
    if (!f) {
        snprintf(err, errlen, "%s %.300s: %s", what, path, why);
        return absent ? -2 : -1;
    }
    char *text = calloc(1, max + 2); /* a byte more than allowed, and the NUL */
    if (!text)
        abort();
    size_t n = fread(text, 1, max + 1, f);
    bool bad = ferror(f) || n > max || strlen(text) != n;
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s %.300s: %s", what, path,
                 n > max ? "too long" : strlen(text) != n ? "a NUL byte in it" : "unreadable");
        OPENSSL_cleanse(text, max + 2);
        free(text);
        return -1;
    }
    *out = text;
    return 0;
}
