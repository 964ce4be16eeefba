/* toml.h - a strict TOML 1.0 parser for hostile text (policy files, image configs, user config).
 *
 * toml_parse() reads a whole document from (ptr, len) into a tree that the caller owns and frees
 * with toml_free(). The tree is immutable after parsing; lookups and iteration never allocate.
 *
 * Values: tables keep their keys in document order; strings are UTF-8 with an explicit length
 * (a "\u0000" escape can put a NUL inside) and are also NUL-terminated; the four date/time kinds
 * are kept as validated RFC 3339 text, normalised to an upper-case 'T' separator and 'Z'.
 * Multi-line strings have CRLF line ends normalised to LF. Integers are int64 (overflow is an
 * error); floats are doubles, and a finite literal that overflows to infinity is an error.
 *
 * Every input is bounded: total size, nesting depth (tables, arrays and inline tables all count,
 * as do the components of dotted keys and [table.headers]), key length and number of values.
 * Libc only (also built for the static musl guest); reentrant, no global state.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

enum toml_type {
	TOML_TABLE,
	TOML_ARRAY,
	TOML_STRING,
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_BOOLEAN,
	TOML_DATETIME,	     /* offset date-time: 1979-05-27T07:32:00Z, ...-07:00 */
	TOML_DATETIME_LOCAL, /* 1979-05-27T07:32:00 */
	TOML_DATE_LOCAL,     /* 1979-05-27 */
	TOML_TIME_LOCAL,     /* 07:32:00.999 */
};

/* Where and why a parse failed. line and column are 1-based; the column counts characters
 * (UTF-8 code points), not bytes. msg is a short English phrase, NUL-terminated. */
struct toml_error {
	unsigned line;
	unsigned column;
	char msg[96];
};

/* Hard caps applied while parsing. A zero field means "use the default". */
struct toml_limits {
	size_t max_input;   /* bytes of text; default 4 MiB */
	unsigned max_depth; /* tree depth, root = 0; default 64, clamped to TOML_DEPTH_HARD_MAX */
	size_t max_key_len; /* bytes of one key component after unescaping; default 1024 */
	size_t max_values;  /* values of any kind in the tree (tables included); default 256Ki */
};

#define TOML_DEFAULT_MAX_INPUT ((size_t)4 << 20)
#define TOML_DEFAULT_MAX_DEPTH 64u
#define TOML_DEPTH_HARD_MAX 256u
#define TOML_DEFAULT_MAX_KEY_LEN ((size_t)1024)
#define TOML_DEFAULT_MAX_VALUES ((size_t)1 << 18)

struct toml_value;

/* Parse text[0, len) (it need not be NUL-terminated) with the default limits. On success returns
 * 0 and *ret_root is a TOML_TABLE owned by the caller (free with toml_free). On failure returns
 * -EBADMSG for any malformed or over-limit input (with *ret_err filled in when ret_err is
 * non-NULL), -ENOMEM, or -EINVAL for NULL arguments; *ret_root is left untouched. */
int toml_parse(const char *text, size_t len, struct toml_value **ret_root,
	       struct toml_error *ret_err);
/* Same, with explicit limits (NULL = defaults). */
int toml_parse_limits(const char *text, size_t len, const struct toml_limits *limits,
		      struct toml_value **ret_root, struct toml_error *ret_err);

/* Free a tree returned by toml_parse. Accepts NULL. Only ever call it on a root. */
void toml_free(struct toml_value *root);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct toml_value *, toml_free)
#define _cleanup_toml_free_ _cleanup_(toml_freep)

/* The value's type. v must not be NULL. */
enum toml_type toml_type(const struct toml_value *v);
/* "table", "array", "string", "integer", "float", "bool", "datetime", "datetime-local",
 * "date-local", "time-local" (the toml-test names). */
const char *toml_type_name(enum toml_type t);

/* Tables. toml_table_get returns the value under key (NUL-terminated, compared bytewise) or NULL
 * when tbl is NULL, not a table, or has no such key. Lookups are O(1) on average. */
const struct toml_value *toml_table_get(const struct toml_value *tbl, const char *key);
/* Same with an explicit key length (for keys that contain NUL). */
const struct toml_value *toml_table_getn(const struct toml_value *tbl, const char *key,
					 size_t key_len);
/* Walk "a.b.c" from root through tables (bare components only: no quoting, no array indexes).
 * NULL when any component is missing or an intermediate is not a table. */
const struct toml_value *toml_get_path(const struct toml_value *root, const char *path);
/* Number of entries (0 for NULL or a non-table), and entry i in document order: its key (owned by
 * the tree; *ret_key_len optional) and its value. NULL when i is out of range. */
size_t toml_table_size(const struct toml_value *tbl);
const char *toml_table_key(const struct toml_value *tbl, size_t i, size_t *ret_key_len);
const struct toml_value *toml_table_value(const struct toml_value *tbl, size_t i);

/* Where v was found: the byte offset in the parsed text where the value starts (for a table,
 * just after its [header] or dotted key; 0 for the root and NULL), so that a checker of the
 * tree can name a line: toml_line_at(text, len, toml_offset(v)) is its 1-based line. */
size_t toml_offset(const struct toml_value *v);
unsigned toml_line_at(const char *text, size_t len, size_t offset);

/* Arrays: size (0 for NULL or a non-array) and element i (NULL when out of range). */
size_t toml_array_size(const struct toml_value *arr);
const struct toml_value *toml_array_at(const struct toml_value *arr, size_t i);

/* Typed accessors: 0 on success, -ENOENT when v is NULL (a missing key), -EMEDIUMTYPE when v has
 * another type. The out-parameters are untouched on failure; strings stay owned by the tree. */
int toml_get_string(const struct toml_value *v, const char **ret, size_t *ret_len);
int toml_get_int(const struct toml_value *v, int64_t *ret);
int toml_get_float(const struct toml_value *v, double *ret);
int toml_get_bool(const struct toml_value *v, bool *ret);
/* Any of the four date/time kinds: its normalised text and (optional) its kind. */
int toml_get_datetime(const struct toml_value *v, const char **ret_text, enum toml_type *ret_kind);
