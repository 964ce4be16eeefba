/* fuzz-bootargs.c - capsem-init's kernel command line parser on arbitrary text. Every mount it
 * accepts must have a valid tag and an absolute guest path without "..". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/guest/bootargs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	struct bootargs b;
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	bootargs_parse(s, &b);
	if (b.n_mounts > BOOTARGS_MAX_MOUNTS)
		__builtin_trap();
	for (size_t i = 0; i < b.n_mounts; i++) {
		const struct bootargs_mount *m = &b.mounts[i];
		if (m->path[0] != '/' || strstr(m->path, "/../") || strnlen(m->tag, 32) == 32 ||
		    strnlen(m->path, 128) == 128)
			__builtin_trap();
	}
	free(s);
	return 0;
}
