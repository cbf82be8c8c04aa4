/* Credential helpers run as keyless's credential threads need them: an
 * AWS profile's credential_process, an executable that gives Google's
 * workload identity federation its subject token. Their output is
 * collected (a credential: wiped where it is dropped), they are given a
 * time limit and stopped with keyless, and what they leave holding their
 * output is killed with them (each runs in a process group of its own). */
#ifndef KL_RUNCMD_H
#define KL_RUNCMD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct kl_run_opts {
    const char *shell_command;      /* run with /bin/sh -c, or NULL: */
    const char *const *argv;        /* argv[0] an absolute path, NULL-terminated */
    const char *const *extra_env;   /* "NAME=value" added to keyless's environment, NULL-terminated, or NULL */
    int64_t timeout_ms;
};

/* Runs it with stdin /dev/null and no other descriptor of keyless's,
 * collecting stdout into out and stderr into errout (each NUL-ended;
 * stderr cut at its capacity): its exit status (128 + the signal that
 * ended it), or -1 with err when it could not start (err: why, not which
 * program), ran out of time, was stopped, or printed more than out holds.
 * In a container where keyless is PID 1, what such a process left
 * running and was killed with it is not reaped (run keyless under an
 * init, such as docker run --init). */
int kl_run(const struct kl_run_opts *o, const atomic_bool *stop, char *out, size_t outcap, char *errout,
           size_t errcap, char *err, size_t errlen);

#endif
