/* httpd.h - the HTTP/1.1 server of capsemd (a listening Unix socket) and capsem-gateway (a
 * loopback TCP socket) on libuv: connections, peer uid check (Unix sockets), idle timeouts, request framing (http.h), responses, keep-alive, and hand-over of upgraded connections.
 *
 * One request is handled at a time per connection: while the handler works (which may take
 * seconds, e.g. a VM boot) the connection is not read; the handler must answer exactly once with
 * httpd_reply*() or take the connection with httpd_detach().
 */
#pragma once

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "http.h"

struct httpd;
struct httpd_conn;

/* Called with a complete request; body holds the decoded body (owned by the connection until
 * the reply). */
typedef void (*httpd_handler_t)(struct httpd_conn *c, const struct http_msg *req, struct buf *body,
				void *userdata);
/* The body cap for a request whose head was just read. */
typedef uint64_t (*httpd_body_cap_t)(const struct http_msg *req, void *userdata);

struct httpd_opts {
	int tcp;		   /* listen_fd is a TCP socket (else a Unix socket) */
	int check_peer_uid;	   /* refuse peers whose SO_PEERCRED uid is not ours (Unix) */
	uint64_t idle_ms;	   /* close a connection idle (or slow to send a request) this
				    * long; 0: never */
	unsigned max_conns;	   /* 0: 1024 */
	const char *server_name;   /* the Server header (NULL: "capsemd") */
	const char *extra_headers; /* "Name: value\r\n" lines added to every response, or NULL;
				    * borrowed for the server's life */
};

/* Serve on listen_fd (taken over) with opts (copied). 0 or -errno. */
int httpd_new_opts(uv_loop_t *loop, int listen_fd, const struct httpd_opts *opts,
		   httpd_handler_t handler, httpd_body_cap_t body_cap, void *userdata,
		   struct httpd **ret);
/* capsemd's: a Unix socket, peer uid checked, no idle timeout. 0 or -errno. */
int httpd_new(uv_loop_t *loop, int listen_fd, httpd_handler_t handler, httpd_body_cap_t body_cap,
	      void *userdata, struct httpd **ret);
/* Stop listening. Open connections are left to the process exit (a handler may hold one). */
void httpd_free(struct httpd *h);

/* Answer the current request. body is copied when free_body is NULL, else taken over and
 * released with free_body(body) once written. */
void httpd_reply(struct httpd_conn *c, int status, const char *content_type, void *body, size_t n,
		 void (*free_body)(void *));
/* Answer with JSON (the reference is stolen). */
void httpd_reply_json(struct httpd_conn *c, int status, json_t *j);
/* {"error": message, "code": code} */
void httpd_reply_error(struct httpd_conn *c, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The connection's socket (borrowed: for getsockopt/getpeername), or -EBADF. */
int httpd_conn_fd(struct httpd_conn *c);
/* Answer with headers only, then hand the stream over: the caller owns *ret_stream (a uv_pipe_t
 * on a Unix socket, a uv_tcp_t on TCP, allocated alone with malloc; whose data field it may set; close it with uv_close and free it in the close callback) and
 * receives the bytes already read past the request in *ret_leftover (its own buf). The reply is
 * written before any later write on the stream. The connection object is gone after this. */
void httpd_detach(struct httpd_conn *c, const char *response_head, uv_stream_t **ret_stream,
		  struct buf *ret_leftover);
