/* gwcheck.c - tool name mangling and workspace path checks for the MCP gateway (gwcheck.h).
 *
 * Trust boundary: names and paths come from the guest's agent (tool calls) and from MCP servers
 * (tool lists); every check is bounded by the caps in gwcheck.h. Pure; any thread.
 */
#include "gwcheck.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

bool gw_server_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > GW_SERVER_NAME_MAX || strstr(s, "__") || s[0] == '_' || s[n - 1] == '_')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
			return false;
	return true;
}

bool gw_tool_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > GW_TOOL_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == '"' || s[i] == '\\')
			return false;
	return true;
}

int gw_name_split(const char *name, char server[GW_SERVER_NAME_MAX + 1],
		  char tool[GW_TOOL_NAME_MAX + 1])
{
	const char *sep = name ? strstr(name, "__") : NULL;
	if (!sep)
		return -EINVAL;
	size_t sl = (size_t)(sep - name), tl = strlen(sep + 2);
	if (sl == 0 || sl > GW_SERVER_NAME_MAX || tl == 0 || tl > GW_TOOL_NAME_MAX)
		return -EINVAL;
	memcpy(server, name, sl);
	server[sl] = 0;
	memcpy(tool, sep + 2, tl + 1);
	if (!gw_server_name_ok(server) || !gw_tool_name_ok(tool))
		return -EINVAL;
	return 0;
}

int gw_name_join(const char *server, const char *tool, char *out, size_t cap)
{
	int r = snprintf(out, cap, "%s__%s", server, tool);
	return r < 0 || (size_t)r >= cap ? -ENOBUFS : 0;
}

int gw_path_check(const char *path, size_t len)
{
	if (!path || len == 0 || len > GW_PATH_MAX)
		return -EINVAL;
	if (path[0] == '/')
		return -EPERM;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)path[i] < 0x20 || path[i] == 0x7f)
			return -EINVAL;
	size_t i = 0;
	while (i < len) {
		size_t j = i;
		while (j < len && path[j] != '/')
			j++;
		if (j - i == 2 && path[i] == '.' && path[i + 1] == '.')
			return -EPERM;
		i = j + 1;
	}
	return 0;
}
