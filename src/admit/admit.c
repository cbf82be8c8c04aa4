#include "admit/admit.h"

enum kl_step kl_admit_run(kl_exchange *ex)
{
    (void)ex;
    return KL_NEXT;
}
