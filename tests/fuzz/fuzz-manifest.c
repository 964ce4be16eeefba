/* fuzz-manifest.c - the image manifest parser on arbitrary bytes (a manifest.json on disk may
 * have been tampered with). Every accepted manifest must name files inside the image dir. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct manifest *m = NULL;
	char *err = NULL;
	if (manifest_parse((const char *)data, size, "/img", "fuzz", &m, &err) == 0) {
		if (strncmp(m->kernel.path, "/img/", 5) != 0 || strchr(m->kernel.file, '/') ||
		    strncmp(m->initrd.path, "/img/", 5) != 0 || strchr(m->initrd.file, '/'))
			__builtin_trap();
		manifest_free(m);
	}
	free(err);
	return 0;
}
