/* What tailscaled answers: ipnserver's top-level routing, the LocalAPI
 * request gate (Referer/Origin/Host), the WhoIs handler, and the fixture's
 * own /fake/ endpoints. Pure request -> outcome; sockets live in server.c. */
#ifndef FTS_LOCALAPI_H
#define FTS_LOCALAPI_H

#include "request.h"
#include "response.h"

struct fts_server;

enum fts_action {
    FTS_ACT_RESPOND,              /* write resp */
    FTS_ACT_HANG,                 /* never answer ("!hang") */
    FTS_ACT_CLOSE                 /* close without answering ("!close") */
};

struct fts_outcome {
    enum fts_action action;
    int delayed;                  /* a whois answer: waits --delay-ms first */
    struct fts_response resp;
};

/* Computes the answer to req. out->resp must be freed by the caller. */
void fts_localapi_serve(struct fts_server *s, const struct fts_request *req,
                        struct fts_outcome *out);

/* Whether answering req reads its body (a form-encoded whois POST that
 * passes the gate), which is when Go sends "100 Continue". */
int fts_localapi_reads_body(const struct fts_request *req);

#endif
