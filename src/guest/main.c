/* main.c - capsem-guest, the one static binary behind the guest's init, agent and proxies.
 *
 * Dispatch on the basename of argv[0]: "init" or "capsem-init" runs PID 1 (init.c), a name
 * starting with "capsem-agent" runs the agent (agent.c), "capsem-doctor" the guest's self-check
 * (doctor.c), "capsem-net-proxy" and
 * "capsem-dns-proxy" the egress proxies (netproxy.c, dnsproxy.c), "capsem-snapshots" the
 * workspace's snapshots through the MCP gateway (snapcmd.c), "capsem-mcp-relay" the
 * agents' MCP server (mcprelay.c), "poweroff", "halt" and "reboot" PID 1's clean shutdown
 * (init.c); "capsem-guest init|agent|net-proxy|dns-proxy|mcp-relay ..."
 * selects one explicitly. Trust boundary: none (argv comes from the
 * kernel, capsem-init or a developer).
 */
#include "agent.h"
#include "chan.h"
#include "dnsproxy.h"
#include "doctor.h"
#include "init.h"
#include "macro.h"
#include "mcprelay.h"
#include "netproxy.h"
#include "snapcmd.h"

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

int main(int argc, char **argv)
{
	const char *name = argc > 0 && argv[0] ? base_name(argv[0]) : "";

	if (streq(name, "init") || streq(name, "capsem-init"))
		return init_main(argc, argv);
	if (strncmp(name, "capsem-agent", strlen("capsem-agent")) == 0)
		return agent_main(argc, argv);
	if (streq(name, "poweroff") || streq(name, "halt") || streq(name, "reboot"))
		return init_power_main(name, argc, argv);
	if (streq(name, "capsem-doctor"))
		return doctor_main(argc, argv);
	if (streq(name, "capsem-net-proxy"))
		return netproxy_main(argc, argv);
	if (streq(name, "capsem-dns-proxy"))
		return dnsproxy_main(argc, argv);
	if (streq(name, "capsem-mcp-relay"))
		return mcprelay_main(argc, argv);
	if (streq(name, "capsem-chan"))
		return chan_main(argc, argv);
	if (streq(name, "capsem-snapshots"))
		return snapcmd_main(argc, argv);
	if (argc >= 2 && streq(argv[1], "mcp-relay"))
		return mcprelay_main(argc - 1, argv + 1);
	if (argc >= 2 && streq(argv[1], "net-proxy"))
		return netproxy_main(argc - 1, argv + 1);
	if (argc >= 2 && streq(argv[1], "dns-proxy"))
		return dnsproxy_main(argc - 1, argv + 1);
	if (argc >= 2 && streq(argv[1], "snapshots"))
		return snapcmd_main(argc - 1, argv + 1);
	if (argc >= 2 && streq(argv[1], "doctor"))
		return doctor_main(argc - 1, argv + 1);
	if (argc >= 2 && streq(argv[1], "init"))
		return init_main(argc - 1, argv + 1);
	if (argc >= 2 && streq(argv[1], "agent"))
		return agent_main(argc - 1, argv + 1);
	fprintf(stderr, "usage: capsem-guest init | agent | net-proxy | dns-proxy | mcp-relay "
			"[OPTIONS]\n"
			"  (or run it as /init, capsem-init, capsem-agent, capsem-net-proxy,\n"
			"  capsem-dns-proxy or capsem-mcp-relay)\n");
	return 2;
}
