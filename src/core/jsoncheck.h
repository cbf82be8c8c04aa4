/* Where a parsed JSON tree would not say what its bytes say, so a check on
 * the tree could be fooled: duplicate keys (parsers disagree on which one
 * counts: cJSON keeps the first, most others the last) and \u0000 escapes
 * (cJSON decodes them into a NUL that silently ends the C string). */
#ifndef KL_JSONCHECK_H
#define KL_JSONCHECK_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* A \u0000 escape anywhere in s[0..n) (a "\\u0000" of an escaped backslash
 * is text, not one). */
bool kl_json_has_nul_escape(const char *s, size_t n);

/* A copy of s[0..n) (malloc, the same length) with every lone surrogate
 * escape (\ud83d without its low half: a provider may split a pair across
 * two stream events) spelling U+FFFD, or NULL when it has none. cJSON
 * refuses such a string, where JavaScript's reader (every JS SDK) takes
 * it. */
char *kl_json_lone_surrogates_replaced(const char *s, size_t n);

/* A raw control byte (below 0x20) inside a string of s[0..n): cJSON takes
 * it as text, where a strict reader (JavaScript's, Python's) refuses the
 * whole value. */
bool kl_json_has_raw_control(const char *s, size_t n);

/* An object anywhere in the tree with two members of one name. */
bool kl_json_has_duplicate_keys(const cJSON *j);

#endif
