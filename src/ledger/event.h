/* event.h - inside the ledger library: a validated event (struct lev) and its builder, shared by
 * event.c (which builds events) and ledger.c (the writer, which queues and stores them). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cols.h"
#include "ledger.h"

#define KIND_SESSION LEDGER_KIND_MAX /* internal: an update of the session row */

struct lval {
	int64_t i;
	double d;
	const char *s;
	int set;
};

struct lev {
	struct lev *next;
	int kind; /* enum ledger_kind or KIND_SESSION */
	size_t size;
	struct lval v[LEDGER_MAX_COLS];
	char data[];
};

struct builder {
	int kind;
	const struct kind_desc *kd;
	struct lval v[LEDGER_MAX_COLS];
	char *owned[LEDGER_MAX_COLS];
	int err;
};

/* The session row's columns (vm_id, vm_name, image, boot): KIND_SESSION's description. */
extern const struct col ledger_c_session[4];
extern const struct kind_desc ledger_session_desc;

/* Building an event: b_init, then setters for the columns known (NULL strings and -1 numbers
 * mean unknown), then b_finish (validates, fills defaults, packs into one allocation: *ret,
 * freed with free()) and always b_done. Errors are remembered and reported by b_finish:
 * -EINVAL (out of range, required column missing) or -ENOMEM. */
void b_init(struct builder *b, int kind);
void b_done(struct builder *b);
void b_int(struct builder *b, const char *name, int64_t x);
void b_text(struct builder *b, const char *name, const char *s);
int b_finish(struct builder *b, struct lev **ret);

/* Queue e for the writer thread (ledger.c; takes e over in every case). 0, -ENOBUFS (queue
 * full: counted as dropped), -ESHUTDOWN (closing). */
int ledger_enqueue(struct ledger *l, struct lev *e);
