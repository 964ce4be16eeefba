/* initramfs.c - lay out the minimal initramfs, check its inputs, gzip it (see initramfs.h).
 *
 * Trust boundary: the inputs are host files chosen by the user (the guest binary, busybox) and
 * the text busybox prints about itself. The ELF header is parsed with every offset and count
 * bounds-checked; applet names are checked to be safe relative paths before they become archive
 * entries. Caller's thread; pure.
 */
#include "initramfs.h"

#include <elf.h>
#include <zlib.h>

#include "macro.h"
#include "strv.h"

#define APPLET_PATH_MAX 128

const char *initramfs_compress_name(enum initramfs_compress c)
{
	return c == INITRAMFS_COMPRESS_GZIP ? "gzip" : "none";
}

int initramfs_compress_from_name(const char *s, enum initramfs_compress *ret)
{
	if (streq(s, "none"))
		*ret = INITRAMFS_COMPRESS_NONE;
	else if (streq(s, "gzip"))
		*ret = INITRAMFS_COMPRESS_GZIP;
	else
		return -EINVAL;
	return 0;
}

int initramfs_check_static_elf(const void *p, size_t n, const char **ret_reason)
{
	const unsigned char *b = p;
	Elf64_Ehdr eh;
	const char *why = NULL;

	if (n < sizeof(eh) || memcmp(b, ELFMAG, SELFMAG) != 0) {
		why = "not an ELF file";
		goto bad;
	}
	memcpy(&eh, b, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64) {
		why = "not an x86-64 ELF file";
		goto bad;
	}
	if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN) {
		why = "not an ELF executable";
		goto bad;
	}
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 512 ||
	    eh.e_phoff > n || (n - eh.e_phoff) / sizeof(Elf64_Phdr) < eh.e_phnum) {
		why = "malformed ELF program headers";
		goto bad;
	}
	for (size_t i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, b + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_INTERP) {
			why = "dynamically linked (needs an ELF interpreter); build it static";
			goto bad;
		}
	}
	return 0;
bad:
	if (ret_reason)
		*ret_reason = why;
	return -ENOEXEC;
}

static int applet_path_valid(const char *s, size_t n)
{
	if (n == 0 || n > APPLET_PATH_MAX || s[0] == '/' || s[n - 1] == '/')
		return 0;
	size_t comp = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == '/') {
			if (comp == 0 || (comp == 1 && s[i - 1] == '.') ||
			    (comp == 2 && s[i - 1] == '.' && s[i - 2] == '.'))
				return 0;
			comp = 0;
			continue;
		}
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '+' || c == '-' || c == '[' || c == ']'))
			return 0;
		comp++;
	}
	return 1;
}

int initramfs_parse_applets(const char *text, int full, char ***ret, size_t *ret_bad_line)
{
	_cleanup_strv_free_ char **v = NULL;
	size_t lineno = 0, count = 0;
	const char *s = text;

	while (*s) {
		const char *nl = strchr(s, '\n');
		size_t n = nl ? (size_t)(nl - s) : strlen(s);
		lineno++;
		if (n > 0 && s[n - 1] == '\r')
			n--;
		if (n > 0) {
			if (!applet_path_valid(s, n)) {
				if (ret_bad_line)
					*ret_bad_line = lineno;
				return -EBADMSG;
			}
			if (++count > INITRAMFS_MAX_APPLETS)
				return -E2BIG;
			int r = full ? strv_pushf(&v, "%.*s", (int)n, s)
				     : strv_pushf(&v, "bin/%.*s", (int)n, s);
			if (r < 0)
				return r;
		}
		s += n + (s[n] == '\r' ? 1 : 0);
		if (*s == '\n')
			s++;
	}
	*ret = TAKE_PTR(v);
	return 0;
}

int initramfs_elf_interp(const void *p, size_t n, char *ret, size_t cap)
{
	const unsigned char *b = p;
	Elf64_Ehdr eh;

	if (n < sizeof(eh) || memcmp(b, ELFMAG, SELFMAG) != 0)
		return -ENOEXEC;
	memcpy(&eh, b, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64 || (eh.e_type != ET_EXEC && eh.e_type != ET_DYN))
		return -ENOEXEC;
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 512 ||
	    eh.e_phoff > n || (n - eh.e_phoff) / sizeof(Elf64_Phdr) < eh.e_phnum)
		return -ENOEXEC;
	for (size_t i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, b + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_INTERP)
			continue;
		/* a NUL-terminated absolute path inside the file, shorter than cap */
		if (ph.p_offset > n || ph.p_filesz > n - ph.p_offset || ph.p_filesz < 2 ||
		    ph.p_filesz > cap)
			return -ENOEXEC;
		const char *s = (const char *)b + ph.p_offset;
		size_t len = ph.p_filesz - 1;
		if (s[len] != 0 || memchr(s, 0, len) || s[0] != '/' ||
		    !applet_path_valid(s + 1, len - 1))
			return -ENOEXEC;
		memcpy(ret, s, len + 1);
		return 0;
	}
	return -ENOENT;
}

/* One absolute path of [A-Za-z0-9._+-] components, as the loader prints them. */
static int lib_path_valid(const char *s, size_t n)
{
	return n >= 2 && s[0] == '/' && applet_path_valid(s + 1, n - 1) && !memchr(s, '[', n) &&
	       !memchr(s, ']', n);
}

