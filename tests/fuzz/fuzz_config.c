/* libFuzzer: HuJSON and the configuration reader. */
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kl_diags d = {0};
    kl_config *c = kl_config_parse((const char *)data, size, "fuzz", &d);
    kl_config_unref(c);
    kl_diags_free(&d);
    return 0;
}
