/* doctor-int.h - what capsem-doctor's check groups share (doctor.c runs them; the groups live
 * in doctor-sandbox.c, doctor-net.c and doctor-env.c). Not a public interface. */
#pragma once

#include <stddef.h>

#include "macro.h"
#include "toml.h"

#define DOCTOR_MAX_CHECKS 128
#define DOCTOR_OUT_MAX 4096
#define DOCTOR_TOOL_TIMEOUT_MS 30000
#define DOCTOR_CLI_TIMEOUT_MS 60000

enum doctor_status { DOCTOR_PASS, DOCTOR_FAIL, DOCTOR_SKIP };

struct doctor_check {
	char name[32];
	const char *group;
	enum doctor_status st;
	char detail[320];
	unsigned ms;
};

struct doctor {
	struct doctor_check c[DOCTOR_MAX_CHECKS];
	size_t n;
	const char *group;	  /* the group now running: doctor_add files checks under it */
	unsigned t0;		  /* when the current check started (doctor_start) */
	struct toml_value *image; /* /etc/capsem/image.toml, or NULL (the minimal image) */
	char *image_text;
	int egress; /* the host configured egress (/etc/capsem/ca.pem exists) */
};

/* Record one check's result. Its time is the time since the last doctor_start (0 without). */
_printf_(4, 5) void doctor_add(struct doctor *d, const char *name, enum doctor_status st,
			       const char *fmt, ...);
/* Time the next check from now. */
void doctor_start(struct doctor *d);
unsigned doctor_now_ms(void);

/* Run argv (PATH searched) with `input` (or nothing) on its stdin and stdout+stderr captured
 * into out (the first n-1 bytes, NUL-terminated), killed with its process group after
 * timeout_ms. The exit status (0..255, 128+signal), -ETIMEDOUT, -ENOENT (not found) or -errno. */
int doctor_run(char *const *argv, const char *input, unsigned timeout_ms, char *out, size_t n);

/* The first non-empty line of s, copied into buf. */
const char *doctor_first_line(const char *s, char *buf, size_t n);

/* 1 when the image config's array `key` (image.toml) holds the string `s`. */
int doctor_image_lists(const struct doctor *d, const char *key, const char *s);
/* The image config's providers array (or NULL). */
const struct toml_value *doctor_providers(const struct doctor *d);

/* 1 when `name` is an executable file in one of PATH's directories. */
int doctor_in_path(const char *name);

/* The groups, in the order they run. */
void doctor_sandbox(struct doctor *d);
void doctor_network(struct doctor *d);
void doctor_environment(struct doctor *d);
void doctor_runtimes(struct doctor *d);
void doctor_ai(struct doctor *d);
void doctor_mcp(struct doctor *d);
void doctor_lifecycle(struct doctor *d);
