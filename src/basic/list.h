/* list.h - the one intrusive doubly linked list: a circular list with a sentinel head, the
 * element embedding a struct list_link (Linux's list_head, kept small).
 *
 *   struct thing { struct list_link link; ... };
 *   struct list_link things;  list_init(&things);
 *   list_add_tail(&things, &t->link);  list_del(&t->link);
 *   list_for_each_safe(l, tmp, &things) { struct thing *t = list_entry(l, struct thing, link); }
 *
 * No allocation, no checks beyond the structure's own: a link is on at most one list, and
 * list_del() leaves it initialised (unlinked), so deleting twice is harmless. Not thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct list_link {
	struct list_link *prev, *next;
};

#define list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void list_init(struct list_link *l)
{
	l->prev = l->next = l;
}

/* For a link: whether it is on no list. For a head: whether the list is empty. */
static inline bool list_empty(const struct list_link *l)
{
	return l->next == l;
}

static inline void list_add_tail(struct list_link *head, struct list_link *l)
{
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

static inline void list_add_head(struct list_link *head, struct list_link *l)
{
	l->next = head->next;
	l->prev = head;
	head->next->prev = l;
	head->next = l;
}

static inline void list_del(struct list_link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	list_init(l);
}

#define list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
/* pos may be deleted (and freed) in the body */
#define list_for_each_safe(pos, tmp, head)                               \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); \
	     (pos) = (tmp), (tmp) = (pos)->next)
