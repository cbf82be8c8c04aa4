/* libFuzzer: AWS's shared config files. Whatever the input, every section
 * and property that comes out is trimmed, on one line and without a NUL,
 * each property belongs to a section, and a lookup finds the last
 * non-empty value of its key in the sections of its name. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/awsini.h"

static void one_line(const char *s)
{
    if (!s || strchr(s, '\n'))
        abort();
    size_t n = strlen(s);
    if (n && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kl_arena a;
    kl_arena_init(&a);
    struct kl_aws_ini ini;
    kl_aws_ini_parse(&a, (const char *)data, size, &ini);
    size_t props = 0;
    for (size_t i = 0; i < ini.nsections; i++) {
        const struct kl_aws_ini_section *s = &ini.sections[i];
        one_line(s->name);
        if (!s->name[0] || s->first != props || !kl_aws_ini_has(&ini, s->name))
            abort();
        props += s->n;
        for (size_t j = s->first; j < s->first + s->n; j++) {
            one_line(ini.props[j].key);
            one_line(ini.props[j].value);
            if (!ini.props[j].key[0])
                abort();
            if (ini.nprops > 2000)
                continue; /* the check below is quadratic */
            /* the last non-empty value of this key in sections of this name */
            const char *want = NULL;
            for (size_t k = 0; k < ini.nsections; k++)
                if (strcmp(ini.sections[k].name, s->name) == 0)
                    for (size_t m = ini.sections[k].first; m < ini.sections[k].first + ini.sections[k].n; m++)
                        if (ini.props[m].value[0] && strcmp(ini.props[m].key, ini.props[j].key) == 0)
                            want = ini.props[m].value;
            if (kl_aws_ini_get(&ini, s->name, ini.props[j].key) != want)
                abort();
        }
    }
    if (props != ini.nprops)
        abort();
    kl_arena_free(&a);
    return 0;
}
