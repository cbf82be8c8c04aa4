/* Small text helpers shared by several stages. */
#ifndef KL_TEXT_H
#define KL_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"

struct cJSON;

/* 0-15 for a hex digit, else -1. */
int kl_hex_digit(char c);

/* 64-bit FNV-1a of p[0..n) continued from h (start with KL_FNV64_START):
 * names of table slots and buckets, not a defence against chosen input. */
#define KL_FNV64_START 14695981039346656037ull
uint64_t kl_fnv64(uint64_t h, const void *p, size_t n);

/* The text between the first <tag> and the </tag> after it in an XML
 * document (AWS's answers: no nesting of the same tag, no CDATA), at most
 * outlen - 1 bytes, control bytes as '?'; "" when absent. Entities are not
 * decoded. Returns the whole text's length: outlen or more means it was
 * cut. */
size_t kl_xml_field(const char *doc, const char *tag, char *out, size_t outlen);

/* "2026-11-27T14:40:00Z" (fractions of a second allowed, as AWS and
 * Google write expiry times; an offset such as "+05:00" is taken off, no
 * zone at all is UTC): ms since the epoch, or 0 when it is not such a
 * time. */
int64_t kl_iso8601_ms(const char *s);

/* Number formatting without printf, for text written on every request
 * (ids, lengths, ports): v in decimal at out, no NUL, at most 20 digits;
 * returns the number of digits. */
size_t kl_fmt_u64(char *out, uint64_t v);

/* The low 4 * n bits of v as n lowercase hex digits at out, no NUL. */
void kl_fmt_hex(char *out, uint64_t v, size_t n);

/* a, sep, b into out[cap] with a NUL; false (out then empty) when it does
 * not fit. */
bool kl_join2(char *out, size_t cap, const char *a, char sep, const char *b);

/* prefix, cJSON's compact text of j, suffix, in the arena; j is freed.
 * Aborts when out of memory, as the arena does. */
char *kl_json_print_arena(kl_arena *a, struct cJSON *j, const char *prefix, const char *suffix);
/* Every string in a parsed JSON document that holds credentials (a
 * client secret, a refresh token, a session token), wiped before the tree
 * is freed. */
void kl_json_wipe_strings(struct cJSON *o);

/* v[0..n) joined by sep, in the arena; NULL when n is 0. */
const char *kl_join(kl_arena *a, const char *const *v, size_t n, char sep);

/* Text that must be UTF-8 (PostgreSQL refuses anything else, JSON readers
 * choke on it) but comes from callers: every byte that does not begin a
 * well-formed sequence (RFC 3629) becomes U+FFFD. kl_utf8_clean_len is the
 * length of the result without its NUL; kl_utf8_clean writes it and the NUL
 * to out (that length + 1 bytes) and returns the length. A string that is
 * already UTF-8 comes out unchanged. */
size_t kl_utf8_clean_len(const char *s);
/* The same, s's strlen known: it equals len exactly when s is UTF-8
 * already (a replaced byte grows by two), so that s is its own clean copy. */
size_t kl_utf8_clean_len_n(const char *s, size_t len);
size_t kl_utf8_clean(char *out, const char *s);
/* The length of the well-formed UTF-8 sequence (RFC 3629) at s, a NUL-
 * terminated string, or 0: no overlong forms, no surrogates, nothing above
 * U+10FFFF. */
size_t kl_utf8_seq(const char *s);

/* The most bytes of a caller's own free text (a request's path, its
 * User-Agent) kept where one line or row per request holds it: the
 * record, a hook's metadata, the access log (record/record.c says why). */
#define KL_CALLER_TEXT_MAX 1024

/* s, or (in the arena) its first max bytes less a UTF-8 character the cut
 * would split; NULL for NULL. */
const char *kl_text_prefix(kl_arena *a, const char *s, size_t max);

/* What a body of text says, as one short line for a message (a proxy's
 * HTML error page, a plain-text error): markup tags dropped, each run of
 * white space and control bytes one space, trimmed, cut to fit out (cap
 * bytes with the NUL) at a character's start, "..." marking the cut.
 * Returns the length written. */
size_t kl_text_gist(const char *s, size_t n, char *out, size_t cap);

#endif
