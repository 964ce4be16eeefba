/* cachekey.c - SHA-256 cache keys of the kernel and initramfs recipes (see cachekey.h).
 *
 * Trust boundary: none; hashes the builder's own inputs. Caller's thread.
 */
#include "cachekey.h"

#include "macro.h"

int cachekey_kernel(const char *source_version, const void *fragment, size_t fragment_len,
		    const char *arch, char ret[SHA256_HEX_LEN + 1])
{
	struct sha256 h = { 0 };
	int r = sha256_init(&h);
	if (r == 0)
		r = sha256_field_str(&h, CACHEKEY_KERNEL_RECIPE);
	if (r == 0)
		r = sha256_field_str(&h, source_version);
	if (r == 0)
		r = sha256_field(&h, fragment, fragment_len);
	if (r == 0)
		r = sha256_field_str(&h, arch);
	if (r == 0)
		r = sha256_final_hex(&h, ret);
	sha256_done(&h);
	return r;
}

int cachekey_initramfs(const char *compression, const void *guest, size_t guest_len,
		       const void *busybox, size_t busybox_len, const struct initramfs_file *extra,
		       size_t n_extra, char ret[SHA256_HEX_LEN + 1])
{
	char mode[16];
	struct sha256 h = { 0 };
	int r = sha256_init(&h);
	if (r == 0)
		r = sha256_field_str(&h, CACHEKEY_INITRAMFS_RECIPE);
	if (r == 0)
		r = sha256_field_str(&h, compression);
	if (r == 0)
		r = sha256_field(&h, guest, guest_len);
	if (r == 0)
		r = sha256_field(&h, busybox, busybox_len);
	for (size_t i = 0; r == 0 && i < n_extra; i++) {
		snprintf(mode, sizeof(mode), "%o", extra[i].mode);
		r = sha256_field_str(&h, extra[i].path);
		if (r == 0)
			r = sha256_field_str(&h, mode);
		if (r == 0)
			r = sha256_field(&h, extra[i].data, extra[i].len);
	}
	if (r == 0)
		r = sha256_final_hex(&h, ret);
	sha256_done(&h);
	return r;
}

int cachekey_rootfs(const char *suite, const char *arch, char *const *packages,
		    const char *node_version, const char *npm_version, char ret[SHA256_HEX_LEN + 1])
{
	struct sha256 h = { 0 };
	size_t n = 0;
	int r = sha256_init(&h);
	if (r == 0)
		r = sha256_field_str(&h, CACHEKEY_ROOTFS_RECIPE);
	if (r == 0)
		r = sha256_field_str(&h, suite);
	if (r == 0)
		r = sha256_field_str(&h, arch);
	while (r == 0 && packages && packages[n])
		n++;
	/* the count first, so that the list cannot run into the next field */
	if (r == 0)
		r = sha256_field(&h, &(uint64_t){ n }, sizeof(uint64_t));
	for (size_t i = 0; r == 0 && i < n; i++)
		r = sha256_field_str(&h, packages[i]);
	if (r == 0)
		r = sha256_field_str(&h, node_version);
	if (r == 0)
		r = sha256_field_str(&h, npm_version);
	if (r == 0)
		r = sha256_final_hex(&h, ret);
	sha256_done(&h);
	return r;
}

int cachekey_layer(const char *recipe, const char *parent, char *const *items, const char *extra,
		   char ret[SHA256_HEX_LEN + 1])
{
	struct sha256 h = { 0 };
	size_t n = 0;
	int r = sha256_init(&h);
	if (r == 0)
		r = sha256_field_str(&h, recipe);
	if (r == 0)
		r = sha256_field_str(&h, parent);
	while (r == 0 && items && items[n])
		n++;
	if (r == 0)
		r = sha256_field(&h, &(uint64_t){ n }, sizeof(uint64_t));
	for (size_t i = 0; r == 0 && i < n; i++)
		r = sha256_field_str(&h, items[i]);
	if (r == 0)
		r = sha256_field_str(&h, strempty(extra));
	if (r == 0)
		r = sha256_final_hex(&h, ret);
	sha256_done(&h);
	return r;
}
