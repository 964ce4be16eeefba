/* capsem-vm.h - what capsem-vm's files share: the supervisor's state (struct vm), its watched
 * file descriptors (watch.c), and the control side's entry points (vmcontrol.c). Not a library
 * header: only capsem-vm's own files (and tests/unit/vm/test-vmcontrol.c) include it. Loop
 * thread only.
 */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "accel.h"
#include "buf.h"
#include "hostcg.h"
#include "qemu.h"
#include "serial.h"
#include "unixlisten.h"
#include "vmlimits.h"

#define SERIAL_LOG_CAP (4u << 20)
#define STOP_GRACE_MS 8000
#define QUIT_GRACE_MS 3000
#define VFS_QEMU_GRACE_MS 3000 /* virtiofsd ended cleanly: QEMU should follow in this */
#define CONTROL_MAX_CLIENTS 16
#define CONTROL_LINE_MAX 4096
#define PID_FILE "supervisor.pid"
#define LEDGER_EVENT_MS 100 /* at most one "ledger" event per this many ms */

enum vm_state { VM_BOOTING, VM_READY, VM_STOPPING, VM_DONE };

struct vm;

/* A file descriptor watched by the loop; closing frees it. */
struct watch {
	uv_poll_t h;
	int fd;
	struct vm *vm;
	void (*cb)(struct watch *w, int events);
	struct buf in;
};

struct vm_opts {
	const char *vmdir;
	const char *kernel;
	const char *initrd;
	const char *qemu;
	const char *append;
	const char *hostname;
	unsigned cpus;
	uint64_t mem_mib;
	unsigned tcg_tb_mib; /* --tcg-tb-mib */
	int control_fd;	     /* --control-fd: the --control socket, already listening */
	enum vm_accel accel;
	uint64_t cid;
	uint64_t boot_timeout_ms;
	int ipc_fd;
	int remove_vmdir;
	const char *control; /* --control PATH, relative to the VM directory or absolute */
	char *disk;	     /* --disk, realpath'd */
	char *rootfs;	     /* --rootfs, realpath'd */
	struct qemu_mount mounts[QEMU_MAX_MOUNTS]; /* --mount; host realpath'd (owned) */
	size_t n_mounts;
	char *ledger;	      /* --ledger, absolute (owned) */
	int no_egress;	      /* --no-egress: the guest gets no network at all */
	char *mcp;	      /* --mcp-config, realpath'd (owned) */
	char **guest_env;     /* --guest-env KEY=VALUE (owned strv) */
	char *workspace;      /* --workspace, realpath'd: served by virtiofsd (owned) */
	int workspace_9p;     /* ... or, as a normal user, by QEMU's 9p (one of mounts[]) */
	int workspace_serial; /* ... or by our 9p server over a virtio-serial port (vmws.c) */
	int no_ws_audit;      /* --no-workspace-audit: no file audit of the workspace */
	int chan_serial;      /* --channel serial: the ports over virtio-serial (vmchan.c) */
	char *incoming;	      /* --incoming FILE, realpath'd: restore this saved state (owned) */
	const char *image_sha256; /* --image-sha256: the image's manifest hash, kept with a save */
	char *ram_file;		  /* --ram-file: guest RAM in this file (absolute; owned) */
	int ram_private;	  /* --ram-private: mapped copy-on-write, the file stays as it is */
};

