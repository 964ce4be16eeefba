// containerd-shim-capsem-v2 - the containerd runtime v2 shim of Capsem (runtime name
// io.containerd.capsem.v2). One shim per sandbox (pod), one Capsem microVM per shim, every
// container of the sandbox run inside that VM from its OCI bundle. Built on containerd's own shim
// library (runtime/v2/shim: ttrpc server, events publisher, the start/delete binary protocol);
// the VM is asked of capsemd over its API (docs/API.md), like any other Capsem VM, so the
// egress policy, credential swap, MCP gateway and session ledger apply unchanged.
// docs/ARCHITECTURE.md "containerd shim (containerd-shim-capsem-v2)" has the design.
package main

import (
	"github.com/containerd/containerd/runtime/v2/shim"
)

func main() {
	shim.Run("io.containerd.capsem.v2", New)
}
