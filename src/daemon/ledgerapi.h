/* ledgerapi.h - capsemd's session-ledger routes (docs/API.md): events of a VM or a session, the
 * list of sessions (docs/LEDGER.md). */
#pragma once

#include "api.h"

/* Set up a's long-polls: a's list of them, and vmctl's commit notices to wake them. Call once,
 * before serving. */
void ledgerapi_init(struct api *a);
/* GET /vms/{ref}/events?kind=net,dns&limit=N&since=ID&session=ID&wait=S. vm may be NULL when ref names
 * no VM the daemon knows: the sessions directory is searched (a session id, a deleted VM's id or
 * name). */
void ledgerapi_vm_events(struct api *a, struct httpd_conn *c, struct vm *vm, const char *ref,
			 const char *query);
/* GET /sessions?vm=ID */
void ledgerapi_sessions(struct api *a, struct httpd_conn *c, const char *query);
/* GET /sessions/{session} (with counts) and GET /sessions/{session}/events?... */
void ledgerapi_session(struct api *a, struct httpd_conn *c, const char *session, int events,
		       const char *query);
