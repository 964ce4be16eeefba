/* snapcmd.h - capsem-snapshots: the workspace's snapshots from inside the guest. */
#pragma once

/* capsem-snapshots list | create NAME | changes [SNAP] | revert PATH... [--from SNAP] |
 * history PATH | delete NAME | compact, with --json, --offset N, --limit N. The exit status. */
int snapcmd_main(int argc, char **argv);
