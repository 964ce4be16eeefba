/* strv.h - NULL-terminated string vectors (argv, envp) that own their strings. */
#pragma once

#include <stddef.h>

#include "macro.h"

/* Append a copy of s (or a printf-formatted string). 0 or -ENOMEM; *v may start as NULL. */
int strv_push(char ***v, const char *s);
int strv_pushf(char ***v, const char *fmt, ...) _printf_(2, 3);
size_t strv_length(char *const *v);
/* Free every string and the vector; accepts NULL. */
void strv_free(char **v);
static inline void strv_freep(char ***v)
{
	strv_free(*v);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)
