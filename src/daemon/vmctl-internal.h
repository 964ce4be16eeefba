/* vmctl-internal.h - what capsemd's two VM files share (not part of vmctl.h).
 *
 * vmctl.c keeps the VMs (registry records, the list, waiters, the public operations); vmsup.c
 * runs the capsem-vm supervisor behind a running VM (boot preparation, spawn, pidfd, control
 * connection, ledger lines, the end of a run) and re-adopts supervisors after a daemon restart
 * (vmctl_recover). Loop thread only, except a prepjob on the worker pool.
 */
#pragma once

#include <sys/types.h>
#include <uv.h>

#include "buf.h"
#include "list.h"
#include "registry.h"
#include "vmctl.h"

#define CTL_LINE_MAX (64u * 1024u)
#define STOP_KILL_MS 30000
#define CTL_SOCKET "supervisor.sock"
#define LEDGER_WRITE_QUEUE_MAX (1u << 20) /* ledger lines waiting for a slow capsem-vm */

struct waiter {
	enum vm_wait what;
	vm_waiter_cb cb;
	void *userdata;
	struct waiter *next;
};

struct pidwatch {
	uv_poll_t h;
	int fd;
	pid_t pid;
	int child; /* ours to reap */
	struct vm *vm;
};

struct ctlconn {
	uv_pipe_t h;
	struct vm *vm;
	struct buf in;
};

struct prepjob {
	uv_work_t w;
	struct vm *vm;
	char *imgdir, *disk, *kernel, *initrd, *rootfs, *error; /* rootfs: NULL when none */
	char *disk_template; /* a fork image's disk: the VM's disk starts as a copy of it */
	char *ws_archive;    /* a fork image's workspace archive, unpacked into the VM's own */
	char *workspace;     /* the VM's own workspace directory (NULL: a user's folder) */
	char **shared;	     /* the user's folders it shares (workspace, mounts): reachable? */
	uint64_t disk_mib;
	int want_disk;
	int r;
	char image_sha256[65]; /* the image's manifest.json, hashed ("" when unknown) */
	/* snapshot start (snapstart.c): set by vmsup_boot, filled by the worker */
	int snapstart;	 /* try to start restored from a saved state */
	int snapstarted; /* ... and it is prepared */
	char *vmdir, *home, *vm_bin;
	unsigned cpus;
	uint64_t memory_mib;
};

struct vm {
	struct list_link link; /* on ctl->vms */
	struct vmctl *ctl;
	struct vm_record rec;
	char *vsock;
	struct pidwatch *pw;
	struct ctlconn *cc;
	uv_timer_t *timer;
	struct prepjob *job;
	int stop_requested;
	int guest_stopped; /* capsem-vm reported the guest's own clean power-off */
	int delete_on_stop;
	int never_ready; /* created but not yet booted once: a failed first boot leaves nothing */
	int has_disk;	 /* boots with <vmdir>/disk.img: named, or made from a fork image */
	int seen_stopped;
	int resuming;	     /* this boot restores <vmdir>/VM_SUSPEND_STATE */
	int snapstarted;     /* this boot restores the saved state of its kind (snapstart.c) */
	int suspending;	     /* a suspend was asked for and has not ended yet */
	int suspended;	     /* capsem-vm saved the VM ("suspended" event) */
	char *suspend_error; /* why the last suspend failed ("suspend_failed" event) */
	int proc_gone;	     /* the supervisor process exited (or was never started) */
	int ctl_closed;	     /* its control connection ended (or never existed) */
	int exit_status;     /* -1 unknown */
	pid_t qemu_pid; /* from the ready event; checked to be the supervisor's child when read */
	char *fail;
	char *serial_tail;
	struct waiter *waiters;
};

struct vmctl {
	uv_loop_t *loop;
	char *home, *vms_dir, *images_dir, *vm_bin, *sessions_dir;
	struct list_link vms; /* newest first */
	size_t n_vms;
	vmctl_ledger_cb on_ledger; /* vmctl_on_ledger() */
	void *on_ledger_data;
	uint64_t rev; /* bumped on every change of a record (vmctl_rev) */
	void (*on_change)(void *userdata);
	void *on_change_data;
};

/* A record changed: bump the revision and tell the listener. */
void vmctl_changed(struct vmctl *c);

/* ---- vmsup.c ---- */

/* fork + exec argv in its own session: stdin /dev/null, stdout and stderr out_fd, fd3 as its
 * fd 3, no other descriptor, default signal handling. 0 with *ret_pid (our child) or -errno. */
int vmsup_spawn(char **argv, int out_fd, int fd3, pid_t *ret_pid);
/* {"cmd":"suspend"} to the supervisor. 0 or -errno. */
int vmsup_send_suspend(struct vm *vm);
/* The VM's disk j->disk (worker thread): kept when it exists, else a copy of j->disk_template,
 * else a new ext4 of j->disk_mib MiB. 0 or -errno. */
int vmsup_make_disk(struct prepjob *j);

/* ---- snapstart.c (worker thread) ---- */

/* Files of a VM started from a saved state, in its directory */
#define SNAPSTART_RAM "snapstart.ram"	  /* a hard link to the saved RAM: mapped private */
#define SNAPSTART_STATE "snapstart.state" /* a copy of the saved device state */

/* Prepare a start of j's VM restored from the saved, booted state of its kind (image, CPUs,
 * memory, disk size), making that state first when there is none (a cold boot of a template VM
 * saved right after its agent said hello). 0 with SNAPSTART_* (and the disk) in the VM's
 * directory; -errno with *ret_error when it cannot (the caller boots cold). */
int snapstart_prepare(struct prepjob *j, char **ret_error);

/* ---- vmctl.c ---- */

/* Remove the files names (NULL-terminated) of the VM's directory; a failure other than ENOENT
 * is logged. */
void vmctl_unlink_in(const struct vm *vm, const char *const *names);
/* a/b, allocated; NULL on ENOMEM. */
char *vmctl_path_join(const char *a, const char *b);
/* *dst = a copy of s (NULL: none), the old value freed. */
void vmctl_set_str(char **dst, const char *s);
/* uv_close callback for a malloc'd handle. */
void vmctl_handle_free_cb(uv_handle_t *h);
/* Write the VM's registry entry (vm.json); a failure is logged. */
void vmctl_vm_save(struct vm *vm);
/* Remove the sockets capsem-vm and QEMU leave in vmdir. */
void vmctl_remove_sockets(const char *vmdir);
/* A stopped VM for rec (taken over and zeroed on success), linked on c's list; NULL on ENOMEM
 * (rec untouched). */
struct vm *vmctl_vm_alloc(struct vmctl *c, struct vm_record *rec);
/* Unlink and free vm and everything it holds (a pidwatch, control connection or boot job
 * still running is detached from it and finishes on its own). */
void vmctl_vm_free(struct vm *vm);
/* Run and drop the waiters for what, with ok. */
void vmctl_notify(struct vm *vm, enum vm_wait what, int ok);

/* ---- vmsup.c ---- */

/* Prepare (worker thread: image check, disk) and launch the VM's capsem-vm. 0 or -errno. */
int vmsup_boot(struct vm *vm);
/* Ask the supervisor to stop ({"cmd":"stop"} on the control connection). 0 or -errno. */
int vmsup_send_stop(struct vm *vm);
/* Signal the supervisor (checked to still be the capsem-vm of this VM first). */
void vmsup_signal(struct vm *vm, int sig);
/* The stop grace period (STOP_KILL_MS) ran out: SIGKILL. */
void vmsup_on_stop_timeout(uv_timer_t *t);
