/* wsaudit.c - the workspace's file audit (wsaudit.h): inotify on every directory of the shared
 * folder, touched paths coalesced in a bounded set, resolved against an index of what has been
 * reported, and a reconciliation walk for overflows and for the end.
 *
 * Trust boundary: the tree is written by the guest (root inside the VM). Names are whatever it
 * chose (any bytes but '/' and NUL); the ledger makes them valid UTF-8. Every lookup goes through
 * wstree, so a symlink or a directory swapped by the guest is reported as what it is and never
 * followed; watches are added on an fd opened that way (through /proc/self/fd), never by a path
 * the kernel would resolve itself. Sizes are bounded: the pending set, the index, the noise
 * summaries, the bytes read per call. Single thread (capsem-vm's loop).
 */
#include "wsaudit.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "siphash.h"
#include "wstree.h"

#define WATCH_MASK                                                                        \
	(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_MOVED_FROM | \
	 IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
#define READ_BUF (64u << 10)
#define READS_PER_CALL 16

enum ftype { T_FILE, T_DIR, T_LNK, T_OTHER };
static const char *const type_names[] = { "file", "dir", "symlink", "other" };

/* A string-keyed chained hash table; entries embed a struct hent first. */
struct hent {
	struct hent *next;
	uint64_t h;
	char *key;
};

struct htab {
	struct hent **b;
	size_t nb, n;
	uint64_t k[2];
};

/* The index: a path as the reported changes describe it. */
struct node {
	struct hent e;
	enum ftype type;
	int64_t size, mtime_ns;
	uint64_t ino;
	uint32_t mode;
	int wd; /* directory: its watch, or -1 */
	uint32_t gen;
};

/* A touched path waiting to be resolved; also on a list in touch order. */
struct pend {
	struct hent e;
	struct pend *prev, *lnext;
	int64_t first, last;
};

/* watch descriptor -> directory path */
struct wdent {
	struct wdent *next;
	int wd;
	char *path;
};

struct noise {
	char *root;
	int64_t created, modified, deleted, renamed, bytes, last;
	const char *source;
};

struct wsaudit {
	int rootfd, ifd;
	wsaudit_cb cb;
	void *userdata;
	struct htab index, pending;
	struct pend *head, *tail;
	struct wdent **wds;
	size_t n_wdb;
	uint32_t gen;
	int need_scan;
	int scanning; /* the walk reports through resolve(); its rows say "scan" */
	/* an IN_MOVED_FROM waiting for its IN_MOVED_TO */
	uint32_t move_cookie;
	char *move_from;
	int move_isdir;
	struct noise noise[WSAUDIT_MAX_NOISE_ROOTS];
	size_t n_noise;
	struct wsaudit_stats st;
	char buf[READ_BUF] __attribute__((aligned(__alignof__(struct inotify_event))));
};

/* ---- hash tables ---- */

static int htab_init(struct htab *t, size_t nb)
{
	t->b = calloc(nb, sizeof(*t->b));
	if (!t->b)
		return -ENOMEM;
	t->nb = nb;
	t->n = 0;
	if (getrandom(t->k, sizeof(t->k), GRND_NONBLOCK) != (ssize_t)sizeof(t->k)) {
		t->k[0] = (uint64_t)(uintptr_t)t ^ 0x9e3779b97f4a7c15ull;
		t->k[1] = (uint64_t)getpid() * 0xbf58476d1ce4e5b9ull;
	}
	return 0;
}

static uint64_t htab_hash(const struct htab *t, const char *key)
{
	return siphash13(t->k, key, strlen(key));
}

static struct hent *htab_get(const struct htab *t, const char *key)
{
	uint64_t h = htab_hash(t, key);
	for (struct hent *e = t->b[h & (t->nb - 1)]; e; e = e->next)
		if (e->h == h && streq(e->key, key))
			return e;
	return NULL;
}

static void htab_grow(struct htab *t)
{
	size_t nb = t->nb * 2;
	struct hent **b = calloc(nb, sizeof(*b));
	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < t->nb; i++)
		for (struct hent *e = t->b[i], *n; e; e = n) {
			n = e->next;
			e->next = b[e->h & (nb - 1)];
			b[e->h & (nb - 1)] = e;
		}
	free(t->b);
	t->b = b;
	t->nb = nb;
}

