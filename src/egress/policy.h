/* policy.h - the egress policy: which (name, port, method, path) a guest may reach.
 *
 * A policy is three layers of TOML (docs/POLICY.md): the corp file (/etc/capsem/corp.toml), the
 * user file ($CAPSEM_HOME/user.toml) and the shipped defaults compiled into the binary. Rules are
 * evaluated corp first, then user, then defaults; within a layer by priority (higher first), then
 * file order. The first rule that matches decides; no match means the default action. Settings
 * ([policy] default, [upstream]) set in the corp file are locked: a user file that sets them gets
 * a warning and its value is ignored.
 *
 * Request paths are normalised before they are matched (policy_path_normalize(): encoded unreserved
 * characters decoded, hex digits upper-cased), and the proxy forwards that normalised form, so
 * the upstream sees exactly the path that was decided on. BLOCK path conditions compare ASCII
 * letters case-insensitively, ALLOW path conditions case-sensitively. A "*.suffix" host pattern
 * stands for at most [policy] wildcard_max_labels labels (1 unless a layer sets it; 0 = any).
 *
 * The same files hold the MCP tool rules ([[tool_rule]]: server and tool globs, allow or block),
 * decided by policy_decide_tool() for the per-VM MCP gateway with the same layer order; their
 * default ([policy] tool_default, "allow" unless set) is locked by the corp file like default.
 *
 * A loaded policy is immutable: policy_decide() and the accessors only read it, so one policy may
 * be shared by threads. Reloading means loading a new one (see policy_files_changed()).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "macro.h"

#define POLICY_CORP_PATH "/etc/capsem/corp.toml"
#define POLICY_USER_FILE "user.toml" /* inside $CAPSEM_HOME */

/* Caps on what a policy file may hold (each violation is a load error). */
#define POLICY_MAX_TOOL_GLOB 128 /* server and tool patterns of a [[tool_rule]] */
#define POLICY_MAX_FILE_SIZE ((size_t)1 << 20)
#define POLICY_MAX_RULES 1024	 /* per file */
#define POLICY_MAX_PATTERNS 256	 /* per list (hosts, ports, methods, paths) of one rule */
#define POLICY_MAX_OVERRIDES 256 /* per file */
#define POLICY_MAX_NAME 64
#define POLICY_MAX_HOST 253
#define POLICY_MAX_PATH 1024
#define POLICY_MAX_GLOB_STARS 8
#define POLICY_MAX_WILDCARD_LABELS 127 /* [policy] wildcard_max_labels: 0 (no limit) .. this */

enum policy_action { POLICY_ALLOW, POLICY_BLOCK };
enum policy_layer { POLICY_LAYER_CORP, POLICY_LAYER_USER, POLICY_LAYER_DEFAULT };

/* What is being decided. Fields left NULL (or port 0) are "not known yet":
 *  - DNS level: port 0, method and path NULL;
 *  - connection level: port set, method and path NULL (HTTP not seen yet, or not HTTP at all);
 *  - request level: everything set. */
struct policy_request {
	const char *host;   /* a name or IP literal, any case, maybe with a trailing dot */
	uint16_t port;	    /* 0 = any port (DNS-level question) */
	const char *method; /* NULL = connection-level question (HTTP not seen yet) */
	const char *path;   /* NULL = connection-level; may contain ?query (ignored); normalised
			     * here (policy_path_normalize) before it is matched */
};

struct policy_decision {
	enum policy_action action;
	const char *rule; /* rule name, "default", or "invalid-host"; owned by the policy */
	enum policy_layer layer;
	/* ALLOW by a rule whose method/path conditions could not be checked yet (connection or DNS
	 * level): each HTTP request must be decided again, and non-HTTP traffic must not pass. */
	bool provisional;
};

