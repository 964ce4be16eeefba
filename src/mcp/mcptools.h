/* mcptools.h - capsem-mcp's tools: their descriptions and input schemas (tools.json, compiled
 * in) and their implementations, each a few blocking requests to capsemd (docs/API.md).
 *
 * A tool runs on a worker thread of its own with a cancellation fd: when that fd becomes
 * readable the tool stops waiting as soon as it can (an exec is killed, a half-created VM is
 * deleted) and its result is thrown away by the caller.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>

#define MCP_EXEC_OUTPUT_MAX (1u << 20)	  /* bytes of stdout, and of stderr, kept per exec */
#define MCP_EXEC_DEFAULT_TIMEOUT_MS 60000 /* when the call names no timeout */
#define MCP_LOG_DEFAULT_TAIL 200

struct mcp_ctx {
	int cancel_fd; /* readable once the call is cancelled; -1: never */
	char err[1024];
};

typedef json_t *(*mcp_tool_fn)(struct mcp_ctx *ctx, json_t *args);

struct mcp_tool {
	const char *name;
	json_t *def;	/* {name, title, description, inputSchema} (owned by the table) */
	json_t *schema; /* borrowed from def */
	mcp_tool_fn run;
};

/* Parse the compiled-in tools.json and bind every entry to its implementation. Call once from
 * the main thread before anything else here. 0, or -EINVAL when tools.json and the code disagree
 * (a programmer error, caught by the unit tests), -ENOMEM. */
int mcp_tools_init(void);
void mcp_tools_done(void);
/* The tools in tools/list order; *ret_n gets their number. Valid after mcp_tools_init(). */
const struct mcp_tool *mcp_tools(size_t *ret_n);
/* The tool called name, or NULL. */
const struct mcp_tool *mcp_tool_find(const char *name);
/* The "tools" array of a tools/list result (a new reference) or NULL. */
json_t *mcp_tools_list(void);

/* Is the call cancelled? (ctx->cancel_fd readable, without consuming it.) */
int mcp_ctx_cancelled(const struct mcp_ctx *ctx);
