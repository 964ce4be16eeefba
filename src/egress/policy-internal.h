/* policy-internal.h - what the egress policy's three files share (not part of policy.h).
 *
 * policy-load.c parses the TOML layers and merges them into a struct policy, policy.c matches
 * requests against it (host, port, method and path rules; the path normaliser the proxy also
 * uses) and policy-tool.c owns the MCP [[tool_rule]] tables. The structures below are the loaded
 * policy's representation; nothing outside src/egress/policy*.c includes this header.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "macro.h"
#include "policy.h"
#include "toml.h"

/* The shipped defaults, generated from default-policy.toml by embed-text.py. */
extern const char policy_default_toml[];
extern const size_t policy_default_toml_len;

#define HOST_BUF 256 /* a normalised host: DNS name (<= 253) or IP literal */
#define MAX_REQ_PATH 8192
#define MAX_DESCRIPTION 256
#define MAX_METHOD 32
#define MAX_CA_PATH 4096
#define MAX_CONNECT 300
#define MAX_PRIORITY 1000000
#define MAX_WARNINGS 64

enum host_kind { HOST_EXACT, HOST_SUFFIX, HOST_ANY };

struct host_pat {
	enum host_kind kind;
	const char *s; /* EXACT: the name; SUFFIX: ".suffix" (points into the rule's hosts[i]) */
	size_t len;
};

struct rule {
	struct policy_rule_info info;
	char *name;
	char *description;
	char **hosts;
	struct host_pat *hpats;
	uint16_t *ports;
	char **methods;
	char **paths;
	bool *path_glob;
	size_t *path_len;
	size_t order; /* position in its file */
};

struct tool_rule {
	struct policy_tool_rule_info info;
	char *name;
	char *description;
	char *server;
	char *tool;
	size_t order;
};

struct override {
	struct policy_override_info info;
	char *host;
	char *connect;
};

struct stamp {
	bool present;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	struct timespec ctime;
};

struct policy {
	struct rule *rules;
	size_t n_rules;
	enum policy_action def;
	enum policy_layer def_layer;
	struct tool_rule *trules;
	size_t n_trules;
	enum policy_action tdef;
	enum policy_layer tdef_layer;
	char *ca_file;
	struct override *ovr;
	size_t n_ovr;
	enum policy_layer ca_layer;
	enum policy_layer ovr_layer;
	unsigned wild; /* wildcard_max_labels; 0 = no limit */
	enum policy_layer wild_layer;
	char **warnings;
	char *src[3];  /* source names per layer */
	char *path[2]; /* corp and user paths (policy_load only) */
	struct stamp stamp[2];
};

/* One layer while it is being loaded. */
struct layer {
	struct policy *p;
	enum policy_layer id;
	const char *name;
	const char *text;
	size_t len;
	struct toml_value
		*root; /* the parsed text, kept until loading ends: positions for messages */
	char *err;
	size_t errlen;
	struct rule *rules;
	size_t n_rules;
	bool has_default;
	enum policy_action def;
	struct tool_rule *trules;
	size_t n_trules;
	bool has_tdef;
	enum policy_action tdef;
	bool has_wild;
	unsigned wild;
	bool has_ca;
	char *ca;
	bool has_ovr;
	struct override *ovr;
	size_t n_ovr;
};

/* ---- policy.c: hosts, globs, paths ---- */

/* s is a dotted-quad IPv4 literal. */
bool policy_is_ipv4(const char *s);

/* Normalise the host in[0..n) into out (lower case, no trailing dot; IP literals as given).
 * Returns 0, or -EINVAL when it is not a DNS name or an IP literal. */
int policy_host_normalize(const char *in, size_t n, char out[static HOST_BUF]);
/* The glob p matches s[0..slen) ('*', '?', '[...]'); nocase folds ASCII case. */
bool policy_glob_match(const char *p, const char *s, size_t slen, bool nocase);
/* The value of a hex digit, or -1. */
int policy_hex_digit(char c);
/* s ("%XY...") encodes a character whose meaning could differ upstream ('/', '.', '\\', ...). */
bool policy_encoded_ambiguous(const char *s);
/* Normalise the path s[0..n) into out (RFC 3986 6.2.2); returns the length written. */
size_t policy_path_norm(const char *s, size_t n, char *out, bool *ret_malformed);

/* ---- policy-load.c: messages and values while a layer loads ---- */

/* The line of sect[idx].key (or of the element equal to elem in that array); 0 if unknown. */
unsigned policy_where(const struct layer *l, const char *sect, size_t idx, const char *key,
		      const char *elem);
/* Formats a one-line error at the line of sect[idx].key into the layer's buffer; returns
 * -EINVAL. */
int policy_kfail(struct layer *l, const char *sect, size_t idx, const char *key, const char *fmt,
		 ...) _printf_(5, 6);
/* Adds a warning to p (at most MAX_WARNINGS); returns 0 or -ENOMEM. */
int policy_warn(struct policy *p, const char *fmt, ...) _printf_(2, 3);
/* s, shortened and escaped for a message, in buf. */
const char *policy_shown(const char *s, char buf[static 72]);
/* s[0..n) holds a NUL or a control character. */
bool policy_has_ctl(const char *s, size_t n);
/* v is a string equal to want (no NUL tricks). */
bool policy_str_is(const struct toml_value *v, const char *want);
/* 1-POLICY_MAX_NAME of A-Z a-z 0-9 . _ -, and not "default". */
bool policy_rule_name_ok(const char *s);
/* *ret = the string v (no control characters, at most max bytes; owned by the TOML tree);
 * 0, or policy_kfail()'s error naming what. */
int policy_get_text(struct layer *l, const struct toml_value *v, size_t max, const char **ret,
		    const char *what, const char *sect, size_t idx, const char *key);

/* ---- policy-tool.c: [[tool_rule]] ---- */

/* Frees what a tool rule owns (not r itself). */
void policy_tool_rule_done(struct tool_rule *r);
/* Parses the layer's [[tool_rule]] array v into l->trules; 0 or -errno (message in l->err). */
int policy_parse_tool_rules(struct layer *l, const struct toml_value *v);
/* Moves the layers' tool rules into p, sorted into evaluation order, and picks tool_default
 * (corp locks it); 0 or -ENOMEM. */
int policy_merge_tools(struct policy *p, struct layer *ls);
