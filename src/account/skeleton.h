/* The skeleton of a whole JSON answer too large to keep as it came.
 *
 * A whole (non-stream) answer is kept to read its usage at the end. Most
 * are a few kilobytes; an embeddings batch is hundreds of megabytes of
 * vectors around the two members that matter (model, usage), and a long
 * answer is mostly its text. Past a megabyte, keyless keeps the answer's
 * skeleton instead: every member and structure as it came, but a string
 * longer than 1 KiB cut to its first 1 KiB (whole characters and escapes)
 * and an array of numbers to its first 16 numbers. Keys, models, usage,
 * stop reasons and tool names are short and come through whole, so the
 * usage of an answer of any size is read from a few kilobytes, and a worker
 * never holds a copy of a large answer it only relays.
 *
 * Fed as the answer arrives; input that is not JSON stays not JSON (no cut
 * joins two tokens into one). */
#ifndef KL_SKELETON_H
#define KL_SKELETON_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

#define KL_SKEL_STRING_KEEP 1024
#define KL_SKEL_NUMBERS_KEEP 16
#define KL_SKEL_DEPTH 256

struct kl_skeleton {
    size_t string_keep, numbers_keep;   /* 0: KL_SKEL_STRING_KEEP, KL_SKEL_NUMBERS_KEEP (a test's smaller ones) */
    struct kl_buf out;                  /* the skeleton so far (owned; kl_skeleton_free) */
    unsigned char open[KL_SKEL_DEPTH];  /* '{' or '[' for each open container */
    size_t depth;                       /* past KL_SKEL_DEPTH, the rest is copied as it comes */
    bool key_next;                      /* in an object, where a key comes next */
    bool in_str, is_key, esc, cut;      /* within a string; its escape; dropped to its end */
    int hex_left;                       /* \u digits still to come */
    unsigned hex;                       /* their value so far */
    bool low_next;                      /* after a high surrogate: its low half comes next */
    size_t str_len;                     /* bytes of the string copied */
    bool numbers;                       /* the innermost array holds only numbers so far */
    size_t elems;                       /* the numbers it holds so far */
    bool num_run;                       /* the last byte outside strings was part of a number */
    bool comma_held;                    /* a comma dropped with the number it may precede */
    bool in_drop;                       /* within a number being dropped */
    char drop[40];                      /* its bytes, to write back one that is not JSON */
    size_t drop_len;
    bool raw;                           /* too deep, or not JSON: copied as it comes */
};

/* Appends the skeleton of data (the answer's next len bytes) to s->out. */
void kl_skeleton_feed(struct kl_skeleton *s, const char *data, size_t len);

void kl_skeleton_free(struct kl_skeleton *s);

#endif