static int push_unique(char ***v, const char *s, size_t n)
{
	for (size_t i = 0; *v && (*v)[i]; i++)
		if (strlen((*v)[i]) == n && memcmp((*v)[i], s, n) == 0)
			return 0;
	if (strv_length(*v) >= INITRAMFS_MAX_LIBS)
		return -E2BIG;
	return strv_pushf(v, "%.*s", (int)n, s);
}

int initramfs_parse_ldlist(const char *text, char ***ret)
{
	_cleanup_strv_free_ char **v = NULL;
	const char *s = text;

	while (*s) {
		const char *nl = strchr(s, '\n');
		size_t n = nl ? (size_t)(nl - s) : strlen(s);
		const char *l = s, *arrow, *path;
		size_t len;
		int r;

		s += n + (nl ? 1 : 0);
		while (n > 0 && (l[n - 1] == '\r' || l[n - 1] == ' ' || l[n - 1] == '\t'))
			n--;
		while (n > 0 && (*l == ' ' || *l == '\t')) {
			l++;
			n--;
		}
		if (n == 0)
			continue;
		arrow = memmem(l, n, " => ", 4);
		if (arrow) {
			path = arrow + 4;
			len = n - (size_t)(path - l);
			if (len >= 9 && memcmp(path, "not found", 9) == 0)
				return -ENOENT;
		} else {
			path = l;
			len = n;
		}
		/* "<path> (0x...)", or a bare "<name> (0x...)" for the vDSO */
		const char *paren = memmem(path, len, " (0x", 4);
		if (!paren || path[len - 1] != ')')
			return -EBADMSG;
		len = (size_t)(paren - path);
		if (!arrow && len > 0 && path[0] != '/' && !memchr(path, '/', len))
			continue; /* linux-vdso.so.1: in the kernel, not a file */
		if (!lib_path_valid(path, len))
			return -EBADMSG;
		r = push_unique(&v, path, len);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(v);
	return 0;
}

static int add_text(struct cpio *c, const char *path, const char *text)
{
	return cpio_add_file(c, path, 0644, text, strlen(text));
}

int initramfs_layout(struct cpio *c, const struct initramfs_inputs *in)
{
	static const struct {
		const char *path;
		unsigned mode;
	} dirs[] = {
		{ "/bin", 0755 },      { "/dev", 0755 },  { "/etc", 0755 }, { "/mnt", 0755 },
		{ "/proc", 0755 },     { "/root", 0700 }, { "/run", 0755 }, { "/sbin", 0755 },
		{ "/sys", 0755 },      { "/tmp", 01777 }, { "/usr", 0755 }, { "/usr/bin", 0755 },
		{ "/usr/sbin", 0755 },
	};
	int r = 0;

	for (size_t i = 0; i < ELEMENTSOF(dirs) && r == 0; i++)
		r = cpio_add_dir(c, dirs[i].path, dirs[i].mode);
	if (r == 0)
		r = cpio_add_file(c, "/init", 0755, in->guest, in->guest_len);
	if (r == 0)
		r = cpio_add_symlink(c, "/usr/bin/capsem-agent", "/init");
	if (r == 0)
		r = cpio_add_symlink(c, "/usr/bin/capsem-doctor", "/init");
	if (r == 0)
		r = cpio_add_symlink(c, "/usr/bin/capsem-mcp-relay", "/init");
	if (r == 0)
		r = cpio_add_symlink(c, "/usr/bin/capsem-snapshots", "/init");
	if (r == 0)
		r = cpio_add_file(c, "/bin/busybox", 0755, in->busybox, in->busybox_len);
	if (r == 0)
		r = cpio_add_chardev(c, "/dev/console", 0600, 5, 1);
	if (r == 0)
		r = cpio_add_chardev(c, "/dev/null", 0666, 1, 3);
	if (r == 0)
		r = add_text(c, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
	if (r == 0)
		r = add_text(c, "/etc/group", "root:x:0:\n");
	if (r == 0)
		r = add_text(c, "/etc/hostname", "capsem\n");
	for (size_t i = 0; r == 0 && i < in->n_extra; i++)
		r = cpio_add_file(c, in->extra[i].path, in->extra[i].mode, in->extra[i].data,
				  in->extra[i].len);
	for (size_t i = 0; r == 0 && in->applets && in->applets[i]; i++) {
		r = cpio_add_symlink(c, in->applets[i], "/bin/busybox");
		if (r == -EEXIST || r == -ENOTDIR)
			r = 0; /* the path is taken by one of ours: keep ours */
	}
	return r;
}

int initramfs_gzip(const void *p, size_t n, struct buf *out)
{
	z_stream zs = { 0 };
	if (n > UINT32_MAX)
		return -E2BIG;
	if (deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	uLong bound = deflateBound(&zs, (uLong)n);
	uint8_t *dst = buf_reserve(out, bound);
	if (!dst) {
		deflateEnd(&zs);
		return buf_room(out) < bound ? -ENOBUFS : -ENOMEM;
	}
	/* NOLINTNEXTLINE(performance-no-int-to-ptr): zlib's next_in is not const; deflate only reads it */
	zs.next_in = (Bytef *)(uintptr_t)p;
	zs.avail_in = (uInt)n;
	zs.next_out = dst;
	zs.avail_out = (uInt)bound;
	int z = deflate(&zs, Z_FINISH);
	size_t produced = bound - zs.avail_out;
	deflateEnd(&zs);
	if (z != Z_STREAM_END) {
		buf_commit(out, 0);
		return -EIO;
	}
	buf_commit(out, produced);
	return 0;
}
