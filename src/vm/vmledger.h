/* vmledger.h - capsem-vm's glue between the egress service's events and the session ledger. */
#pragma once

#include "egress.h"

struct ledger;

/* Hooks that turn proxy, DNS and model-call events into ledger rows (net, dns, model_call and a
 * policy row per decision). Their userdata is the struct ledger * (NULL: events are dropped). */
struct egress_hooks vm_ledger_hooks(void);
