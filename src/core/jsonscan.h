/* Byte-level JSON without building a tree. Request bodies are megabytes of
 * prompt of which keyless reads a handful of top-level members: validate
 * the text in one pass that allocates nothing, note where the wanted
 * members are, decode only those (cJSON on the member's bytes), and splice
 * the body instead of re-serializing it. */
#ifndef KL_JSONSCAN_H
#define KL_JSONSCAN_H

#include <stdbool.h>
#include <stddef.h>

/* Deeper nesting is refused (cJSON's own limit is 1000). */
#define KL_JSON_MAX_DEPTH 512

/* Is s[0..len) exactly one JSON value (RFC 8259; white space is space, tab,
 * CR, LF) with optional white space around it? Returns 0, or -1 with
 * *err_at set to the offset of the first byte that cannot be right (len when
 * the text ends too early). Does not check that strings are valid UTF-8. */
int kl_json_validate(const char *s, size_t len, size_t *err_at);

struct kl_json_want;

/* kl_json_validate that also, when the value is an object, notes where the
 * wanted top-level members are, as kl_json_scan_members does: one pass over
 * a body instead of two. */
int kl_json_validate_members(const char *s, size_t len, size_t *err_at,
                             struct kl_json_want *w, size_t nw);

/* The functions below expect text kl_json_validate accepted (on other text
 * they stop early but never read out of bounds). */

/* Index just past the JSON value starting at i (after leading white space),
 * or (size_t)-1 when the text ends first. */
size_t kl_json_skip_value(const char *s, size_t len, size_t i);

/* p is just past a member name's closing quote: the first byte of its value
 * (after the ':' and white space), or 0 when no ':' follows. A pre-filter
 * for hand scans: it does not check that p really ends a member name. */
char kl_json_value_after_key(const char *p, const char *end);
/* The same, where the value starts (NULL for 0). */
const char *kl_json_value_at(const char *p, const char *end);

/* Offset just after the opening '{' of the top-level object, or -1. */
size_t kl_json_object_open(const char *s, size_t len);

/* A member wanted from an object by kl_json_scan_members. */
struct kl_json_want {
    const char *key;
    size_t start, end;          /* the first occurrence's value; end == 0: absent */
    unsigned count;             /* how often the key appears */
    unsigned folded;            /* kl_json_validate_members: how often a key differing from it only in the case
                                   of its letters appears ("Model", or "max_to\u212Aens" with the Kelvin sign),
                                   which Go's JSON reader takes for it */
};

/* One pass over the members of the object s[0..len) (white space around it
 * allowed), filling in the wanted keys. Keys written with escapes
 * ("mod\u0065l") are compared decoded, as every JSON parser would read them.
 * Returns 0, or -1 when s is not an object or ends early (members before
 * that point are filled in). */
int kl_json_scan_members(const char *s, size_t len, struct kl_json_want *w, size_t nw);

/* Step through the elements of the array s[0..len): *pos starts at 0; each
 * call sets [*vstart,*vend) to the next element and returns true, or
 * returns false at the end (or when s is not an array). When the element is
 * an object, the wanted members w (nw may be 0) are found in the same pass
 * (offsets relative to the element); otherwise w is cleared. */
bool kl_json_array_next(const char *s, size_t len, size_t *pos, size_t *vstart, size_t *vend,
                        struct kl_json_want *w, size_t nw);

/* Step through the members of the object s[0..len) without skipping a
 * value before it is needed: *pos starts at 0; each call skips the value
 * the previous call found, then sets the next key's bytes (between its
 * quotes, escapes as written) and *vstart to where its value starts, and
 * returns true. At the closing brace it returns false with *pos just past
 * it. A caller that has what it wants stops early and never pays for the
 * values after it (the rest of a megabyte message). */
bool kl_json_member_next(const char *s, size_t len, size_t *pos, const char **key,
                         size_t *klen, size_t *vstart);

/* At most max bytes of the string value that starts s (its end may be far
 * beyond; only about max bytes are looked at), escapes as written; false
 * when s does not start with a string. */
bool kl_json_string_prefix(const char *s, size_t len, size_t max, const char **raw,
                           size_t *raw_len);

#endif
