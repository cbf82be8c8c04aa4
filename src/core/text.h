/* Small text helpers shared by several stages. */
#ifndef KL_TEXT_H
#define KL_TEXT_H

#include <stddef.h>

#include "core/arena.h"

/* 0-15 for a hex digit, else -1. */
int kl_hex_digit(char c);

/* v[0..n) joined by sep, in the arena; NULL when n is 0. */
const char *kl_join(kl_arena *a, const char *const *v, size_t n, char sep);

#endif
