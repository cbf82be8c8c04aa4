#include "identity/identity.h"

#include "core/text.h"

#include <stdlib.h>
#include <string.h>

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *str_member(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* Strings of a JSON array, copied into the arena (non-strings skipped). */
static const char **str_array(const cJSON *arr, kl_arena *a, size_t *n)
{
    *n = 0;
    if (!cJSON_IsArray(arr))
        return NULL;
    size_t cap = (size_t)cJSON_GetArraySize(arr);
    const char **v = kl_arena_alloc(a, (cap + 1) * sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
        if (cJSON_IsString(e) && e->valuestring[0])
            v[(*n)++] = kl_arena_strdup(a, e->valuestring);
    return v;
}

/* Has another member of obj the name of m? */
static bool named_twice(const cJSON *obj, const cJSON *m)
{
    for (const cJSON *o = obj->child; o; o = o->next)
        if (o != m && o->string && m->string && strcmp(o->string, m->string) == 0)
            return true;
    return false;
}

/* CapMap names may carry an "https://" prefix in older tailnets. */
static void normalize_capmap(cJSON *caps)
{
    for (cJSON *c = caps ? caps->child : NULL; c; c = c->next) {
        if (c->string && strncmp(c->string, "https://", 8) == 0) {
            char *plain = strdup(c->string + 8);
            if (!plain)
                abort();
            cJSON_free(c->string);
            c->string = plain;
        }
    }
    /* Both names of one capability (a policy mid-migration has both, and
     * tailscaled sorts the https:// one first): one member holding the
     * values of both, or a reader taking the first would drop the rest
     * (tool limits, quotas, hooks). A copy with no values (null) holds
     * nothing: read first, it hid the other's. */
    for (cJSON *c = caps ? caps->child : NULL, *next; c; c = next) {
        next = c->next;
        if (cJSON_IsNull(c) && named_twice(caps, c))
            cJSON_Delete(cJSON_DetachItemViaPointer(caps, c));
    }
    for (cJSON *c = caps ? caps->child : NULL; c; c = c->next) {
        cJSON *d = c->next;
        while (d) {
            cJSON *next = d->next;
            if (c->string && d->string && strcmp(c->string, d->string) == 0 && cJSON_IsArray(c) && cJSON_IsArray(d)) {
                cJSON_DetachItemViaPointer(caps, d);
                cJSON *v;
                while ((v = d->child)) {
                    cJSON_DetachItemViaPointer(d, v);
                    cJSON_AddItemToArray(c, v);
                }
                cJSON_Delete(d);
            }
            d = next;
        }
    }
}

int kl_whois_parse(const char *body, size_t len, kl_arena *a, struct kl_identity *id,
                   cJSON **caps, const char **why)
{
    memset(id, 0, sizeof(*id));
    *caps = NULL;
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(root, "Node");
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "UserProfile");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(node)) {
        cJSON_Delete(root);
        *why = "tailscaled answered WhoIs with something that is not a WhoIs response";
        return -1;
    }
    id->source = "tailscale";
    const char *name = str_member(node, "Name");
    if (name) {
        size_t n = strlen(name);
        id->node = kl_arena_strndup(a, name, name[n - 1] == '.' ? n - 1 : n);
    } else if ((name = str_member(node, "ComputedName"))) {
        id->node = kl_arena_strdup(a, name);
    }
    const char *stable = str_member(node, "StableID");
    id->stable_node_id = stable ? kl_arena_strdup(a, stable) : NULL;

    size_t ntags;
    const char **tags = str_array(cJSON_GetObjectItemCaseSensitive(node, "Tags"), a, &ntags);
    const char *login = str_member(user, "LoginName");
    if (ntags > 0) {
        /* A tagged node is its tags; its UserProfile is the shared
         * "tagged-devices" pseudo-user and must never be authorized on. */
        qsort(tags, ntags, sizeof(char *), cmp_str);
        id->login = kl_join(a, tags, ntags, ',');
        id->tags = tags;
        id->ntags = ntags;
        id->tagged = true;
        id->display_name = id->node;
    } else if (login && strcmp(login, "tagged-devices") != 0) {
        id->login = kl_arena_strdup(a, login);
        const char *dn = str_member(user, "DisplayName");
        id->display_name = dn ? kl_arena_strdup(a, dn) : NULL;
        id->groups = str_array(cJSON_GetObjectItemCaseSensitive(user, "Groups"), a, &id->ngroups);
    } else {
        cJSON_Delete(root);
        return 0;
    }
    cJSON *cm = cJSON_DetachItemFromObjectCaseSensitive(root, "CapMap");
    if (cJSON_IsObject(cm)) {
        normalize_capmap(cm);
        *caps = cm;
    } else {
        cJSON_Delete(cm);
    }
    cJSON_Delete(root);
    return 1;
}
