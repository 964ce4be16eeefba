/* cols.h - the ledger's tables as data: for each event kind its table and columns (type, cap,
 * allowed values, required), shared by the writer (validation, INSERT statements) and the
 * reader (row -> JSON). Internal to src/ledger; must match schema.sql (a unit test checks). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ledger.h"

enum col_type {
	COL_INT,  /* integer in [0, max] */
	COL_BOOL, /* 0/1; false when not given */
	COL_TEXT, /* UTF-8, at most max bytes, optionally one of values[] */
	COL_JSON, /* a JSON array of strings stored as text, at most max bytes */
	COL_REAL, /* a number >= 0 */
};

#define COL_REQUIRED 1u

struct col {
	const char *name;
	enum col_type type;
	unsigned flags;
	int64_t max;
	const char *const *values; /* NULL-terminated, or NULL for any text */
};

#define LEDGER_MAX_COLS 24

struct kind_desc {
	const char *name;	/* event kind, also the table name */
	const struct col *cols; /* cols[0] is always ts; the id column is implicit */
	size_t n_cols;
};

/* The descriptor of an event kind (k < LEDGER_KIND_MAX). */
const struct kind_desc *cols_kind(enum ledger_kind k);
/* The index of column name in kd, or -1. */
int cols_find(const struct kind_desc *kd, const char *name);
/* Is s one of c->values (always 1 when c->values is NULL)? */
int cols_value_allowed(const struct col *c, const char *s);