/* A rule as loaded, for display (capsem policy show) and explanations. Owned by the policy. */
struct policy_rule_info {
	const char *name;
	const char *description; /* NULL when the file has none */
	enum policy_action action;
	enum policy_layer layer;
	int64_t priority;
	const char *source;	  /* the file it came from, or "<defaults>" */
	unsigned line;		  /* its [[rule]] line in source, 0 when unknown */
	const char *const *hosts; /* normalised: lower case, no trailing dot */
	size_t n_hosts;
	const uint16_t *ports; /* n_ports == 0: any port */
	size_t n_ports;
	const char *const *methods; /* upper case; n_methods == 0: any method */
	size_t n_methods;
	const char *const *paths; /* normalised (policy_path_normalize); n_paths == 0: any path */
	size_t n_paths;
};

struct policy_override_info {
	const char *host; /* normalised */
	uint16_t port;
	const char *connect; /* "host:port" or "[v6]:port" */
	enum policy_layer layer;
};

struct policy;

/* A [[tool_rule]] as loaded. Owned by the policy. */
struct policy_tool_rule_info {
	const char *name;
	const char *description; /* NULL when the file has none */
	enum policy_action action;
	enum policy_layer layer;
	int64_t priority;
	const char *source;
	unsigned line;
	const char *server; /* glob ('*', '?', [a-z], '\'), "*" when the rule has none */
	const char *tool;   /* glob on the tool's name as the server calls it (no "server__") */
};

struct policy_tool_decision {
	enum policy_action action;
	const char *rule; /* rule name or "default"; owned by the policy */
	enum policy_layer layer;
};

/* Load the corp and user files and the shipped defaults. A NULL path means the layer is absent;
 * a missing file (ENOENT) means the layer is empty. On success returns 0 and *ret (free with
 * policy_free); warnings (locked settings the user file tried to set, ...) are kept in the policy
 * (policy_warnings). On failure *ret is untouched, err holds one line ("file:line: message") and
 * the return value is -EBADMSG (invalid content, over a cap), -ENOMEM, or the -errno of opening
 * or reading a file (-EACCES, -EISDIR, ...). */
int policy_load(const char *corp_path, const char *user_path, struct policy **ret, char *err,
		size_t errlen);

/* The same from in-memory TOML (tests, fuzzing, drafts): text NULL = layer absent. Messages name
 * the layers "<corp>" and "<user>". */
int policy_load_strings(const char *corp, size_t corp_len, const char *user, size_t user_len,
			struct policy **ret, char *err, size_t errlen);

/* The general form: each source is (name shown in messages, text, len); a NULL source or text
 * means an empty layer. defaults == NULL means the shipped defaults. */
struct policy_source {
	const char *name;
	const char *text;
	size_t len;
};
int policy_load_sources(const struct policy_source *corp, const struct policy_source *user,
			const struct policy_source *defaults, struct policy **ret, char *err,
			size_t errlen);

void policy_free(struct policy *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct policy *, policy_free)
#define _cleanup_policy_free_ _cleanup_(policy_freep)

/* Decide a request (see struct policy_request for the three levels). Never fails: a host that is
 * not a valid name or IP literal is blocked with rule "invalid-host". */
void policy_decide(const struct policy *p, const struct policy_request *req,
		   struct policy_decision *ret);

/* Decide an MCP tool: the first [[tool_rule]] (corp, user, defaults; by priority, then file
 * order) whose server and tool globs both match decides; else the tool default. Never fails. */
void policy_decide_tool(const struct policy *p, const char *server, const char *tool,
			struct policy_tool_decision *ret);
size_t policy_n_tool_rules(const struct policy *p);
const struct policy_tool_rule_info *policy_tool_rule(const struct policy *p, size_t i);
enum policy_action policy_tool_default(const struct policy *p, enum policy_layer *ret_layer);

