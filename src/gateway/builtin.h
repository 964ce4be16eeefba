/* builtin.h - the gateway's built-in tools (server "capsem"): fetch, grep and headers of web
 * pages (the URL already allowed by the egress policy: the caller decides before calling), and
 * list_files, read_file, write_file on the VM's workspace directory.
 *
 * builtin_call() blocks (network, disk): run it on a worker thread. Tool errors are results
 * with isError true (MCP 2025-06-18 "Error Handling"), so the model sees them.
 */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUILTIN_MAX_BODY (4u << 20)    /* bytes of a fetched page */
#define BUILTIN_DEFAULT_LENGTH 20000u  /* fetch/read_file: characters returned by default */
#define BUILTIN_MAX_LENGTH (1u << 20)  /* ... at most */
#define BUILTIN_MAX_WRITE (4u << 20)   /* write_file content */
#define BUILTIN_MAX_LIST 2000u	       /* list_files entries */
#define BUILTIN_HTTP_TIMEOUT_MS 30000L /* one fetch */
#define BUILTIN_URL_MAX 4096u

struct builtin_env {
	int workspace_fd;	/* O_PATH directory, or -1: no file tools */
	char *workspace_path;	/* its absolute path (owned by the gateway) */
	char *snap_store;	/* the workspace's snapshot store, or NULL: no snapshot tools */
	const atomic_int *stop; /* non-zero: abandon transfers (the gateway is stopping) */
};

/* The tools' definitions ({name, description, inputSchema}) with their plain names ("fetch");
 * the file tools only when with_files. New reference or NULL. */
json_t *builtin_tools(bool with_files);
/* True for the tools whose "url" argument the caller must decide (fetch, grep, headers). */
bool builtin_needs_url(const char *tool);

/* The parts of an http(s) URL the egress policy decides on, and the URL to hand libcurl. The path
 * is normalised the way the egress proxy forwards it (policy_path_normalize(): encoded
 * unreserved characters decoded, other escapes with upper-case hex; the query as it is), and
 * url carries that same path, so the server reads exactly the path that was decided on. 0, or
 * -EINVAL (not http/https, no host, too long) or -ENOMEM, *ret untouched. */
struct builtin_url {
	char host[256];
	uint16_t port;
	char path[2048];	       /* normalised path and query, "/" when empty */
	char url[BUILTIN_URL_MAX + 1]; /* the URL with the normalised path: what is sent */
};
int builtin_url_parse(const char *url, struct builtin_url *ret);

/* Run tool with args (an object; only read). Returns a CallToolResult (new reference) or NULL on
 * allocation failure. Blocking; any thread. */
json_t *builtin_call(const struct builtin_env *env, const char *tool, const json_t *args);

/* A CallToolResult with one text content: {"content":[{"type":"text","text":...}],
 * "isError":is_error}. */
json_t *builtin_text_result(const char *text, size_t len, bool is_error);
/* The same with isError true and a printf-formatted message (cut at 1 KiB). */
json_t *builtin_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
