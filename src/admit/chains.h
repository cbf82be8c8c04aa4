/* The size of the stored context a Responses request chains onto.
 *
 * A request naming previous_response_id makes OpenAI read that response's
 * whole conversation, which the request's body does not hold. keyless
 * remembers, for each Responses answer it relayed, how many tokens that
 * answer's input and output came to: a later request chained onto it is
 * reserved exactly that, instead of limits.referenced_input_tokens. A
 * response's usage never changes, so the number is exact for as long as it
 * is remembered; a conversation (conversation: "conv_…") grows with every
 * response and may grow through another gateway, so its last known size is
 * only a floor.
 *
 * A core/lossymap.h table of 65,536 slots: a 64-bit hash of provider and
 * id, and the tokens (a newer id takes an older one's slot). Two ids with one hash are harmless: the ids
 * come from the provider, and a caller naming an id that collides with
 * another gets that one's size reserved for a reference the provider will
 * refuse. Not kept across restarts: an id not remembered is reserved the
 * knob's share. */
#ifndef KL_CHAINS_H
#define KL_CHAINS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kl_chains;

struct kl_chains *kl_chains_new(void);
void kl_chains_free(struct kl_chains *t);

/* Remember that id (len bytes, as the provider spelt it) at provider holds
 * tokens tokens of context. */
void kl_chains_put(struct kl_chains *t, const char *provider, const char *id, size_t len, int64_t tokens);

/* The tokens remembered for id at provider, or -1. */
int64_t kl_chains_get(struct kl_chains *t, const char *provider, const char *id, size_t len);

#endif
