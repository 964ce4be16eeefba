/* fuzz-toml.c - the TOML parser on arbitrary bytes (policy files and configs are hostile). On
 * success the whole tree is walked and its invariants re-checked: the root is a table, depth
 * stays within the limit, table keys are unique and found again by lookup, strings are
 * NUL-terminated at their length, date/times are short normalised text. On failure the error
 * must carry a position and a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct toml_value *v, unsigned depth)
{
	const char *s;
	size_t n;

	if (depth > TOML_DEFAULT_MAX_DEPTH + 1)
		__builtin_trap();
	switch (toml_type(v)) {
	case TOML_TABLE:
		for (size_t i = 0; i < toml_table_size(v); i++) {
			const char *k = toml_table_key(v, i, &n);
			const struct toml_value *c = toml_table_value(v, i);
			if (!k || !c || k[n] != '\0' || toml_table_getn(v, k, n) != c)
				__builtin_trap();
			check(c, depth + 1);
		}
		if (toml_table_key(v, toml_table_size(v), NULL))
			__builtin_trap();
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < toml_array_size(v); i++) {
			const struct toml_value *c = toml_array_at(v, i);
			if (!c)
				__builtin_trap();
			check(c, depth + 1);
		}
		break;
	case TOML_STRING:
		if (toml_get_string(v, &s, &n) != 0 || s[n] != '\0')
			__builtin_trap();
		break;
	case TOML_INTEGER:
	case TOML_FLOAT:
	case TOML_BOOLEAN:
		break;
	default:
		if (toml_get_datetime(v, &s, NULL) != 0 || strlen(s) < 8 || strchr(s, ' ') ||
		    strchr(s, 'z') || strchr(s, 't'))
			__builtin_trap();
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct toml_value *root = NULL;
	struct toml_error err = { 0 };
	int r = toml_parse((const char *)data, size, &root, &err);

	if (r == 0) {
		if (!root || toml_type(root) != TOML_TABLE)
			__builtin_trap();
		check(root, 0);
		toml_free(root);
	} else if (r != -EBADMSG && r != -ENOMEM) {
		__builtin_trap();
	} else if (err.line == 0 || err.column == 0 || err.msg[0] == '\0') {
		__builtin_trap();
	}
	return 0;
}
