/* Micro-benchmark: the usage parser's cost per OpenAI chat chunk, the work
 * keyless does on every event of a chat stream (bench/usage_event.sh). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "account/usage.h"

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void run(const char *what, const char *chunk)
{
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    size_t n = strlen(chunk);
    const int calls = 2000000;
    double t0 = now_ns();
    for (int i = 0; i < calls; i++)
        kl_usage_event(p, NULL, 0, chunk, n);
    printf("%-28s %6.1f ns per chunk\n", what, (now_ns() - t0) / calls);
    kl_arena_free(&a);
}

int main(void)
{
    run("text delta", "{\"id\":\"chatcmpl-AbCdEf0123456789\",\"object\":\"chat.completion.chunk\","
                      "\"created\":1732800000,"
                      "\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_abc123\",\"choices\":[{\"index\":0,"
                      "\"delta\":{\"content\":\" some words of text\"},\"logprobs\":null,\"finish_reason\":null}]}");
    run("text delta with escapes", "{\"id\":\"chatcmpl-AbCdEf0123456789\",\"object\":\"chat.completion.chunk\","
                                   "\"created\":1732800000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":"
                                   "\"fp_abc123\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" some\\nwords of "
                                   "\\\"text\\\"\"},\"logprobs\":null,\"finish_reason\":null}]}");
    return 0;
}
