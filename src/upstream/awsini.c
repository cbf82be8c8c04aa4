#include "upstream/awsini.h"

#include <string.h>

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* [s, e) without blanks at either end. */
static void trim(const char **s, const char **e)
{
    while (*s < *e && blank(**s))
        (*s)++;
    while (*e > *s && blank((*e)[-1]))
        (*e)--;
}

/* A name in matching quotes ("dev", as botocore and the JS SDK allow) is
 * the name without them. */
static void unquote(const char **s, const char **e)
{
    if (*e - *s >= 2 && **s == '"' && (*e)[-1] == '"') {
        (*s)++;
        (*e)--;
    }
}

/* "profile   dev" is "profile dev" (botocore allows any blanks between
 * the word and the name). */
static const char *section_name(kl_arena *a, const char *s, const char *e)
{
    static const char *const words[] = {"profile", "sso-session"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t wl = strlen(words[i]);
        if ((size_t)(e - s) > wl && memcmp(s, words[i], wl) == 0 && blank(s[wl])) {
            const char *n = s + wl;
            while (n < e && blank(*n))
                n++;
            unquote(&n, &e);
            trim(&n, &e);
            return n < e ? kl_arena_printf(a, "%s %.*s", words[i], (int)(e - n), n) : NULL;
        }
    }
    unquote(&s, &e);
    trim(&s, &e);
    return s < e ? kl_arena_strndup(a, s, (size_t)(e - s)) : NULL;
}

/* A value ends at a comment: '#' or ';' after a blank (the JS SDK's rule;
 * AWS's keys and tokens hold no blank). */
static const char *value_end(const char *s, const char *e)
{
    for (const char *t = s; t < e; t++)
        if ((*t == '#' || *t == ';') && t > s && blank(t[-1]))
            return t;
    return e;
}

/* A section line's name between its brackets, or NULL when the line is
 * malformed (no ']', or more than a comment after it). */
static const char *section_line(kl_arena *a, const char *s, const char *e)
{
    const char *close = memchr(s, ']', (size_t)(e - s));
    if (!close)
        return NULL;
    for (const char *t = close + 1; t < e; t++) {
        if (*t == '#' || *t == ';')
            break;
        if (!blank(*t))
            return NULL;
    }
    const char *ns = s + 1, *ne = close;
    trim(&ns, &ne);
    return ns < ne ? section_name(a, ns, ne) : NULL;
}

void kl_aws_ini_parse(kl_arena *a, const char *text, size_t len, struct kl_aws_ini *out)
{
    /* at most one section per '[', one property per '=' */
    size_t opens = 1, equals = 1;
    for (size_t i = 0; i < len; i++) {
        opens += text[i] == '[';
        equals += text[i] == '=';
    }
    out->sections = kl_arena_alloc(a, opens * sizeof(*out->sections));
    out->props = kl_arena_alloc(a, equals * sizeof(*out->props));
    out->nsections = out->nprops = 0;
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        text += 3; /* a byte order mark (files saved by Windows editors) */
        len -= 3;
    }
    struct kl_aws_ini_section *cur = NULL; /* NULL: before any section, or under a malformed one */
    bool sub = false;                       /* the last property had no value: indented lines are its own */
    const char *end = text + len;
    for (const char *line = text; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *le = nl ? nl : end;
        const char *nul = memchr(line, '\0', (size_t)(le - line));
        const char *s = line, *e = nul ? nul : le;
        line = nl ? nl + 1 : end;
        if (e > s && e[-1] == '\r')
            e--;
        bool indented = s < e && blank(*s);
        trim(&s, &e);
        if (s == e || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            const char *name = section_line(a, s, e);
            cur = NULL;
            sub = false;
            if (name) {
                cur = &out->sections[out->nsections++];
                *cur = (struct kl_aws_ini_section){name, out->nprops, 0};
            }
            continue;
        }
        if (!cur || (indented && sub))
            continue;
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq)
            continue;
        const char *ks = s, *ke = eq, *vs = eq + 1, *ve = value_end(eq + 1, e);
        trim(&ks, &ke);
        trim(&vs, &ve);
        if (ks == ke)
            continue;
        out->props[out->nprops++] = (struct kl_aws_ini_prop){kl_arena_strndup(a, ks, (size_t)(ke - ks)),
                                                             kl_arena_strndup(a, vs, (size_t)(ve - vs))};
        cur->n++;
        sub = vs == ve;
    }
}

bool kl_aws_ini_has(const struct kl_aws_ini *ini, const char *section)
{
    for (size_t i = 0; i < ini->nsections; i++)
        if (strcmp(ini->sections[i].name, section) == 0)
            return true;
    return false;
}

const char *kl_aws_ini_get(const struct kl_aws_ini *ini, const char *section, const char *key)
{
    const char *v = NULL;
    for (size_t i = 0; i < ini->nsections; i++) {
        const struct kl_aws_ini_section *sec = &ini->sections[i];
        if (strcmp(sec->name, section) != 0)
            continue;
        for (size_t j = sec->first; j < sec->first + sec->n; j++)
            if (ini->props[j].value[0] && strcmp(ini->props[j].key, key) == 0)
                v = ini->props[j].value;
    }
    return v;
}
