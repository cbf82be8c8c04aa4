/* HuJSON (JSON with comments and trailing commas) read into a cJSON tree.
 *
 * The text is first turned into standard JSON of the same length (comments
 * and trailing commas become spaces), so every byte offset in the standard
 * text is the offset in the file; cJSON then parses it, and one more pass
 * records where each value starts so config errors can name line:column. */
#ifndef KL_HUJSON_H
#define KL_HUJSON_H

#include <stddef.h>
#include <cjson/cJSON.h>

struct kl_json_pos {
    const cJSON *item;
    size_t off;
};

typedef struct kl_json_doc {
    cJSON *root;
    char *text;                 /* standardized copy, NUL-terminated */
    size_t len;
    struct kl_json_pos *pos;    /* sorted by item once parsed */
    size_t npos, cap;
    size_t *line_starts;        /* offset of each line's first byte */
    size_t nlines;
} kl_json_doc;

/* Returns 0 on success. On failure returns -1, fills err and sets *err_off to
 * the byte offset of the problem. */
int kl_hujson_parse(const char *src, size_t len, kl_json_doc *doc,
                    char *err, size_t errlen, size_t *err_off);

/* Byte offset where item's value starts, or (size_t)-1 when unknown. */
size_t kl_json_doc_offset(const kl_json_doc *doc, const cJSON *item);

/* 1-based line and column (in bytes) of an offset in a parsed document. */
void kl_json_doc_linecol(const kl_json_doc *doc, size_t off, int *line, int *col);

/* The same in any text, by counting (a parse error's place). */
void kl_text_linecol(const char *text, size_t len, size_t off, int *line, int *col);

void kl_json_doc_free(kl_json_doc *doc);

#endif
