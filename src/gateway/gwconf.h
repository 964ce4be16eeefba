/* gwconf.h - the MCP gateway's configuration file (capsem-vm --mcp-config FILE, docs/MCP.md):
 *
 *   [servers.NAME]            one per MCP server; NAME as gw_server_name_ok(), not "capsem"
 *   command = "python3"       stdio server: the program (PATH is searched) ...
 *   args = ["server.py"]      ... its arguments
 *   env = { KEY = "value" }   ... extra environment (besides PATH, HOME, LANG, TMPDIR, USER)
 *   cwd = "/dir"              ... its working directory (default: the config file's)
 *   url = "https://h/mcp"     or a streamable-HTTP server (exactly one of command and url)
 *   headers = { X-Key = "v" } ... extra request headers (not Accept, Content-Type,
 *                             Mcp-Session-Id, MCP-Protocol-Version)
 *   timeout = 60              seconds a tools/call may take (default: [limits] call_timeout)
 *   enabled = true
 *
 *   [builtin]
 *   enabled = true            the capsem__* tools (fetch, grep, headers, file tools)
 *   workspace = "/host/dir"   enables list_files/read_file/write_file on that directory
 *
 *   [limits]
 *   call_timeout = 60         seconds, 1..3600
 *   max_pending = 64          requests in flight per session, 1..1024
 *
 * Pure (libc + basic's TOML parser); the caller's thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GWCONF_MAX_FILE (256u * 1024u)
#define GWCONF_MAX_SERVERS 32u
#define GWCONF_MAX_ARGS 64u  /* args, env entries, headers */
#define GWCONF_MAX_STR 4096u /* any one string */
#define GWCONF_DEFAULT_TIMEOUT_MS 60000u
#define GWCONF_DEFAULT_MAX_PENDING 64u

struct gwconf_server {
	char *name;
	char **argv;	/* stdio: command then args (NULL-terminated); NULL for HTTP */
	char **env;	/* "KEY=VALUE", NULL-terminated, or NULL */
	char *cwd;	/* or NULL */
	char *url;	/* HTTP: http:// or https:// URL; NULL for stdio */
	char **headers; /* HTTP: "Name: value", NULL-terminated, or NULL */
	uint64_t timeout_ms;
};

struct gwconf {
	struct gwconf_server *servers;
	size_t n_servers;
	bool builtin;	 /* [builtin] enabled */
	char *workspace; /* [builtin] workspace, or NULL */
	uint64_t call_timeout_ms;
	unsigned max_pending;
};

/* The configuration when there is no file: no servers, builtins on, no workspace. NULL on OOM. */
struct gwconf *gwconf_new_default(void);
/* Parse text. 0 with *ret, or -EBADMSG with a one-line message in err ("line N: ..."), -ENOMEM. */
int gwconf_parse(const char *text, size_t len, struct gwconf **ret, char *err, size_t errlen);
/* Read and parse a file (at most GWCONF_MAX_FILE bytes). Messages start with the path. */
int gwconf_load(const char *path, struct gwconf **ret, char *err, size_t errlen);
void gwconf_free(struct gwconf *c);