/* e->key set; not already present */
static void htab_put(struct htab *t, struct hent *e)
{
	if (t->n >= t->nb)
		htab_grow(t);
	e->h = htab_hash(t, e->key);
	e->next = t->b[e->h & (t->nb - 1)];
	t->b[e->h & (t->nb - 1)] = e;
	t->n++;
}

static void htab_del(struct htab *t, struct hent *e)
{
	for (struct hent **p = &t->b[e->h & (t->nb - 1)]; *p; p = &(*p)->next)
		if (*p == e) {
			*p = e->next;
			t->n--;
			return;
		}
}

/* ---- paths ---- */

static int has_prefix_dir(const char *path, const char *dir, size_t dl)
{
	return strncmp(path, dir, dl) == 0 && path[dl] == '/';
}

static char *path_join(const char *dir, const char *name)
{
	char *p = NULL;
	if (asprintf(&p, "%s%s%s", dir, *dir ? "/" : "", name) < 0)
		return NULL;
	return p;
}

size_t wsaudit_noise_root(const char *path)
{
	static const char *const names[] = { "node_modules", "__pycache__", ".cache",
					     ".venv",	     ".mypy_cache", ".pytest_cache",
					     ".tox",	     ".npm",	    ".gradle" };
	const char *p = path;
	while (*p) {
		size_t c = strcspn(p, "/");
		if (!p[c])
			return 0; /* the last component: the root itself is no noise */
		size_t end = (size_t)(p - path) + c;
		for (size_t i = 0; i < ELEMENTSOF(names); i++)
			if (strlen(names[i]) == c && memcmp(p, names[i], c) == 0)
				return end;
		if (c == 4 && memcmp(p, ".git", 4) == 0 && strncmp(p + 5, "objects", 7) == 0 &&
		    (p[12] == '/'))
			return end + 8;
		p += c + 1;
	}
	return 0;
}

static enum ftype ftype_of(mode_t m)
{
	return S_ISREG(m) ? T_FILE : S_ISDIR(m) ? T_DIR : S_ISLNK(m) ? T_LNK : T_OTHER;
}

/* ---- watches ---- */

static struct wdent **wd_slot(struct wsaudit *a, int wd)
{
	struct wdent **p = &a->wds[(unsigned)wd & (a->n_wdb - 1)];
	while (*p && (*p)->wd != wd)
		p = &(*p)->next;
	return p;
}

static const char *wd_path(struct wsaudit *a, int wd)
{
	struct wdent *w = *wd_slot(a, wd);
	return w ? w->path : NULL;
}

static void wd_forget(struct wsaudit *a, int wd)
{
	struct wdent **p = wd_slot(a, wd), *w = *p;
	if (!w)
		return;
	*p = w->next;
	free(w->path);
	free(w);
	a->st.watches--;
}

/* Watch the directory at path (opened safely; the watch is added on that fd). The wd, or -errno;
 * the kernel's watch limit counts the directory as unwatched. */
