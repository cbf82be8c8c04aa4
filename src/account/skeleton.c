#include "account/skeleton.h"

#include <stdlib.h>
#include <string.h>

#include "core/text.h"

static void put(struct kl_skeleton *s, char c)
{
    kl_buf_put(&s->out, &c, 1);
}

static size_t string_keep(const struct kl_skeleton *s)
{
    return s->string_keep ? s->string_keep : KL_SKEL_STRING_KEEP;
}

static size_t numbers_keep(const struct kl_skeleton *s)
{
    return s->numbers_keep ? s->numbers_keep : KL_SKEL_NUMBERS_KEEP;
}

static bool number_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Is n[0..len) a JSON number? A dropped one that is not would make a
 * skeleton valid whose answer was not. */
static bool json_number(const char *n, size_t len)
{
    size_t i = 0;
    if (i < len && n[i] == '-')
        i++;
    if (i < len && n[i] == '0')
        i++;
    else if (i < len && n[i] >= '1' && n[i] <= '9')
        while (i < len && n[i] >= '0' && n[i] <= '9')
            i++;
    else
        return false;
    if (i < len && n[i] == '.') {
        size_t d = ++i;
        while (i < len && n[i] >= '0' && n[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    if (i < len && (n[i] == 'e' || n[i] == 'E')) {
        i++;
        if (i < len && (n[i] == '+' || n[i] == '-'))
            i++;
        size_t d = i;
        while (i < len && n[i] >= '0' && n[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    return i == len;
}

/* The number being dropped has ended (at a byte that is not part of it): a
 * well-formed one goes with its comma; any other is written back with its
 * comma, and the rest copied as it comes. */
static void drop_end(struct kl_skeleton *s)
{
    s->in_drop = false;
    if (json_number(s->drop, s->drop_len))
        return;
    put(s, ',');
    kl_buf_put(&s->out, s->drop, s->drop_len);
    s->raw = true;
}

static bool in_array(const struct kl_skeleton *s)
{
    return s->depth > 0 && s->depth <= KL_SKEL_DEPTH && s->open[s->depth - 1] == '[';
}

static bool in_object(const struct kl_skeleton *s)
{
    return s->depth > 0 && s->depth <= KL_SKEL_DEPTH && s->open[s->depth - 1] == '{';
}

/* Where a string is invalid in what a cut drops (an unknown escape, a
 * \u not followed by four hex digits, half a surrogate pair: what cJSON
 * refuses), the skeleton is made invalid too, with a lone low surrogate,
 * and the rest copied as it comes. */
static void cut_invalid(struct kl_skeleton *s, char c)
{
    kl_buf_str(&s->out, "\\udc00");
    put(s, c);
    s->raw = true;
}

/* One byte within a string. A value's string is copied up to
 * KL_SKEL_STRING_KEEP bytes, then cut before the next character that starts
 * whole: not inside a UTF-8 sequence, an escape, or between the halves of a
 * surrogate pair (a lone half is not JSON to cJSON). The escapes of what is
 * cut are still read, to the closing quote. */
static void string_byte(struct kl_skeleton *s, char c)
{
    bool bad = false;
    if (s->hex_left > 0) {
        int v = kl_hex_digit(c);
        if (v < 0) {
            bad = true;
        } else {
            s->hex = s->hex * 16 + (unsigned)v;
            if (--s->hex_left == 0) {
                bool high = s->hex >= 0xD800 && s->hex <= 0xDBFF, low = s->hex >= 0xDC00 && s->hex <= 0xDFFF;
                bad = low != s->low_next;
                s->low_next = high;
            }
        }
    } else if (s->esc) {
        s->esc = false;
        if (c == 'u') {
            s->hex_left = 4;
            s->hex = 0;
        } else {
            bad = s->low_next || !strchr("\"\\/bfnrt", c) || c == '\0';
        }
    } else if (c == '"') {
        if (s->cut && s->low_next) {
            cut_invalid(s, c);
            return;
        }
        s->in_str = false; /* after a lone half copied, invalid as it came */
        put(s, c);
        return;
    } else {
        bool starts = ((unsigned char)c & 0xC0) != 0x80;
        if (c == '\\') {
            if (!s->cut && !s->is_key && !s->low_next && s->str_len >= string_keep(s))
                s->cut = true;
            s->esc = true;
        } else {
            bad = s->low_next;
            if (!bad && !s->cut && !s->is_key && starts && s->str_len >= string_keep(s))
                s->cut = true;
        }
    }
    if (s->cut) {
        if (bad)
            cut_invalid(s, c);
        return;
    }
    put(s, c);
    s->str_len++;
    if (bad) /* copied, invalid as it came; nothing after it needs reading */
        s->raw = true;
}

/* One byte outside strings. */
static void structure_byte(struct kl_skeleton *s, char c)
{
    bool num = number_char(c);
    if (num && !s->num_run && in_array(s) && s->numbers)
        s->elems++;
    s->num_run = num;
    if (s->in_drop) {
        if (number_char(c) && s->drop_len < sizeof(s->drop)) {
            s->drop[s->drop_len++] = c;
            return;
        }
        if (number_char(c)) { /* longer than any number worth dropping: written back */
            s->in_drop = false;
            put(s, ',');
            kl_buf_put(&s->out, s->drop, s->drop_len);
            put(s, c);
            s->raw = true;
            return;
        }
        drop_end(s);
        if (s->raw) {
            put(s, c);
            return;
        }
    }
    if (s->comma_held) {
        if (blank(c))
            return;
        s->comma_held = false;
        if ((c >= '0' && c <= '9') || c == '-') {
            s->in_drop = true;
            s->drop[0] = c;
            s->drop_len = 1;
            return;
        }
        put(s, ',');
    }
    switch (c) {
    case '{':
    case '[':
        if (in_array(s))
            s->numbers = false;
        if (s->depth == KL_SKEL_DEPTH) {
            s->raw = true;
            break;
        }
        s->open[s->depth++] = (unsigned char)c;
        s->numbers = c == '[';
        s->elems = 0;
        s->key_next = c == '{';
        break;
    case '}':
    case ']':
        if (s->depth == 0) {
            s->raw = true;
            break;
        }
        s->depth--;
        s->numbers = false; /* an array around it holds more than numbers */
        s->key_next = false;
        break;
    case ',':
        /* after an element only: "[,0]" is not JSON, and "[]" would be */
        if (in_array(s) && s->numbers && s->elems >= numbers_keep(s)) {
            s->comma_held = true;
            s->num_run = false;
            return;
        }
        s->key_next = in_object(s);
        break;
    case '"':
        if (in_array(s))
            s->numbers = false;
        s->in_str = true;
        s->is_key = in_object(s) && s->key_next;
        s->key_next = false;
        s->cut = s->esc = s->low_next = false;
        s->hex_left = 0;
        s->str_len = 0;
        break;
    case 't':
    case 'f':
    case 'n':
        if (in_array(s))
            s->numbers = false;
        break;
    default:
        break;
    }
    put(s, c);
}

/* Past the numbers an array keeps, the rest of them in one pass: what
 * structure_byte does for a comma, blanks and a well-formed number, without
 * writing anything. Returns where a byte needs structure_byte (len: none). */
static size_t skip_dropped(struct kl_skeleton *s, const char *data, size_t len, size_t i)
{
    for (; i < len; i++) {
        char c = data[i];
        if (s->in_drop) {
            if (number_char(c) && s->drop_len < sizeof(s->drop)) {
                s->drop[s->drop_len++] = c;
                continue;
            }
            if (number_char(c) || !json_number(s->drop, s->drop_len))
                return i; /* written back there */
            s->in_drop = false;
        }
        if (s->comma_held) {
            if (blank(c))
                continue;
            if (!((c >= '0' && c <= '9') || c == '-'))
                return i; /* the comma is written there */
            s->comma_held = false;
            s->in_drop = true;
            s->drop[0] = c;
            s->drop_len = 1;
        } else if (c == ',') {
            s->comma_held = true; /* still in the array, still past its keep */
        } else {
            return i;
        }
    }
    return len;
}

void kl_skeleton_feed(struct kl_skeleton *s, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s->raw) {
            kl_buf_put(&s->out, data + i, len - i);
            return;
        }
        if (!s->in_str) {
            if (s->in_drop || s->comma_held)
                i = skip_dropped(s, data, len, i);
            if (i < len)
                structure_byte(s, data[i]);
            continue;
        }
        /* the plain bytes of a string in one piece: copied up to the cut,
         * or dropped after it */
        size_t j = i;
        if (!s->esc && s->hex_left == 0 && !s->low_next) {
            size_t room = s->cut || s->is_key ? len - i
                          : s->str_len < string_keep(s) ? string_keep(s) - s->str_len : 0;
            room = room < len - i ? room : len - i;
            const char *q = memchr(data + i, '"', room);
            const char *b = memchr(data + i, '\\', q ? (size_t)(q - (data + i)) : room);
            j = b ? (size_t)(b - data) : q ? (size_t)(q - data) : i + room;
        }
        if (j == i) {
            string_byte(s, data[i]);
            continue;
        }
        if (!s->cut) {
            kl_buf_put(&s->out, data + i, j - i);
            s->str_len += j - i;
        }
        i = j - 1;
    }
}

void kl_skeleton_free(struct kl_skeleton *s)
{
    free(s->out.p);
    s->out = (struct kl_buf){0};
}
