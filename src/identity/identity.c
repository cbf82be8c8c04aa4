#include "identity/identity.h"

enum kl_step kl_identity_run(kl_exchange *ex)
{
    (void)ex;
    return KL_NEXT;
}
