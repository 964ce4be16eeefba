/* gateway.h - the per-VM MCP gateway (docs/MCP.md, "The per-VM gateway").
 *
 * capsem-vm runs one on its loop: it listens on the Unix socket the vsock backend delivers guest
 * port 5003 to (<vmdir>/vsock_5003); each connection (one capsem-mcp-relay in the guest) is an
 * MCP session. The gateway is the MCP server of every session and the MCP client of every
 * configured server (stdio programs it spawns and supervises, streamable-HTTP URLs) plus its
 * built-in tools; tools are named "server__tool", decided by the [[tool_rule]]s of the egress
 * policy files, and every tools/list and tools/call is recorded in the session ledger.
 */
#pragma once

#include <stdint.h>
#include <uv.h>

struct ledger;
struct policy;

struct gateway_config {
	uv_loop_t *loop;
	const char *socket_path;    /* listen here */
	const char *config_path;    /* --mcp-config TOML (gwconf.h), NULL = defaults */
	const char *workspace;	    /* overrides [builtin] workspace when not NULL */
	const char *snapshot_store; /* the workspace's snapshot store: the snapshots_* tools */
	const char *capsem_home;    /* the user policy is <home>/user.toml */
	const char *corp_policy;    /* NULL = POLICY_CORP_PATH */
	struct ledger *ledger;	    /* NULL = nothing recorded */
	/* The current policy, kept and reloaded by the caller (capsem-vm: its egress service's,
	 * so the files are loaded once per VM). NULL: the gateway loads capsem_home's and
	 * corp_policy's files itself and reloads them when they change. */
	const struct policy *(*policy)(void *userdata);
	void *policy_userdata;
	/* put before each stdio server's command (capsem-vm's confining launcher: "capsem-vm
	 * --mcp-exec HOME TMPDIR --"), or NULL; the caller keeps it alive */
	char *const *spawn_prefix;
};

struct gateway;

/* Load the configuration and the policy, listen, start the configured servers. 0 or -errno with
 * a one-line reason in err. */
int gateway_start(const struct gateway_config *cfg, struct gateway **ret, char *err, size_t errlen);
/* Close every session, stop the servers (stdin closed, SIGTERM, SIGKILL after 1 s) and free
 * the gateway once its handles are closed and its worker jobs are done (the loop must run).
 * NULL is fine. */
void gateway_stop(struct gateway *g);

struct gateway_stats {
	uint64_t sessions, calls, blocked, errors;
};
void gateway_get_stats(const struct gateway *g, struct gateway_stats *ret);
