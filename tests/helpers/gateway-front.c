/* gateway-front.c - the per-VM MCP gateway without a VM, for tests and benchmarks
 * (tests/e2e/test_mcp_gateway.py, bench/bench_mcp.py).
 *
 * A guest's capsem-mcp-relay reaches the gateway as a Unix stream connection on
 * <vmdir>/vsock_5003; this front end runs the same gateway_start() on any Unix socket path, so a
 * test can connect to it directly (or run capsem-agent-host mcp-relay --unix PATH in front).
 *
 *   gateway-front --socket PATH [--config FILE] [--home DIR] [--corp FILE] [--ledger FILE]
 *                 [--workspace DIR] [--debug]
 *
 * The policy is <home>/user.toml (home: --home or $CAPSEM_HOME) and --corp (default: none).
 * Prints "ready" on stdout once listening; on SIGTERM/SIGINT stops the gateway, lets the loop
 * finish (servers stopped, ledger flushed) and exits 0. Not installed.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gateway.h"
#include "home.h"
#include "ledger.h"
#include "log.h"

static struct gateway *gw;
static uv_signal_t sigs[2];

static void on_signal(uv_signal_t *s, int signum)
{
	gateway_stop(gw);
	gw = NULL;
	for (size_t i = 0; i < 2; i++)
		if (!uv_is_closing((uv_handle_t *)&sigs[i]))
			uv_close((uv_handle_t *)&sigs[i], NULL);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
					      { "config", required_argument, NULL, 'c' },
					      { "home", required_argument, NULL, 'H' },
					      { "corp", required_argument, NULL, 'C' },
					      { "ledger", required_argument, NULL, 'l' },
					      { "workspace", required_argument, NULL, 'w' },
					      { "debug", no_argument, NULL, 'd' },
					      { 0 } };
	struct gateway_config cfg = { 0 };
	const char *ledger_path = NULL;
	struct ledger *ledger = NULL;
	char err[700] = "";
	int c, r;

	struct sigaction ign = { .sa_handler = SIG_IGN };
	(void)sigaction(SIGPIPE, &ign, NULL); /* a server that exits: EPIPE, not a signal */
	log_setup("gateway-front", LOG_LVL_INFO);
	log_setup_from_env();
	/* the installation's home (home.h: $CAPSEM_HOME, else ~/.capsem) unless --home names one */
	_cleanup_free_ char *home = NULL;
	if (capsem_home(&home) == 0)
		cfg.capsem_home = home;
	cfg.corp_policy = "/nonexistent/capsem-corp.toml";
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 's':
			cfg.socket_path = optarg;
			break;
		case 'c':
			cfg.config_path = optarg;
			break;
		case 'H':
			cfg.capsem_home = optarg;
			break;
		case 'C':
			cfg.corp_policy = optarg;
			break;
		case 'l':
			ledger_path = optarg;
			break;
		case 'w':
			cfg.workspace = optarg;
			break;
		case 'd':
			log_setup("gateway-front", LOG_LVL_DEBUG);
			break;
		default:
			return 2;
		}
	}
	if (!cfg.socket_path)
		return log_error("--socket PATH is required"), 2;
	if (ledger_path) {
		r = ledger_open(ledger_path, &ledger);
		if (r < 0)
			return log_error_errno(r, "cannot open the ledger %s", ledger_path), 1;
	}
	uv_loop_t *loop = uv_default_loop();
	cfg.loop = loop;
	cfg.ledger = ledger;
	r = gateway_start(&cfg, &gw, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		ledger_close(ledger);
		return 1;
	}
	uv_signal_init(loop, &sigs[0]);
	uv_signal_init(loop, &sigs[1]);
	uv_signal_start(&sigs[0], on_signal, SIGTERM);
	uv_signal_start(&sigs[1], on_signal, SIGINT);
	printf("ready\n");
	fflush(stdout);
	uv_run(loop, UV_RUN_DEFAULT);
	ledger_close(ledger);
	(void)uv_loop_close(loop);
	return 0;
}
