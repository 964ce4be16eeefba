/* mcputil.h - pure helpers of capsem-mcp: a JSON Schema subset validator (the one the tools'
 * inputSchemas use, so the schema a client sees is the check that runs), text from untrusted
 * bytes (valid UTF-8 for JSON strings) and MCP tool-result builders.
 *
 * No I/O; callable from any thread on objects that thread owns.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jsonrpc.h"

/* Validate v against schema. Keywords: type (a name or an array of names: object, array, string,
 * integer, number, boolean, null), properties, required, additionalProperties (false or a
 * schema), enum (strings and integers), minimum/maximum, minLength/maxLength (code points),
 * pattern (POSIX extended regex, anchored as written), items, minItems/maxItems. Others
 * (description, title, default, ...) are ignored. where names v in messages ("arguments").
 * Returns 0, or -EINVAL with a one-line reason in err (e.g. "arguments.vm: expected a string"),
 * or -ENOMEM. */
int mcp_schema_check(const json_t *schema, const json_t *v, const char *where, char *err,
		     size_t errn);

/* ---- tool results (MCP 2025-06-18 CallToolResult). Each returns a new reference or NULL. ---- */

/* {"content":[{"type":"text","text":text}],"isError":true}: a Capsem/daemon failure. */
json_t *mcp_result_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* {"content":[{"type":"text","text":text}]}; text given as bytes, made valid UTF-8. */
json_t *mcp_result_text(const void *p, size_t n);
/* {"content":[{"type":"text","text":<obj as indented JSON>}],"structuredContent":obj}; obj (an
 * object) is stolen. */
json_t *mcp_result_json(json_t *obj);
