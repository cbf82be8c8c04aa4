#include "upstream/runcmd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "core/exchange.h"

extern char **environ;

/* Reads what fd gives into buf (at most cap - 1 bytes kept, NUL-ended):
 * false at its end. */
static bool drain(int fd, char *buf, size_t cap, size_t *len)
{
    char tmp[4096];
    ssize_t n = read(fd, tmp, sizeof(tmp));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0)
        return false;
    size_t take = *len + (size_t)n < cap - 1 ? (size_t)n : cap - 1 - *len;
    memcpy(buf + *len, tmp, take);
    *len += take;
    buf[*len] = '\0';
    OPENSSL_cleanse(tmp, sizeof(tmp));
    return true;
}

/* environ with o's extra variables: theirs win (NULL: environ itself). */
static char **environment(const struct kl_run_opts *o)
{
    if (!o->extra_env || !o->extra_env[0])
        return environ;
    size_t n = 0, k = 0;
    while (environ[n])
        n++;
    while (o->extra_env[k])
        k++;
    char **env = calloc(n + k + 1, sizeof(*env));
    if (!env)
        abort();
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        size_t name = strcspn(environ[i], "=");
        bool replaced = false;
        for (size_t j = 0; j < k && !replaced; j++)
            replaced = strncmp(o->extra_env[j], environ[i], name) == 0 && o->extra_env[j][name] == '=';
        if (!replaced)
            env[m++] = environ[i];
    }
    for (size_t j = 0; j < k; j++)
        env[m++] = (char *)o->extra_env[j];
    return env;
}

int kl_run(const struct kl_run_opts *o, const atomic_bool *stop, char *out, size_t outcap, char *errout,
           size_t errcap, char *err, size_t errlen)
{
    out[0] = errout[0] = '\0';
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0)
        goto fail;
    if (pipe2(pe, O_CLOEXEC) < 0) {
        close(po[0]);
        close(po[1]);
        goto fail;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&at, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    pid_t pid;
    char *sh[] = {"sh", "-c", (char *)o->shell_command, NULL};
    char *const *argv = o->shell_command ? sh : (char *const *)o->argv;
    char **env = environment(o);
    int rc = posix_spawn(&pid, argv == sh ? "/bin/sh" : argv[0], &fa, &at, argv, env);
    if (env != environ)
        free(env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        if (argv == sh)
            snprintf(err, errlen, "/bin/sh: %s", strerror(rc));
        else
            snprintf(err, errlen, "%s", strerror(rc)); /* the caller names the program */
        return -1;
    }
    size_t olen = 0, elen = 0;
    struct pollfd p[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int64_t t0 = kl_now_ns() / 1000000, exited_at = -1;
    int status = 0;
    const char *why = NULL; /* why it was stopped */
    bool late = false;
    /* until the process has exited and its output ended; a background
     * child of its that keeps the pipes open is given a second more */
    while (p[0].fd >= 0 || p[1].fd >= 0 || exited_at < 0) {
        int64_t now = kl_now_ns() / 1000000;
        if (atomic_load(stop))
            why = "stopped with keyless";
        else if ((late = now - t0 > o->timeout_ms))
            why = "late";
        else if (exited_at >= 0 && now - exited_at > 1000)
            break; /* what it printed is enough; what holds the pipes is killed below */
        if (why)
            break;
        if (exited_at < 0) {
            /* WNOWAIT: it stays a zombie, so its pid (the group's id)
             * names no one else until it is reaped below */
            siginfo_t si;
            si.si_pid = 0;
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 ? si.si_pid == pid : errno != EINTR)
                exited_at = now;
        }
        if (poll(p, 2, p[0].fd >= 0 || p[1].fd >= 0 ? 100 : 10) < 0 && errno != EINTR) {
            why = "poll failed";
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (p[i].fd >= 0 && (p[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
                !drain(p[i].fd, i ? errout : out, i ? errcap : outcap, i ? &elen : &olen)) {
                close(p[i].fd);
                p[i].fd = -1;
            }
        }
    }
    /* stopped, or something it started still holds its output: the group,
     * with what it started (not reaped yet, it keeps the group's id its
     * own); a helper it left running quietly stays */
    if (why || exited_at < 0 || p[0].fd >= 0 || p[1].fd >= 0) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL); /* should it have left the group */
    }
    for (int i = 0; i < 2; i++)
        if (p[i].fd >= 0)
            close(p[i].fd);
    pid_t w;
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
        ;
    if (w != pid)
        status = -1;
    if (why || status < 0) {
        if (late && o->timeout_ms % 1000 == 0)
            snprintf(err, errlen, "no answer within %lld s (stopped)", (long long)(o->timeout_ms / 1000));
        else if (late)
            snprintf(err, errlen, "no answer within %lld ms (stopped)", (long long)o->timeout_ms);
        else
            snprintf(err, errlen, "%s", why ? why : "lost track of it");
        return -1;
    }
    if (olen == outcap - 1) {
        snprintf(err, errlen, "more than %zu bytes on its standard output", outcap - 2);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
fail:
    snprintf(err, errlen, "pipe: %s", strerror(errno));
    return -1;
}

