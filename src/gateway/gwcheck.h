/* gwcheck.h - the MCP gateway's pure checks: tool name mangling ("server__tool") and workspace
 * paths. Libc only; any thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define GW_SERVER_NAME_MAX 64u /* a server's name: [A-Za-z0-9_-], no "__" */
#define GW_TOOL_NAME_MAX 128u  /* a tool's name as its server gives it */
#define GW_PATH_MAX 4096u      /* a workspace-relative path */
#define GW_BUILTIN_SERVER "capsem"

/* A server name we accept in the config: 1..GW_SERVER_NAME_MAX of [A-Za-z0-9_-], not containing
 * "__", not starting or ending with '_'. */
bool gw_server_name_ok(const char *s);
/* A tool name we expose: 1..GW_TOOL_NAME_MAX printable ASCII characters without spaces (the
 * MCP spec's advice: [A-Za-z0-9_.-/]; we are a little wider but refuse controls and quotes). */
bool gw_tool_name_ok(const char *s);

/* Split "server__tool" at the FIRST "__" into the two parts (copied into the caller's buffers).
 * 0, or -EINVAL when there is no "__", a part is empty or too long, or the server part is not a
 * valid server name. */
int gw_name_split(const char *name, char server[GW_SERVER_NAME_MAX + 1],
		  char tool[GW_TOOL_NAME_MAX + 1]);
/* "server__tool" into out (cap bytes). 0 or -ENOBUFS. */
int gw_name_join(const char *server, const char *tool, char *out, size_t cap);

/* A path given by the agent for the workspace file tools: relative, at most GW_PATH_MAX bytes,
 * no NUL/control characters, no ".." component, no leading '/', not empty ("." is the
 * workspace itself). Redundant "./" and "//" are allowed. 0 or -EINVAL (-EPERM for ".." or an
 * absolute path). The kernel check (openat2 RESOLVE_BENEATH) comes on top of this. */
int gw_path_check(const char *path, size_t len);
