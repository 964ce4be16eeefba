/* html.h - HTML to readable text for the gateway's fetch tool (headings as "#", list items as
 * "- ", paragraphs and breaks as newlines; scripts, styles and other non-text elements dropped;
 * entities decoded; whitespace collapsed). Not an HTML5 parser: a bounded, single-pass tag
 * scanner that never fails on malformed input. Pure; any thread.
 */
#pragma once

#include <stddef.h>

/* Convert (p, n). 0 with *ret (malloc'ed, NUL-terminated, at most 2n + 64 bytes) and *ret_len,
 * or -ENOMEM. */
int html_to_text(const char *p, size_t n, char **ret, size_t *ret_len);
