#include "core/glob.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ANY_IN_SEGMENT = -1, ANY = -2 };

/* The pattern as tokens: a literal byte, `*` (ANY_IN_SEGMENT) or `**`
 * (ANY); a trailing `**` followed by '/' is a trailing `**`. */
static size_t tokenize(const char *p, int *tok)
{
    size_t n = 0;
    while (*p) {
        if (p[0] == '*' && p[1] == '*') {
            p += 2;
            if (p[0] == '/' && !p[1])
                p++;
            tok[n++] = ANY;
        } else if (*p == '*') {
            p++;
            tok[n++] = ANY_IN_SEGMENT;
        } else {
            tok[n++] = (unsigned char)*p++;
        }
    }
    return n;
}

/* Add state i and those a wildcard at i reaches by matching nothing. */
static void enter(const int *tok, size_t n, uint8_t *set, size_t i)
{
    for (; i <= n && !set[i]; i++) {
        set[i] = 1;
        if (i == n || tok[i] >= 0)
            break;
    }
}

/* The pattern run as a set of states, one per token boundary, over the
 * name's bytes once: time |pattern| x |name| whatever the wildcards (the
 * name may come from a caller, a tool name of megabytes: a backtracking
 * matcher is exponential in the stars there). */
bool kl_glob_match(const char *pattern, const char *name)
{
    /* Nearly every pattern is a literal, or a literal and a trailing "**"
     * (a provider's name, a slash and "**"), and the name must start with
     * that literal whatever follows: comparing bytes decides those without
     * running the states (~2,000 instructions a call, three a request). */
    size_t lit = strcspn(pattern, "*");
    if (strncmp(pattern, name, lit) != 0)
        return false;
    if (!pattern[lit])
        return !name[lit];
    if (!strcmp(pattern + lit, "**") || !strcmp(pattern + lit, "**/"))
        return true;
    size_t plen = strlen(pattern);
    int tok_small[64];
    uint8_t set_small[2][65];
    int *tok = plen <= 64 ? tok_small : malloc(plen * sizeof(*tok));
    uint8_t *cur = plen <= 64 ? set_small[0] : malloc(plen + 1), *next = plen <= 64 ? set_small[1] : malloc(plen + 1);
    if (!tok || !cur || !next)
        abort();
    size_t n = tokenize(pattern, tok);
    memset(cur, 0, n + 1);
    enter(tok, n, cur, 0);
    bool alive = true;
    for (const unsigned char *s = (const unsigned char *)name; *s && alive; s++) {
        memset(next, 0, n + 1);
        alive = false;
        for (size_t i = 0; i < n; i++) {
            if (!cur[i])
                continue;
            if (tok[i] == ANY || (tok[i] == ANY_IN_SEGMENT && *s != '/'))
                enter(tok, n, next, i); /* the wildcard takes this byte too */
            else if (tok[i] == *s)
                enter(tok, n, next, i + 1);
        }
        for (size_t i = 0; i <= n; i++)
            alive |= next[i];
        uint8_t *t = cur;
        cur = next;
        next = t;
    }
    bool matched = alive && cur[n];
    if (plen > 64) {
        free(tok);
        free(cur);
        free(next);
    }
    return matched;
}

int kl_glob_specificity(const char *pattern)
{
    int score = 0;
    for (const char *p = pattern; *p; p++)
        if (*p != '*')
            score += 2;
        else if (p[1] == '*')
            p++;
        else
            score += 1; /* a one-segment wildcard says more than "**" */
    return score;
}