static int watch_dir(struct wsaudit *a, const char *path)
{
	int fd = wst_open(a->rootfd, path, O_PATH | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	int wd = inotify_add_watch(a->ifd, proc, WATCH_MASK);
	int r = wd < 0 ? -errno : wd;
	close(fd);
	if (r == -ENOSPC) {
		a->st.unwatched++;
		return r;
	}
	if (r < 0)
		return r;
	struct wdent **p = wd_slot(a, wd);
	char *copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	if (*p) { /* the same directory again (renamed): its new path */
		free((*p)->path);
		(*p)->path = copy;
		return wd;
	}
	struct wdent *w = calloc(1, sizeof(*w));
	if (!w) {
		free(copy);
		return -ENOMEM;
	}
	w->wd = wd;
	w->path = copy;
	*p = w;
	a->st.watches++;
	return wd;
}

/* ---- the index ---- */

static struct node *node_get(struct wsaudit *a, const char *path)
{
	return (struct node *)htab_get(&a->index, path);
}

static void node_fill(struct node *n, const struct stat *st)
{
	n->type = ftype_of(st->st_mode);
	n->size = n->type == T_DIR ? -1 : st->st_size;
	n->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	n->ino = st->st_ino;
	n->mode = st->st_mode;
}

static struct node *node_add(struct wsaudit *a, const char *path, const struct stat *st)
{
	if (a->index.n >= WSAUDIT_MAX_INDEX) {
		a->st.untracked++;
		return NULL;
	}
	struct node *n = calloc(1, sizeof(*n));
	if (!n || !(n->e.key = strdup(path))) {
		free(n);
		return NULL;
	}
	node_fill(n, st);
	n->wd = -1;
	n->gen = a->gen;
	htab_put(&a->index, &n->e);
	a->st.indexed = a->index.n;
	return n;
}

static void node_del(struct wsaudit *a, struct node *n)
{
	htab_del(&a->index, &n->e);
	free(n->e.key);
	free(n);
	a->st.indexed = a->index.n;
}

/* ---- reporting ---- */

static struct noise *noise_slot(struct wsaudit *a, const char *path, size_t rl)
{
	for (size_t i = 0; i < a->n_noise; i++)
		if (strlen(a->noise[i].root) == rl && memcmp(a->noise[i].root, path, rl) == 0)
			return &a->noise[i];
	if (a->n_noise == WSAUDIT_MAX_NOISE_ROOTS)
		return NULL;
	struct noise *s = &a->noise[a->n_noise];
	*s = (struct noise){ .root = strndup(path, rl) };
	if (!s->root)
		return NULL;
	a->n_noise++;
	return s;
}

/* Report one change, or count it into its noise directory's summary. */
static void report(struct wsaudit *a, int64_t ts, const char *action, const char *path,
		   const char *old_path, enum ftype type, int64_t size)
{
	const char *source = a->scanning ? "scan" : "watch";
	size_t rl = wsaudit_noise_root(path);
	struct noise *s = rl ? noise_slot(a, path, rl) : NULL;
	if (s) {
		if (streq(action, "created"))
			s->created++;
		else if (streq(action, "modified"))
			s->modified++;
		else if (streq(action, "deleted"))
			s->deleted++;
		else
			s->renamed++;
		if (size > 0 && type == T_FILE)
			s->bytes += size;
		s->last = MAX(s->last, ts);
		s->source = source;
		return;
	}
	struct wsaudit_change c = { .ts = ts,
				    .action = action,
				    .path = path,
				    .old_path = old_path,
				    .type = type_names[type],
				    .size = type == T_DIR ? -1 : size,
				    .count = -1,
				    .source = source };
	a->st.changes++;
	a->cb(&c, a->userdata);
}

static void report_noise(struct wsaudit *a)
{
	for (size_t i = 0; i < a->n_noise; i++) {
		struct noise *s = &a->noise[i];
		char detail[160];
		snprintf(detail, sizeof(detail),
			 "created %lld, modified %lld, deleted %lld, "
			 "renamed %lld",
			 (long long)s->created, (long long)s->modified, (long long)s->deleted,
			 (long long)s->renamed);
		struct wsaudit_change c = { .ts = s->last,
					    .action = "summary",
					    .path = s->root,
					    .size = s->bytes,
					    .count = s->created + s->modified + s->deleted +
						     s->renamed,
					    .detail = detail,
					    .source = s->source };
		a->st.changes++;
		a->cb(&c, a->userdata);
		free(s->root);
	}
	a->n_noise = 0;
}

/* Everything in the index below dir (a directory that is gone): reported deleted, removed. */
static void delete_subtree(struct wsaudit *a, const char *dir, int64_t ts)
{
	size_t dl = strlen(dir);
	for (size_t i = 0; i < a->index.nb; i++)
		for (struct hent *e = a->index.b[i], *nx; e; e = nx) {
			nx = e->next;
			if (!has_prefix_dir(e->key, dir, dl))
				continue;
			struct node *n = (struct node *)e;
			report(a, ts, "deleted", n->e.key, NULL, n->type, -1);
			node_del(a, n);
		}
}

/* n (just refilled from a stat) differs from old in a way the ledger reports: another type, or
 * a file's size, mtime, inode or mode (a directory's own changes are its entries'). */
static bool node_changed(const struct node *old, const struct node *n)
{
	return old->type != n->type ||
	       (n->type != T_DIR && (old->size != n->size || old->mtime_ns != n->mtime_ns ||
				     old->ino != n->ino || old->mode != n->mode));
}

/* Compare path's state now with the index and report the difference. */
static void resolve(struct wsaudit *a, const char *path, int64_t ts)
{
	struct stat st;
	int r = wst_lstat(a->rootfd, path, &st);
	struct node *n = node_get(a, path);
	if (r < 0) { /* gone (or its parent is no directory any more) */
		if (!n)
			return;
		enum ftype t = n->type;
		if (t == T_DIR)
			delete_subtree(a, path, ts);
		report(a, ts, "deleted", path, NULL, t, -1);
		node_del(a, n);
		return;
	}
	if (!n) {
		n = node_add(a, path, &st);
		if (n && n->type == T_DIR)
			n->wd = watch_dir(a, path);
		report(a, ts, "created", path, NULL, ftype_of(st.st_mode),
		       S_ISDIR(st.st_mode) ? -1 : st.st_size);
		return;
	}
	struct node old = *n;
	node_fill(n, &st);
	if (node_changed(&old, n))
		report(a, ts, "modified", path, NULL, n->type, n->size);
	if (n->type == T_DIR && n->wd < 0)
		n->wd = watch_dir(a, path);
	if (old.type == T_DIR && n->type != T_DIR)
		delete_subtree(a, path, ts);
}

/* ---- the pending set ---- */

static void pend_unlink(struct wsaudit *a, struct pend *p)
{
	if (p->prev)
		p->prev->lnext = p->lnext;
	else
		a->head = p->lnext;
	if (p->lnext)
		p->lnext->prev = p->prev;
	else
		a->tail = p->prev;
	htab_del(&a->pending, &p->e);
	free(p->e.key);
	free(p);
}

static void touch(struct wsaudit *a, const char *path, int64_t now)
{
	if (!*path)
		return; /* the root itself: never a change of its own */
	struct pend *p = (struct pend *)htab_get(&a->pending, path);
	if (p) {
		p->last = now;
		return;
	}
	if (a->pending.n >= WSAUDIT_MAX_PENDING) {
		if (!a->need_scan)
			a->st.overflows++;
		a->need_scan = 1; /* nothing is lost: the walk finds it */
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p || !(p->e.key = strdup(path))) {
		free(p);
		a->need_scan = 1;
		return;
	}
	p->first = p->last = now;
	htab_put(&a->pending, &p->e);
	p->prev = a->tail;
	if (a->tail)
		a->tail->lnext = p;
	else
		a->head = p;
	a->tail = p;
}

/* A directory appeared (created, or moved in from outside the workspace): watch it and everything
 * below, and touch every entry, so what was written into it before its watch existed is found. */
struct newdir {
	struct wsaudit *a;
	int64_t now;
};

static int newdir_cb(const struct wst_entry *e, void *ud)
{
	struct newdir *nd = ud;
	touch(nd->a, e->path, nd->now);
	if (S_ISDIR(e->st.st_mode))
		(void)watch_dir(nd->a, e->path);
	return 0;
}

static void new_dir(struct wsaudit *a, const char *path, int64_t now)
{
	struct newdir nd = { a, now };
	touch(a, path, now);
	if (watch_dir(a, path) >= 0)
		(void)wst_walk(a->rootfd, path, newdir_cb, &nd);
}

/* Replace a prefix in every key of a table below old (old itself too when self). */
static void rekey(struct wsaudit *a, struct htab *t, const char *old, const char *new, int self)
{
	size_t ol = strlen(old);
	struct hent *moved = NULL;
	for (size_t i = 0; i < t->nb; i++)
		for (struct hent **pp = &t->b[i]; *pp;) {
			struct hent *e = *pp;
			int match = (self && streq(e->key, old)) || has_prefix_dir(e->key, old, ol);
			if (!match) {
				pp = &e->next;
				continue;
			}
			char *k = NULL;
			if (asprintf(&k, "%s%s", new, e->key + ol) < 0) {
				pp = &e->next;
				a->need_scan = 1;
				continue;
			}
			*pp = e->next;
			t->n--;
			free(e->key);
			e->key = k;
			e->next = moved;
			moved = e;
		}
	while (moved) {
		struct hent *e = moved;
		moved = e->next;
		struct hent *clash = htab_get(t, e->key);
		if (clash) { /* the rename replaced it */
			if (t == &a->pending) {
				pend_unlink(a, (struct pend *)clash);
			} else {
				htab_del(t, clash);
				free(clash->key);
				free(clash);
			}
		}
		htab_put(t, e);
	}
	a->st.indexed = a->index.n;
}

static void rename_wds(struct wsaudit *a, const char *old, const char *new)
{
	size_t ol = strlen(old);
	for (size_t i = 0; i < a->n_wdb; i++)
		for (struct wdent *w = a->wds[i]; w; w = w->next) {
			if (!streq(w->path, old) && !has_prefix_dir(w->path, old, ol))
				continue;
			char *k = NULL;
			if (asprintf(&k, "%s%s", new, w->path + ol) < 0)
				continue;
			free(w->path);
			w->path = k;
		}
}

/* Stop watching dir and everything below (moved out of the workspace: its events would name
 * paths that are no longer ours). */
static void unwatch_subtree(struct wsaudit *a, const char *dir)
{
	size_t dl = strlen(dir);
	for (size_t i = 0; i < a->n_wdb; i++)
		for (struct wdent *w = a->wds[i], *nx; w; w = nx) {
			nx = w->next;
			if (streq(w->path, dir) || has_prefix_dir(w->path, dir, dl)) {
				(void)inotify_rm_watch(a->ifd, w->wd);
				wd_forget(a, w->wd);
			}
		}
}

/* old was renamed to new inside the workspace. */
static void renamed(struct wsaudit *a, const char *old, const char *new, int isdir, int64_t now)
{
	struct node *n = node_get(a, old);
	if (isdir)
		rename_wds(a, old, new);
	/* what was waiting under the old name waits under the new one */
	rekey(a, &a->pending, old, new, 1);
	if (isdir || n)
		rekey(a, &a->index, old, new, n != NULL);
	if (n)
		report(a, now, "renamed", new, old, n->type, n->type == T_DIR ? -1 : n->size);
	touch(a, old, now);
	touch(a, new, now);
}

static void finish_move(struct wsaudit *a, int64_t now)
{
	if (!a->move_from)
		return;
	if (a->move_isdir)
		unwatch_subtree(a, a->move_from);
	touch(a, a->move_from, now); /* moved out: deleted when resolved */
	free(a->move_from);
	a->move_from = NULL;
}

static void handle(struct wsaudit *a, const struct inotify_event *ev, int64_t now)
{
	a->st.events++;
	if (ev->mask & IN_Q_OVERFLOW) {
		a->st.overflows++;
		a->need_scan = 1;
		return;
	}
	if (ev->mask & IN_IGNORED) {
		wd_forget(a, ev->wd);
		return;
	}
	const char *dir = wd_path(a, ev->wd);
	if (!dir)
		return;
	if (!ev->len) { /* about the watched directory itself */
		if (ev->mask & IN_DELETE_SELF)
			touch(a, dir, now);
		return;
	}
	_cleanup_free_ char *path = path_join(dir, ev->name);
	if (!path || wst_path_check(path, 0) < 0) {
		a->need_scan = 1;
		return;
	}
	int isdir = !!(ev->mask & IN_ISDIR);
	if (ev->mask & IN_MOVED_FROM) {
		finish_move(a, now);
		a->move_from = TAKE_PTR(path);
		a->move_cookie = ev->cookie;
		a->move_isdir = isdir;
		return;
	}
	if (ev->mask & IN_MOVED_TO) {
		if (a->move_from && a->move_cookie == ev->cookie) {
			renamed(a, a->move_from, path, isdir, now);
			free(a->move_from);
			a->move_from = NULL;
			return;
		}
		if (isdir) {
			new_dir(a, path, now); /* moved in from outside */
			return;
		}
	}
	if ((ev->mask & IN_CREATE) && isdir) {
		new_dir(a, path, now);
		return;
	}
	touch(a, path, now);
}

int wsaudit_read(struct wsaudit *a, int64_t now_ms)
{
	for (int i = 0; i < READS_PER_CALL; i++) {
		ssize_t n = read(a->ifd, a->buf, sizeof(a->buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (size_t off = 0; off + sizeof(struct inotify_event) <= (size_t)n;) {
			const struct inotify_event *ev = (const void *)(a->buf + off);
			if (off + sizeof(*ev) + ev->len > (size_t)n)
				break;
			handle(a, ev, now_ms);
			off += sizeof(*ev) + ev->len;
		}
	}
	/* a move whose other half did not come with it left the workspace */
	finish_move(a, now_ms);
	return 0;
}

/* ---- flush and reconciliation ---- */

struct scan {
	struct wsaudit *a;
	int64_t now;
	int initial; /* indexing only, no reports */
};

static int scan_cb(const struct wst_entry *e, void *ud)
{
	struct scan *s = ud;
	struct wsaudit *a = s->a;
	struct node *n = node_get(a, e->path);
	if (!n) {
		n = node_add(a, e->path, &e->st);
		if (!s->initial)
			report(a, s->now, "created", e->path, NULL, ftype_of(e->st.st_mode),
			       e->st.st_size);
	} else {
		struct node old = *n;
		node_fill(n, &e->st);
		if (node_changed(&old, n))
			report(a, s->now, "modified", e->path, NULL, n->type, n->size);
	}
	if (n) {
		n->gen = a->gen;
		if (n->type == T_DIR && n->wd < 0)
			n->wd = watch_dir(a, e->path);
	}
	return 0;
}

static int scan_tree(struct wsaudit *a, int64_t now, int initial)
{
	struct scan s = { a, now, initial };
	a->gen++;
	a->scanning = 1;
	int r = wst_walk(a->rootfd, "", scan_cb, &s);
	if (r == 0 && !initial) {
		/* what the index has and the walk did not meet is gone */
		for (size_t i = 0; i < a->index.nb; i++)
			for (struct hent *e = a->index.b[i], *nx; e; e = nx) {
				nx = e->next;
				struct node *n = (struct node *)e;
				if (n->gen == a->gen)
					continue;
				report(a, now, "deleted", n->e.key, NULL, n->type, -1);
				node_del(a, n);
			}
	}
	a->scanning = 0;
	a->st.scans += !initial;
	return r;
}

int64_t wsaudit_flush(struct wsaudit *a, int64_t now_ms, int all)
{
	int64_t next = -1;
	for (struct pend *p = a->head, *nx; p; p = nx) {
		nx = p->lnext;
		int64_t due = MIN(p->last + WSAUDIT_QUIET_MS, p->first + WSAUDIT_MAX_DELAY_MS);
		if (!all && due > now_ms) {
			next = next < 0 ? due - now_ms : MIN(next, due - now_ms);
			continue;
		}
		resolve(a, p->e.key, p->last);
		pend_unlink(a, p);
	}
	if (a->need_scan) {
		a->need_scan = 0;
		(void)scan_tree(a, now_ms, 0);
	}
	report_noise(a);
	return next;
}

int wsaudit_reconcile(struct wsaudit *a, int64_t now_ms)
{
	finish_move(a, now_ms);
	(void)wsaudit_flush(a, now_ms, 1);
	int r = scan_tree(a, now_ms, 0);
	report_noise(a);
	return r;
}

/* ---- life ---- */

int wsaudit_fd(const struct wsaudit *a)
{
	return a->ifd;
}

void wsaudit_get_stats(const struct wsaudit *a, struct wsaudit_stats *ret)
{
	*ret = a->st;
}

int wsaudit_new(int rootfd, wsaudit_cb cb, void *userdata, struct wsaudit **ret)
{
	struct wsaudit *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->cb = cb;
	a->userdata = userdata;
	a->rootfd = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
	a->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	a->n_wdb = 4096;
	a->wds = calloc(a->n_wdb, sizeof(*a->wds));
	int r = a->rootfd < 0 || a->ifd < 0 ? -errno : 0;
	if (r == 0 && !a->wds)
		r = -ENOMEM;
	if (r == 0)
		r = htab_init(&a->index, 1024);
	if (r == 0)
		r = htab_init(&a->pending, 256);
	if (r == 0) {
		int wd = watch_dir(a, "");
		r = wd < 0 ? wd : 0;
	}
	if (r == 0)
		r = scan_tree(a, 0, 1);
	if (r < 0) {
		wsaudit_free(a);
		return r;
	}
	*ret = a;
	return 0;
}

void wsaudit_free(struct wsaudit *a)
{
	if (!a)
		return;
	while (a->head)
		pend_unlink(a, a->head);
	for (size_t i = 0; i < a->index.nb; i++)
		for (struct hent *e = a->index.b[i], *nx; e; e = nx) {
			nx = e->next;
			free(e->key);
			free(e);
		}
	for (size_t i = 0; a->wds && i < a->n_wdb; i++)
		for (struct wdent *w = a->wds[i], *nx; w; w = nx) {
			nx = w->next;
			free(w->path);
			free(w);
		}
	for (size_t i = 0; i < a->n_noise; i++)
		free(a->noise[i].root);
	free(a->index.b);
	free(a->pending.b);
	free(a->wds);
	free(a->move_from);
	if (a->ifd >= 0)
		close(a->ifd);
	if (a->rootfd >= 0)
		close(a->rootfd);
	free(a);
}
