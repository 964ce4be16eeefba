/* clilib.h - the CLI's library: what every subcommand may use (the environment, talking to
 * capsemd, the exec core). Subcommands (cmd-*.c) parse their arguments and call these; they
 * never call each other. The command list is commands.h. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "apiclient.h"

/* Exit statuses of capsem itself (the command's own status is passed through otherwise). */
#define CLI_EXIT_USAGE 2
#define CLI_EXIT_FAILURE 125 /* capsem could not run the command (as docker run) */
#define CLI_EXIT_TIMEOUT 124 /* as timeout(1) */

/* ---- the environment (cli-env.c) ---- */

/* $CAPSEM_HOME/setup.json: written by capsem setup (what it did); its absence tells capsem run
 * that this user never ran setup. */
#define CLI_SETUP_RECORD "setup.json"

/* Capsem's home (capsem_home(): $CAPSEM_HOME, $HOME/.capsem, the passwd entry's). malloc'ed;
 * NULL after logging why. */
char *cli_capsem_home(void);
/* The directory of image NAME: the user's ($CAPSEM_IMAGES_DIR/NAME, else <home>/images/NAME)
 * when it has a manifest, else the package's (capsem_image_find()). malloc'ed. */
char *cli_image_dir(const char *name);
/* The image of a VM that names none: $CAPSEM_IMAGE, else "debian" when it is installed, else
 * "minimal" (capsemd picks the same when a client sends no image). Static or environment
 * string. */
const char *cli_default_image(void);
/* One line on stderr when the VM object (the daemon's JSON) says it runs under TCG emulation:
 * the same warning capsem-vm prints on the direct path. */
void cli_warn_if_emulated(const json_t *vm);

/* ---- talking to capsemd (cli-api.c) ---- */

/* Open a connection to capsemd, starting it on demand. 0, or -errno after logging why. */
int cli_api_open(struct api_conn *c);
/* One JSON request on a fresh connection. 0 when the status is 2xx (ret filled, caller frees
 * it), -EREMOTE after printing the daemon's error as "capsem: <message>", or -errno (logged). */
int cli_api(const char *method, const char *path, json_t *body, struct api_response *ret);
/* The same for any request (raw bodies, bodies streamed to rq->out_fd). */
int cli_api_req(const struct api_req *rq, struct api_response *ret);
/* Print a JSON value to stdout, indented. */
void cli_print_json(json_t *v);

/* ---- an exec on a running VM through capsemd (cli-exec.c) ---- */
struct cli_exec {
	char **argv;
	int shell; /* argv[0] is a /bin/sh -c string */
	char **env;
	const char *cwd;
	int tty;
	int interactive; /* forward stdin even when it is a terminal */
	uint64_t timeout_ms;
};
/* Run it and relay the session; sigfd is a signalfd for SIGINT/SIGTERM/SIGHUP(/SIGWINCH).
 * Returns the command's exit status (124 with a message on timeout), 130 after a second
 * interrupt, or CLI_EXIT_FAILURE (logged). */
int cli_exec_run(const char *ref, const struct cli_exec *e, int sigfd);
/* A signalfd for the signals an exec session handles (with_winch adds SIGWINCH); the signals
 * are blocked. Returns the fd or -errno. */
int cli_exec_signals(int with_winch);

/* --workspace DIR: the real path of an existing directory without ',' or ':' (they separate
 * fields on capsem-vm's and QEMU's command lines). 0 with *ret (malloc'ed), or -errno after
 * saying why. */
int cli_workspace_path(const char *arg, char **ret);

/* ---- the host (cli-host.c): checks shared by doctor and setup, services, image builds ---- */

/* Run argv (PATH search), capturing up to cap bytes of stdout (NUL-terminated; out may be NULL),
 * stderr to /dev/null unless show_err. Its exit status (127 when it could not run), or -errno. */
int cli_run_capture(char *const *argv, char *out, size_t cap, int show_err);

