/* Client connections: read HTTP/1.1 requests off a bufferevent, hand each
 * complete request to the pipeline as an exchange, and write its response,
 * whole or streamed. One exchange at a time per connection; pipelined
 * requests wait in the input buffer. */
#ifndef KL_CONN_H
#define KL_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/exchange.h"
#include "core/worker.h"
#include "pipeline.h"

/* Take ownership of an accepted socket. With tls_ctx (an SSL_CTX), the
 * connection is TLS and its client certificate identifies the caller. */
void kl_conn_accept(kl_worker *w, int fd, const struct sockaddr *sa, socklen_t salen, bool tls);

/* Is ex's connection TLS? Its verified client certificate (caller frees
 * with X509_free), or NULL when none was presented. */
bool kl_conn_is_tls(const kl_exchange *ex);
struct x509_st *kl_conn_peer_certificate(const kl_exchange *ex);

/* Close every connection that has no exchange in flight and no request
 * head begun (shutdown). */
void kl_conn_close_idle(kl_worker *w);
/* After a reload: TLS connections accepted under an older snapshot (its
 * certificates and CA bundles) close now when idle, else after the request
 * they are serving. */
void kl_conn_retire_tls(kl_worker *w);
/* Was the connection's TLS set up under the snapshot ex runs on? (true for
 * plain connections) */
bool kl_conn_tls_current(const kl_exchange *ex);
/* Something a pipeline stage keeps for the life of ex's connection and no
 * longer: it is freed with free_fn when the connection closes, or when
 * another is kept in its place. False (data freed now) when the client is
 * gone. Identity keeps a WhoIs answer that holds for this connection only. */
bool kl_conn_keep(kl_exchange *ex, void *data, void (*free_fn)(void *));
/* What was kept on ex's connection, or NULL. */
void *kl_conn_kept(const kl_exchange *ex);
/* Close every connection, ending any exchange still attached (last step of
 * a worker's shutdown). */
void kl_conn_close_all(kl_worker *w);

/* ---- responses (no-ops once the client is gone) ---- */

/* A whole response with Content-Length. headers: preformatted
 * "Name: value\r\n" lines or NULL. */
void kl_respond(kl_exchange *ex, int status, const char *content_type,
                const char *headers, const char *body, size_t len);

/* Begin a response whose body follows through kl_respond_data.
 * content_length < 0 streams it (chunked, or close-delimited for HTTP/1.0). */
void kl_respond_start(kl_exchange *ex, int status, const char *headers, int64_t content_length);
void kl_respond_data(kl_exchange *ex, const char *data, size_t len);
/* kl_respond_data for a malloc'd buffer given up to the client's output,
 * not copied into it: freed once written (or the client gone), and then
 * the charged bytes counted for it with the request bodies (its exchange's,
 * handed over: kl_exchange_charge) given back. A large held answer is not
 * copied whole, and stays counted while a slow client reads it. */
void kl_respond_give(kl_exchange *ex, char *data, size_t len, size_t charged);
void kl_respond_end(kl_exchange *ex);
/* End the response abnormally: the connection is closed without completing
 * the body, so the client sees a truncated transfer, not a clean end (an
 * HTTP/1.0 client, whose body ends at the close, sees a reset). */
void kl_respond_abort(kl_exchange *ex);

/* Write data as the response's last bytes in a read of their own, end the
 * response, and call done(ex): once what was queued before it has been
 * written (or a few seconds have passed) and a short gap after. An SDK
 * that raises a Gemini stream's bare error only when it comes alone
 * (dialect/errors.c) misses it in the same read as the events before it.
 * False (nothing written, done not called) when the client is gone; one
 * that leaves during the wait ends the exchange as it would any other
 * (kl_pipeline_client_gone). */
bool kl_respond_last_apart(kl_exchange *ex, const char *data, size_t len, void (*done)(kl_exchange *));

/* Bytes queued for the client and not yet written. */
size_t kl_conn_pending(const kl_exchange *ex);
/* Call cb(ex) once when the queued output has been written. */
void kl_conn_on_drain(kl_exchange *ex, void (*cb)(kl_exchange *));

/* The pipeline is finished with ex (recorded and about to be freed): the
 * connection detaches and moves on to the next request or closes. */
void kl_conn_exchange_done(kl_exchange *ex);

/* The pipeline's body stage: the request body, read only now that the
 * caller is known (100 Continue goes out here, not with the head). KL_NEXT
 * once it is all in ex->body (decompressed), KL_WAIT while it arrives (the
 * pipeline resumes after), KL_DONE when it is refused (answered). */
enum kl_step kl_conn_body(kl_exchange *ex);

#endif