/* Why a rule did or did not decide, for explanations (capsem policy check). */
enum policy_match {
	POLICY_MATCH_NO_HOST,	/* no host pattern matches */
	POLICY_MATCH_TOO_DEEP,	/* only "*.suffix" patterns match, with more labels under the
				 * suffix than [policy] wildcard_max_labels allows */
	POLICY_MATCH_NO_PORT,	/* the host matches, the port does not */
	POLICY_MATCH_NO_METHOD, /* host and port match, the method does not */
	POLICY_MATCH_NO_PATH,	/* host, port and method match, the path does not */
	POLICY_MATCH_SKIPPED,	/* a BLOCK rule whose conditions cannot be checked at this level */
	POLICY_MATCH_DECIDES,	/* this rule decides */
};
typedef void (*policy_trace_fn)(const struct policy_rule_info *rule, enum policy_match m,
				void *userdata);
/* policy_decide() that also calls fn for every rule it looked at, in evaluation order, up to and
 * including the deciding one. */
void policy_decide_trace(const struct policy *p, const struct policy_request *req,
			 struct policy_decision *ret, policy_trace_fn fn, void *userdata);

/* The merged view: rules in evaluation order (i < policy_n_rules), settings, warnings. */
size_t policy_n_rules(const struct policy *p);
const struct policy_rule_info *policy_rule(const struct policy *p, size_t i);
enum policy_action policy_default_action(const struct policy *p, enum policy_layer *ret_layer);
/* [policy] wildcard_max_labels: how many labels a "*." may stand for (0: any number), and the
 * layer that set it (the defaults layer when none does; the value is then 1). */
unsigned policy_wildcard_max_labels(const struct policy *p, enum policy_layer *ret_layer);
/* NULL-terminated list of warning lines (never NULL; owned by the policy). */
const char *const *policy_warnings(const struct policy *p);

/* [upstream] ca_file: an extra CA file trusted for upstream TLS, or NULL. */
const char *policy_upstream_ca_file(const struct policy *p);
/* [[upstream.override]]: copy the "host:port" to connect to for (host, port) into ret_connect.
 * 0 when found, -ENOENT when there is no override, -ENOBUFS when cap is too small. */
int policy_upstream_override(const struct policy *p, const char *host, uint16_t port,
			     char *ret_connect, size_t cap);
size_t policy_n_overrides(const struct policy *p);
const struct policy_override_info *policy_override(const struct policy *p, size_t i);
/* The layer upstream.ca_file came from (meaningful only when it is set). */
enum policy_layer policy_upstream_ca_layer(const struct policy *p);

/* Cheap reload check: true when the corp or user file this policy was loaded from has appeared,
 * disappeared or changed (device, inode, size, mtime, ctime) since. Always false for policies
 * loaded from strings. The caller loads a new policy and swaps it in on success. */
bool policy_files_changed(const struct policy *p);

/* Normalise the path of a request target the way policy_decide() does before matching, for the
 * proxy to forward exactly what was decided on (RFC 3986 6.2.2): in the path (up to the first
 * '?' or '#'), "%XX" of an unreserved character other than '.' (A-Z a-z 0-9 - _ ~) is decoded and
 * every other "%XX" gets upper-case hex digits; the query and fragment are copied unchanged. A
 * path holding a '%' that is not followed by two hex digits, and a target that does not start
 * with '/', are copied unchanged (policy_decide() treats such a path as ambiguous). Encoded '.',
 * '/', '\', NUL and '%' stay encoded (and ambiguous). The result is never longer than target and
 * normalising it again changes nothing. Writes it NUL-terminated to out and returns its length,
 * or -ENOBUFS when cap <= strlen(target) (out untouched). */
ssize_t policy_path_normalize(const char *target, char *out, size_t cap);

/* The shipped defaults as TOML text (NUL-terminated, static). */
const char *policy_default_text(size_t *ret_len);

const char *policy_action_name(enum policy_action a); /* "allow" / "block" */
const char *policy_layer_name(enum policy_layer l);   /* "corp" / "user" / "default" */