enum { CLI_CHECK_OK = 0, CLI_CHECK_WARN = 1, CLI_CHECK_FAIL = 2 };
struct cli_check {
	const char *name;
	int required;
	int status; /* CLI_CHECK_* */
	char detail[512];
};
/* Each fills c->status and a one-line c->detail that says what to do when it is not OK. */
void cli_check_qemu(struct cli_check *c);
/* KVM only when /dev/kvm opens read-write AND the CPU has vmx/svm; else TCG (a warning). */
void cli_check_accel(struct cli_check *c);
void cli_check_image(struct cli_check *c, const char *name);
void cli_check_binary(struct cli_check *c, const char *name, const char *env, const char *sub);
/* Free space where CAPSEM_HOME is (or would be): fail under 512 MiB, warn under want_mib. */
void cli_check_disk(struct cli_check *c, uint64_t want_mib);
/* Whether this user can open /dev/kvm, and the adduser command when not. */
void cli_check_groups(struct cli_check *c);
/* Whether this user can build the 'debian' image: root, or root of a user namespace of its own
 * (newuidmap and subordinate ids, userns.h); a warning with the command that adds what is
 * missing when not. */
void cli_check_userns(struct cli_check *c);
/* MiB available to the caller on the file system of path's nearest existing ancestor, or
 * -errno. */
int64_t cli_free_mib(const char *path);

/* 1 when a systemd user manager answers `systemctl --user` (PID 1 need not be systemd). */
int cli_systemd_user_available(void);
/* ~/.config/systemd/user/capsemd.service (or under $XDG_CONFIG_HOME). malloc'ed or NULL. */
char *cli_user_unit_path(void);
/* Install capsemd as a systemd user service: the package's unit when it is installed and
 * CAPSEM_HOME is the default, else a unit written for this home; then enable and start it. 1
 * when it runs under systemd, 0 when installed but left to the on-demand start (no user
 * manager: said on stderr), -errno (logged). */
int cli_service_install(void);
/* Stop, disable and (when capsem wrote it) remove the user unit. 1 when something was removed
 * or disabled, 0 when there was nothing, -errno (logged). */
int cli_service_remove(void);

/* The static guest binary: $CAPSEM_GUEST_BIN, the source tree's build-guest/, else the
 * package's <libexecdir>/capsem/capsem-guest. malloc'ed or NULL. */
char *cli_guest_bin(void);
/* Build image config (NULL: capsem-builder's default, the 'debian' image) into the user's
 * images directory with capsem-builder, its progress on our stderr (stdout: the builder's
 * result, JSON with json). Without the kernel source (an installed package) the kernel and
 * initramfs come from the package's 'minimal' image. 0, or -errno (logged). */
int cli_image_build(const char *config, const char *name, int json);
/* Stop every VM of this home (through capsemd when it runs; never starts it), capsemd itself,
 * and any capsem-vm supervisor left under <home>/vms. The number of VMs stopped. */
int cli_stop_everything(const char *home);

/* ---- the release channel (cli-release.c), beneath capsem update ---- */

struct release;
struct release_image;
/* <image>/release.json: {"version", "channel"} of an image installed from a channel. */
#define CLI_RELEASE_FILE "release.json"
/* Fetch url and url.sig, verify the signature over the exact bytes with release_key_path(), then
 * parse. 0 with *ret (release_free), -EBADMSG (unsigned, wrongly signed or invalid), -EIO,
 * -errno; err says why. Nothing is written anywhere. */
int cli_release_load(const char *url, struct release **ret, char *err, size_t errlen);
/* The channel version an installed image came from (its release.json), or NULL (built here,
 * or none). malloc'ed. */
char *cli_image_release_version(const char *images, const char *name);
/* Download one file with resume and retry and verify its size and SHA-256 (progress on a
 * terminal's stderr). fetch_verified()'s results. */
int cli_fetch_file(const char *url, const char *path, uint64_t size, const char *sha256, char *err,
		   size_t errlen);
/* Download image im of rel (asset URLs relative to base_url) into a new staging directory under
 * images, verify every asset and then the image's manifest.json, write its release.json. 0 with
 * *ret_stage (malloc'ed); on failure the stage is gone, -errno and err. Nothing in use is
 * touched. */
int cli_image_stage(const char *images, const char *base_url, const struct release *rel,
		    const struct release_image *im, char **ret_stage, char *err, size_t errlen);
/* Make stage the image name in one exchange; the image it replaces becomes .<name>.previous
 * (an older previous one is deleted). 0 or -errno. */
int cli_image_commit(const char *images, const char *name, const char *stage);
/* Exchange .<name>.previous and <name> (a second rollback goes forward again). 0, -ENOENT
 * when there is no previous image, -errno. */
int cli_image_rollback(const char *images, const char *name);
