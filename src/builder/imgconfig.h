/* imgconfig.h - an image configuration directory (guest/config/): load, validate, describe.
 *
 * A config directory is the union of its *.toml files (read in name order). Each top-level table
 * lives in exactly one file:
 *   [image]        name (required), description, version
 *   [build]        arch = "x86_64", suite, compression (all required), node, npm (selectors)
 *   [packages]     apt (required, Debian names), python (Debian names), npm ("name[@selector]")
 *   [providers.X]  npm, cli, api_key_env, domains (required), version, description, enabled,
 *                  env = {K = "V"}, [[providers.X.files]] path, content, mode
 *   [vm]           cpus, memory ("2G"), disk ("8G"): defaults of VMs of this image
 *   [environment]  shell, banner, env = {K = "V"}
 *   [mcp.servers.X] command (required), args, env, description, enabled
 *
 * Every problem found is reported as a diagnostic with a stable code (IMGCFG_E_*), the file and
 * the line; loading goes on after an error so that one run reports them all. The checks are the
 * contract: tests/data/builder-config/ holds one failing fixture per code.
 *
 * Trust boundary: the files are the user's own but are parsed as hostile text (toml.h caps,
 * names and paths checked before they reach argv or the image tree). Pure apart from reading the
 * directory; caller's thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "sha256.h"

/* Diagnostic codes: never renumber, only add. */
#define IMGCFG_E_NO_CONFIG "E001"    /* directory missing, unreadable, or without *.toml */
#define IMGCFG_E_SYNTAX "E002"	     /* TOML syntax error */
#define IMGCFG_E_UNKNOWN_KEY "E003"  /* a key the schema does not know */
#define IMGCFG_E_TYPE "E004"	     /* a value of the wrong type */
#define IMGCFG_E_MISSING "E005"	     /* a required key is missing */
#define IMGCFG_E_DEB_NAME "E006"     /* not a Debian package name */
#define IMGCFG_E_NPM_SPEC "E007"     /* not an npm package name or version selector */
#define IMGCFG_E_DUP_TABLE "E008"    /* a top-level table in two files */
#define IMGCFG_E_PROVIDER_KEY "E009" /* unknown provider field */
#define IMGCFG_E_DUP_CLI "E010"	     /* two providers with the same CLI name */
#define IMGCFG_E_CPUS "E011"	     /* vm.cpus out of range */
#define IMGCFG_E_MEMORY "E012"	     /* vm.memory malformed or out of range */
#define IMGCFG_E_DISK "E013"	     /* vm.disk malformed or out of range */
#define IMGCFG_E_DOMAIN "E014"	     /* bad domain pattern */
#define IMGCFG_E_ENV "E015"	     /* bad environment variable name or value */
#define IMGCFG_E_FILE "E016"	     /* bad seeded file: path, size, mode or duplicate */
#define IMGCFG_E_UNSUPPORTED "E017"  /* arch, suite, compression or shell not supported */
#define IMGCFG_E_VERSION "E018"	     /* bad node or npm version selector */
#define IMGCFG_E_NAME "E019"	     /* bad image, provider, CLI or MCP server name */
#define IMGCFG_E_DUP_PACKAGE "E020"  /* the same package twice */
#define IMGCFG_E_TOO_MANY "E021"     /* a list or table over its cap */
#define IMGCFG_E_EMPTY "E022"	     /* an empty list or string where a value is needed */

/* Caps (each E021 past it). */
#define IMGCFG_MAX_FILES_IN_DIR 32
#define IMGCFG_MAX_FILE_BYTES (256 * 1024)
#define IMGCFG_MAX_PACKAGES 256
#define IMGCFG_MAX_PROVIDERS 16
#define IMGCFG_MAX_DOMAINS 64
#define IMGCFG_MAX_ENV 64
#define IMGCFG_MAX_SEED_FILES 32
#define IMGCFG_MAX_SEED_BYTES (64 * 1024)
#define IMGCFG_MAX_MCP 32
#define IMGCFG_MAX_ARGS 32
#define IMGCFG_MAX_BANNER 4096

#define IMGCFG_DEFAULT_NODE "22"
#define IMGCFG_DEFAULT_NPM "10"
#define IMGCFG_DEFAULT_SHELL "/bin/bash"
#define IMGCFG_DEFAULT_CPUS 2u
#define IMGCFG_DEFAULT_MEMORY_MIB 2048u
#define IMGCFG_DEFAULT_DISK_MIB 8192u

struct imgcfg_diag {
	char code[5];
	char *file; /* base name inside the directory; NULL for the directory itself */
	unsigned line;
	char *msg;
};

struct imgcfg_diags {
	struct imgcfg_diag *v;
	size_t n, alloc;
};

struct imgcfg_file {
	char *path; /* absolute path in the image */
	char *content;
	size_t len;
	unsigned mode;
};

struct imgcfg_provider {
	char *name; /* the table key: "claude" */
	char *description;
	char *npm;	   /* package name */
	char *version;	   /* npm selector, "latest" by default */
	char *cli;	   /* command name */
	char *api_key_env; /* e.g. ANTHROPIC_API_KEY */
	char **domains;
	char **env; /* "K=V", document order */
	struct imgcfg_file *files;
	size_t n_files;
	bool enabled;
};

struct imgcfg_mcp {
	char *name;
	char *description;
	char *command;
	char **args;
	char **env;
	bool enabled;
};

struct imgcfg {
	char *dir;
	char *name, *description, *version;
	char *arch, *suite, *compression, *node, *npm_version;
	char **apt;    /* sorted, unique: [packages] apt + python */
	char **python; /* as given, for display */
	char **npm;    /* [packages] npm specs as given ("name[@sel]"), sorted */
	struct imgcfg_provider *providers;
	size_t n_providers;
	unsigned cpus;
	uint64_t memory_mib, disk_mib;
	char *shell, *banner;
	char *venv; /* [environment] venv: a Python venv made in the image, active in every shell
		     * and exec (VIRTUAL_ENV, PATH), or NULL */
	char **env;
	struct imgcfg_mcp *mcp;
	size_t n_mcp;
};

/* Load and check every *.toml in dir. Returns 0 with *ret (imgcfg_free()) when no diagnostic was
 * raised, -EINVAL when some were (all appended to *diags; *ret untouched), or -ENOMEM. diags
 * must be zeroed or previously used; the caller releases it with imgcfg_diags_done(). */
int imgcfg_load(const char *dir, struct imgcfg **ret, struct imgcfg_diags *diags);
void imgcfg_free(struct imgcfg *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct imgcfg *, imgcfg_free)
void imgcfg_diags_done(struct imgcfg_diags *d);

/* The npm specs the image installs globally, "name@selector", sorted: each enabled provider's
 * package and [packages] npm (a bare name gets "@latest"). strv (strv_free()) or NULL (ENOMEM). */
char **imgcfg_npm_specs(const struct imgcfg *c);

/* The effective configuration as canonical JSON text (sorted keys, compact; malloc'ed, NULL on
 * ENOMEM): what the final image's cache key covers and what /etc/capsem/image.json holds
 * (without build results). */
char *imgcfg_to_json(const struct imgcfg *c);

/* Helpers shared with the tests: 1 when valid. */
int imgcfg_deb_name_valid(const char *s);
int imgcfg_npm_name_valid(const char *s);
int imgcfg_npm_selector_valid(const char *s);
int imgcfg_domain_valid(const char *s);
int imgcfg_env_name_valid(const char *s);
int imgcfg_seed_path_valid(const char *s);