struct vm {
	uv_loop_t *loop;
	struct vm_opts o;
	enum vm_state state;
	char *p_vhost, *p_vsock, *p_ctl, *p_serial, *p_qmp, *p_serial_log, *p_qemu_log;
	struct vsock_backend *vsock;
	struct serial_log serial;
	struct watch *w_ipc, *w_serial, *w_qmp, *w_ctl, *w_qemu;
	struct watch *w_vfs;			     /* virtiofsd's pidfd (--workspace) */
	pid_t vfs_pid;				     /* virtiofsd, 0 when not running */
	struct unix_listener serial_l, qmp_l, ctl_l; /* QEMU's chardevs, the agent (vsock 5000) */
	uv_timer_t boot_timer, stop_timer;
	uv_signal_t sig[3];
	pid_t qemu_pid;
	int qemu_status;
	int qemu_exited;
	const char *stop_reason; /* "guest-poweroff" when the guest ended itself cleanly */
	int stop_phase;
	uint64_t t_start_ns;
	char *error; /* first fatal error, reported to the parent */
	char *vmdir_abs;
	char *vsock_error; /* a vsock backend failure, judged after a grace period */
	uv_timer_t vsock_timer;
	uv_timer_t vfs_timer; /* virtiofsd ended cleanly: QEMU must follow in VFS_QEMU_GRACE_MS */
	char vfs_why[256];    /* how virtiofsd ended */
	int exit_code;
	struct unix_listener control_l; /* --control */
	struct watch *w_control[CONTROL_MAX_CLIENTS];
	char *control_path; /* the name we bound (relative to the VM directory, or absolute) */
	char *state_line;   /* the line a new control client gets first: ready or error event */
	int state_is_error;
	int pid_file;	       /* we wrote supervisor.pid in the VM directory (our cwd) */
	struct egress *egress; /* proxy (vsock 5002) and DNS (5007); NULL with --no-egress */
	struct ledger *ledger; /* --ledger: the session database */
	/* commit notices from the ledger's writer thread, as "ledger" events (vmcontrol.c) */
	uv_async_t ledger_async;
	uv_timer_t ledger_timer;
	_Atomic int64_t ledger_committed; /* the writer thread's last committed id */
	int64_t ledger_sent;		  /* the last_id of our last "ledger" event */
	int ledger_notify;		  /* the two handles above are initialised */
	struct gateway *mcp;		  /* MCP gateway (vsock 5003); NULL with --no-egress */
	struct wsaudit *audit;	/* the workspace's file audit (--workspace and --ledger) */
	uv_poll_t audit_poll;	/* its inotify fd */
	uv_timer_t audit_timer; /* the next touched path due */
	struct vmchan *chan;	/* --channel serial: the mux thread (vmchan.c) */
	struct vmws *ws; /* the workspace over virtio-serial: the 9p server's process (vmws.c) */
	int keyd_ctl;	 /* the key broker's control socket, -1 without (vmkeyd.c) */
	pid_t keyd_pid;	 /* the key broker, 0 when not running */
	struct watch *w_keyd;
	struct hostcg cg;   /* QEMU's cgroup (vmconfine.c) */
	char **mcp_prefix;  /* the MCP servers' launcher (vm_mcp_prefix) */
	int64_t qmp_id;	    /* the last QMP command's id (vmsuspend.c) */
	int qmp_negotiated; /* qmp_capabilities done */
	double restore_ms;  /* --incoming: how long the load took */
};

/* ---- vmchan.c ---- */

/* --channel serial: listen on chan.sock (QEMU's virtio-serial chardev) and on the hybrid socket
 * vsock, and run the channel mux on its own thread. Before QEMU starts. 0 or -errno (logged). */
int vm_chan_start(struct vm *vm);
/* Stop the thread, close every stream. NULL-safe (no channel: nothing). */
void vm_chan_stop(struct vm *vm);
/* Before a save: end the mux session (PAUSE, every stream closed) and wait until the guest
 * answered PAUSED, so that no byte of it is left in flight. Blocks the loop thread up to
 * timeout_ms. 0, -ETIMEDOUT, -ENOTCONN (no channel up). */
int vm_chan_pause(struct vm *vm, int timeout_ms);
/* After a failed save: a new session (HELLO; the guest drops its old streams). 0 or -errno. */
int vm_chan_restart(struct vm *vm);

/* ---- vmws.c ---- */

#define WS_SOCKET "ws.sock"  /* QEMU's chardev of the port "capsem.ws" connects here */
#define WS_STATE VM_WS_STATE /* the 9p server's state, beside SUSPEND_STATE */

/* Serve --workspace over the port: start the server process (capsem-vm --ws9p-serve, ws9pd.c)
 * before QEMU, with the state saved in WS_STATE on a resume. 0 or -errno (logged). */
int vm_ws_start(struct vm *vm);
/* Start the key broker (capsem-vm --keyd, keydmain.c) and wipe the provider keys from our own
 * environment, before any guest byte is read and before QEMU or any helper is started (they
 * would inherit the environment). Without egress only the wipe. 0 or -errno (logged). */
int vm_keyd_start(struct vm *vm);
void vm_keyd_stop(struct vm *vm);
/* Stop the server. NULL-safe. */
void vm_ws_stop(struct vm *vm);
/* The guest is stopped (QMP stop): the server serves what QEMU still hands over, writes no
 * more, waits until QEMU took every reply byte, and its state goes to WS_STATE. Then
 * vm_ws_check() after the save (nothing arrived since) and vm_ws_thaw() when the save failed.
 * 0, or -errno with err set. No workspace over the port: 0. */
int vm_ws_quiesce(struct vm *vm, char *err, size_t errlen);
int vm_ws_check(struct vm *vm, char *err, size_t errlen);
void vm_ws_thaw(struct vm *vm);

