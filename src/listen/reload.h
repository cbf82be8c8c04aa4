/* Configuration reload on SIGHUP. */
#ifndef KL_RELOAD_H
#define KL_RELOAD_H

#include "core/worker.h"

/* Read the configuration file again; when it is valid and changes nothing
 * that only a restart applies, make it the snapshot new exchanges see.
 * Otherwise log why and keep the current one. Main thread only. */
void kl_server_reload(kl_server *srv);

#endif
