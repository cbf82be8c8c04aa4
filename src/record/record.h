/* Stage 9, record: what happened, written down once the exchange ends.
 * Today this is the access log line (log.access); the request record store
 * (SQLite / PostgreSQL) plugs in here. */
#ifndef KL_RECORD_H
#define KL_RECORD_H

#include "core/exchange.h"

void kl_record_exchange(kl_exchange *ex);

#endif
