#include "record/record.h"

#include "core/log.h"

void kl_record_exchange(kl_exchange *ex)
{
    if (!ex->cfg->access_log)
        return;
    double ms = (double)(ex->t_end_ns - ex->t_start_ns) / 1e6;
    kl_info("%s %s:%d \"%s %s\" %d %s model=%s provider=%s in=%llu out=%llu %.1fms", ex->id,
            ex->peer_ip ? ex->peer_ip : "-", ex->peer_port, ex->req.method ? ex->req.method : "-",
            ex->req.path ? ex->req.path : "-", ex->status,
            ex->error_class ? kl_error_class_name(ex->error_class) : "ok",
            ex->model_requested ? ex->model_requested : "-", ex->provider ? ex->provider->id : "-",
            (unsigned long long)ex->bytes_in, (unsigned long long)ex->bytes_out, ms);
}
