/* fuzz-release.c - the release channel manifest parser on arbitrary bytes (capsem update parses
 * it only after the signature verified, but a compromised release process must still not get a
 * path out of it). Every accepted manifest names plain file names and valid versions. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "release.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct release *r = NULL;
	char err[256];
	if (release_parse((const char *)data, size, &r, err, sizeof(err)) == 0) {
		if (!release_version_valid(r->version))
			__builtin_trap();
		for (size_t i = 0; i < r->n_images; i++)
			for (size_t k = 0; k < r->images[i].n_assets; k++)
				if (strchr(r->images[i].assets[k].file, '/') ||
				    r->images[i].assets[k].file[0] == '.')
					__builtin_trap();
		release_free(r);
	}
	return 0;
}
