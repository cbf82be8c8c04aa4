#include "guard/guard.h"

enum kl_step kl_guard_run(kl_exchange *ex)
{
    (void)ex;
    return KL_NEXT;
}
