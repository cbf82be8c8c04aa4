#include "core/glob.h"

#include <stddef.h>

/* Backtracking match; patterns are short and written by administrators. */
static bool match(const char *p, const char *s)
{
    while (*p) {
        if (p[0] == '*' && p[1] == '*') {
            p += 2;
            if (*p == '/' && !*(p + 1))
                p++;
            if (!*p)
                return true;
            for (const char *t = s;; t++) {
                if (match(p, t))
                    return true;
                if (!*t)
                    return false;
            }
        }
        if (*p == '*') {
            p++;
            for (const char *t = s;; t++) {
                if (match(p, t))
                    return true;
                if (!*t || *t == '/')
                    return false;
            }
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *s == '\0';
}

bool kl_glob_match(const char *pattern, const char *name)
{
    return match(pattern, name);
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
