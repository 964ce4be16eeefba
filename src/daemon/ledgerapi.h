/* ledgerapi.h - capsemd's session-ledger routes (docs/API.md): events of a VM or a session, the
 * list of sessions; and the exec records the daemon sends to capsem-vm (docs/LEDGER.md). */
#pragma once

#include "api.h"
#include "gexec.h"

/* GET /vms/{ref}/events?kind=net,dns&limit=N&since=ID&session=ID. vm may be NULL when ref names
 * no VM the daemon knows: the sessions directory is searched (a session id, a deleted VM's id or
 * name). */
void ledgerapi_vm_events(struct api *a, struct httpd_conn *c, struct vm *vm, const char *ref,
			 const char *query);
/* GET /sessions?vm=ID */
void ledgerapi_sessions(struct api *a, struct httpd_conn *c, const char *query);
/* GET /sessions/{session} (with counts) and GET /sessions/{session}/events?... */
void ledgerapi_session(struct api *a, struct httpd_conn *c, const char *session, int events,
		       const char *query);

/* The exec trace of gexec_splice for a VM: userdata from ledgerapi_exec_new (via: "cli", "api"
 * or "mcp"), freed with ledgerapi_exec_free. NULL on ENOMEM (then nothing is recorded). */
void *ledgerapi_exec_new(struct api *a, const struct vm *vm, const char *via);
void ledgerapi_exec_trace(const struct gexec_trace *t, void *userdata);
void ledgerapi_exec_free(void *userdata);
