/* CPU cost of writing request records to SQLite, without the gateway around
 * it, into a fresh database. The defaults shape batches like the writer's
 * under bench scenario 1 before in-progress records waited 100 ms (~35
 * requests per batch; about 3 in 4 in-progress rows written in one batch and
 * their final rows in the next, the rest final rows only). Since then that
 * scenario writes final rows only, ~80 to a batch: `recbench 200000 80 100`.
 *
 *   make && cc -O2 -std=c17 -D_GNU_SOURCE -Isrc -o build/recbench bench/recbench.c build/libkeyless.a \
 *       $(make -s print-pkgs | xargs pkg-config --libs) -lpthread -lm
 *   build/recbench [requests] [per-batch] [coalesced-percent]
 *   RECBENCH_EXPORT=1 build/recbench ...    (with the export queue of exporters.s3)
 *   valgrind --tool=callgrind build/recbench 50000    (instructions per request)
 *
 * Prints CPU time per request (process CPU clock: the writes only, records
 * are built before the clock starts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "record/rec.h"
#include "record/store.h"

static void make_id(char out[40], int64_t ms, unsigned seq)
{
    snprintf(out, 40, "%08x-%04x-7%03x-%04x-%012llx", (unsigned)((uint64_t)ms >> 16), (unsigned)(ms & 0xffff),
             seq & 0xff, 0x8000u | (seq * 2654435761u >> 20 & 0x3fff),
             (unsigned long long)(seq * 0x9e3779b97f4a7c15ull & 0xffffffffffffull));
}

static struct kl_rec *rec(const char *id, int64_t ms, enum kl_rec_state st, bool begun)
{
    struct kl_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    r.state = st;
    r.instance = "bench-host";
    r.started_ms = ms;
    r.latency_ms = r.ttft_ms = -1;
    r.login = "bob@example.com";
    r.display_name = "Bob Example";
    r.node = "bob-thinkpad";
    r.stable_node_id = "ngkpC6ErVKiPCNTRL";
    r.tags = NULL;
    r.identity_source = "tailscale";
    r.source_addr = "127.0.0.1:41254";
    r.method = "POST";
    r.path = "/v1/chat/completions";
    r.endpoint = "openai_chat";
    r.dialect = "openai";
    r.model_requested = "gpt-4o";
    r.provider = "openai";
    r.user_agent = "OpenAI/JS 6.9.0";
    r.session_id = "fp:7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730";
    r.bytes_in = 1242;
    if (st == KL_REC_DONE) {
        r.first_byte_ms = ms + 7;
        r.ended_ms = ms + 8;
        r.latency_ms = 8;
        r.ttft_ms = 7;
        r.status = 200;
        r.upstream_status = 200;
        r.usage_known = true;
        r.input_tokens = 212;
        r.output_tokens = 48;
        r.cost_known = true;
        r.cost_nanodollars = 1010000;
        r.model_served = "gpt-4o-2024-08-06";
        r.stop_reason = "stop";
        r.bytes_out = 817;
    }
    r.begun = begun;
    return kl_rec_pack(&r);
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    kl_store_global_init(); /* as the gateway's main() does */
    size_t nreq = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    size_t per = argc > 2 ? strtoul(argv[2], NULL, 10) : 35;
    unsigned coalesced = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 28;
    char path[] = "/tmp/kl-recbench-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    unlink(path);
    char err[512];
    struct kl_store *s = kl_store_open(KL_STORE_SQLITE, path, true, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    /* RECBENCH_SQL: statements run on the fresh database first (separated by ';', to
     * try a schema change, e.g. "DROP INDEX requests_session"). */
    char *extra = getenv("RECBENCH_SQL") ? strdup(getenv("RECBENCH_SQL")) : NULL, *save = NULL;
    for (char *st = extra ? strtok_r(extra, ";", &save) : NULL; st; st = strtok_r(NULL, ";", &save)) {
        if (kl_store_exec(s, st, NULL, 0, NULL, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    free(extra);
    /* RECBENCH_EXPORT=1: final rows also go on the export queue, as with an
     * exporter configured (what exporters.s3 costs the writer). */
    if (getenv("RECBENCH_EXPORT") && strcmp(getenv("RECBENCH_EXPORT"), "1") == 0)
        kl_store_set_export_queue(s, true);
    /* Build every batch first: batch k holds the final rows of batch k-1's
     * requests that were not coalesced, then its own requests' rows. */
    size_t nbatch = (nreq + per - 1) / per;
    struct kl_rec ***batches = calloc(nbatch + 1, sizeof(*batches));
    size_t *lens = calloc(nbatch + 1, sizeof(*lens));
    struct kl_rec **pending = calloc(per, sizeof(*pending)); /* finals for the next batch */
    size_t npending = 0, rows = 0;
    int64_t ms = 1764000000000;
    unsigned seq = 0;
    for (size_t b = 0; b <= nbatch; b++) {
        batches[b] = calloc(2 * per, sizeof(**batches));
        size_t n = 0;
        for (size_t i = 0; i < npending; i++)
            batches[b][n++] = pending[i];
        npending = 0;
        for (size_t i = 0; b < nbatch && i < per && seq < nreq; i++, seq++) {
            char id[40];
            if (seq % 7 == 0)
                ms++;
            make_id(id, ms, seq);
            if (seq * 2654435761u % 100 < coalesced) {
                batches[b][n++] = rec(id, ms, KL_REC_DONE, false);
            } else {
                batches[b][n++] = rec(id, ms, KL_REC_IN_PROGRESS, false);
                pending[npending++] = rec(id, ms, KL_REC_DONE, true);
            }
        }
        lens[b] = n;
        rows += n;
    }
    double t0 = cpu_s();
    for (size_t b = 0; b <= nbatch; b++) {
        if (kl_store_write(s, batches[b], lens[b], err, sizeof(err)) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    double t1 = cpu_s();
    cJSON *out = NULL;
    kl_store_exec(s, "SELECT count(*) AS n, sum(state = 'done') AS done FROM requests", NULL, 0, &out, err,
                  sizeof(err));
    const cJSON *r0 = cJSON_GetArrayItem(out, 0);
    printf("requests %zu, rows written %zu, rows in the table %d (done %d): %.2f us CPU per request\n", nreq, rows,
           cJSON_GetObjectItem(r0, "n")->valueint, cJSON_GetObjectItem(r0, "done")->valueint,
           (t1 - t0) * 1e6 / (double)nreq);
    cJSON_Delete(out);
    kl_store_close(s);
    for (size_t b = 0; b <= nbatch; b++) {
        for (size_t i = 0; i < lens[b]; i++)
            kl_rec_free(batches[b][i]);
        free(batches[b]);
    }
    free(batches);
    free(lens);
    free(pending);
    char side[64];
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
    return 0;
}
