/* confine-probe - a stand-in for a confined process (tests/e2e/test_confinement.py): started
 * where QEMU (capsem-vm --qemu) or an MCP stdio server (mcp.toml's command) would be, it runs
 * the probes of $CAPSEM_CONFINE_PROBE (as $CAPSEM_PROBE_ONLY, default "helper") from inside that confinement (cfprobe.h), reporting on
 * stderr, then exits 0. Its arguments are ignored. Trust boundary: none; one thread. */
#include <stdlib.h>

#include "cfprobe.h"

int main(void)
{
	const char *who = getenv("CAPSEM_PROBE_ONLY");
	cfprobe_run(who && *who ? who : "helper");
	return 0;
}
