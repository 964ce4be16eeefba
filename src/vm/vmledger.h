/* vmledger.h - capsem-vm's glue between the egress service's events and the session ledger. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "egress.h"

struct ledger;

/* Hooks that turn proxy, DNS and model-call events into ledger rows (net, dns, model_call and a
 * policy row per decision). Their userdata is the struct ledger * (NULL: events are dropped). */
struct egress_hooks vm_ledger_hooks(void);

/* The vsock back end's audit tap (struct vsock_backend_config), its userdata the struct ledger *:
 * every host-initiated connection to the guest's exec port becomes an exec row, written when the
 * EXEC frame passes toward the guest (before the guest can fork the command) and completed when
 * the EXIT or ERROR frame passes or the connection ends (docs/LEDGER.md). The CONNECT line's tag
 * is the row's `via` ("cli", "api", "mcp", "file"; anything else is stored as unknown). */
void *vm_exec_tap_open(void *userdata, uint32_t port, const char *tag);
void vm_exec_tap_data(void *tap, bool to_guest, const uint8_t *p, size_t n);
void vm_exec_tap_close(void *tap, const char *why);
