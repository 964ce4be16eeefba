/* gwsnap.h - the gateway's workspace snapshot tools (built-in server "capsem"): snapshots_list,
 * _create, _changes, _revert, _history, _delete, _compact, on the VM's snapshot store
 * (src/workspace/snapstore.h). Tool policy and ledger rows apply to them like to any tool (the
 * caller, gwcall.c, does both).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>

/* The tools' definitions ({name, description, inputSchema}), plain names. New reference or
 * NULL. */
json_t *gwsnap_tools(void);
/* True for a snapshot tool's plain name. */
bool gwsnap_is_tool(const char *tool);
/* Run one snapshot tool on the store at store_dir for the workspace at workspace (absolute
 * paths). Returns a CallToolResult (new reference; a failure is a result with isError), or NULL
 * on allocation failure. Blocking (disk): a worker thread. */
json_t *gwsnap_call(const char *store_dir, const char *workspace, const char *tool,
		    const json_t *args);
