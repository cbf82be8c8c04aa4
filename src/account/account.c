#include "account/account.h"

#include <stdlib.h>
#include <string.h>

#include "account/sse.h"
#include "listen/conn.h"
#include "record/rec.h"

struct kl_account {
    bool split_events;          /* an SSE body we look at event by event */
    bool strip_usage_chunk;     /* drop the usage-only chunk we asked for */
    kl_sse sse;
};

void kl_account_begin(kl_exchange *ex, int status, bool event_stream)
{
    struct kl_account *a = kl_arena_alloc(&ex->arena, sizeof(*a));
    ex->acct = a;
    a->strip_usage_chunk = ex->added_include_usage && event_stream && status == 200;
    a->split_events = a->strip_usage_chunk;
}

/* The chunk an OpenAI chat stream sends when include_usage is on:
 * {"choices":[], "usage":{...}} — the caller did not ask for it. */
static bool is_usage_only_chunk(const char *raw, size_t len)
{
    if (!memmem(raw, len, "\"usage\"", 7))
        return false;
    const char *ev;
    size_t evl, dl;
    char *data;
    kl_sse_fields(raw, len, &ev, &evl, &data, &dl);
    bool only = false;
    if (data) {
        cJSON *j = cJSON_ParseWithLength(data, dl);
        const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
        only = cJSON_IsArray(choices) && cJSON_GetArraySize(choices) == 0 &&
               cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "usage"));
        cJSON_Delete(j);
        free(data);
    }
    return only;
}

static void on_event(void *arg, const char *raw, size_t len)
{
    kl_exchange *ex = arg;
    struct kl_account *a = ex->acct;
    if (a->strip_usage_chunk && is_usage_only_chunk(raw, len))
        return;
    kl_respond_data(ex, raw, len);
}

void kl_account_data(kl_exchange *ex, const char *data, size_t len)
{
    struct kl_account *a = ex->acct;
    if (!a || !a->split_events) {
        kl_respond_data(ex, data, len);
        return;
    }
    kl_sse_feed(&a->sse, data, len, on_event, ex);
}

void kl_account_end(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    if (a && a->split_events)
        kl_sse_flush(&a->sse, on_event, ex);
}

void kl_account_free(kl_exchange *ex)
{
    if (ex->acct)
        kl_sse_free(&ex->acct->sse);
    ex->acct = NULL;
}

void kl_account_fill_record(kl_exchange *ex, struct kl_rec *r)
{
    (void)ex;
    (void)r;
}