/* ws9pd.c: capsem-vm --ws9p-serve DIR, the server process itself. Its exit status. */
int vm_ws9p_serve(int argc, char **argv);

/* ---- vmsuspend.c ---- */

#define SUSPEND_STATE VM_SUSPEND_STATE /* in the VM directory: QEMU's saved state */
#define SUSPEND_INFO VM_SUSPEND_INFO   /* beside it: when, how big, how long, which image */

/* {"cmd":"suspend"}: save the VM to SUSPEND_STATE and quit (stopped reason "suspended"), or emit
 * "suspend_failed" with the reason and run on. */
void vm_suspend(struct vm *vm);
/* --incoming: QEMU is on QMP: load the state, let the guest run. 0, or -errno (vm_fail'ed). */
int vm_incoming(struct vm *vm);

/* ---- vmworkspace.c ---- */

/* The workspace's file audit into the ledger (with --workspace and --ledger): started after the
 * ledger, stopped (with a reconciliation pass) once QEMU is gone, before the ledger closes. */
int vm_audit_start(struct vm *vm);
void vm_audit_stop(struct vm *vm);

/* ---- capsem-vm.c ---- */

/* Stop the VM (SHUTDOWN to the agent, QMP quit, SIGKILL: each after a grace period); why is
 * reported in the stopped event. Safe to call again. */
void vm_stop(struct vm *vm, const char *why);
/* Ask QEMU to quit now (QMP), without the guest's shutdown; the stopped event says why (a static
 * string). SIGKILL after QUIT_GRACE_MS. */
void vm_quit(struct vm *vm, const char *why);
/* The VM failed: the first reason is kept and reported (an error event), then it stops. */
void vm_fail(struct vm *vm, const char *fmt, ...) _printf_(2, 3);

/* vmworkspace.c: start virtiofsd on --workspace (before QEMU), stop it with the VM; decide the
 * transport after the options are parsed (9p as a normal user: one of o->mounts). */
int vm_workspace_start(struct vm *vm);
/* A helper's files in the VM directory (our cwd): a socket listening on sock (backlog 1, for
 * the one QEMU connection) and log, created 0600 and truncated. 0 with both fds, or -errno
 * (logged). */
int vm_helper_files(struct vm *vm, const char *sock, const char *log, int *ret_lfd, int *ret_log);
void vm_workspace_stop(struct vm *vm);
int vm_workspace_transport(struct vm_opts *o);
/* What serves the workspace once vm_workspace_transport() chose: "virtiofs", "9p" (QEMU's) or
 * "serial" (our 9p server on a virtio-serial port); NULL without --workspace. Static string. */
const char *vm_workspace_transport_name(const struct vm_opts *o);

/* ---- watch.c ---- */

/* Watch fd (owned from here on, closed on failure) for events; cb runs on each. in_cap: the
 * size of w->in (0: none). NULL on failure. */
struct watch *watch_new(struct vm *vm, int fd, int events, size_t in_cap,
			void (*cb)(struct watch *, int));
/* Stop watching, close and free *wp (later, from the loop); *wp becomes NULL. NULL is fine. */
void watch_close(struct watch **wp);
/* Read what is available into w->in. 1 = data, 0 = EOF, -errno on error (-EAGAIN = nothing). */
int watch_fill(struct watch *w);

/* ---- vmcontrol.c ---- */

/* Send the event ev (stolen) to the parent (--ipc-fd, else stdout) and every control client;
 * ready and error events are kept for clients that connect later. */
void vm_emit(struct vm *vm, json_t *ev);
/* The parent's command fd (--ipc-fd) is readable: run its {"cmd":...} lines; EOF stops the VM. */
void vm_on_ipc(struct watch *w, int events);
/* Listen on --control (or adopt --control-fd). 0 or a negative errno (logged). */
int vm_control_open(struct vm *vm);
/* Close every control client and the listener; remove the socket file. */
void vm_control_close(struct vm *vm);
/* Report the ledger's commits to the control clients as {"event":"ledger","last_id":N} lines,
 * at once after a quiet spell, then at most every LEDGER_EVENT_MS. 0 or a negative errno. */
int vm_ledger_events_start(struct vm *vm);
/* After ledger_close(): the last commits' event (when not yet sent), then close the handles. */
void vm_ledger_events_stop(struct vm *vm);
/* Write supervisor.pid in the VM directory (our cwd). 0 or a negative errno (logged). */
int vm_pid_file_write(struct vm *vm);
