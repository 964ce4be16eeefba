/* test-cpio.c - the newc cpio writer and the initramfs layout, applet parsing, ELF check, gzip.
 * Archives are parsed back by an independent reader written here from the format description. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <elf.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <zlib.h>

#include "buf.h"
#include "cpio.h"
#include "initramfs.h"
#include "macro.h"
#include "strv.h"

struct rd_entry {
	char name[256];
	uint32_t ino, mode, uid, gid, nlink, mtime, size, rmaj, rmin;
	const uint8_t *data;
};

static uint32_t hex8(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 8; i++) {
		assert_true((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'F'));
		v = v << 4 | (uint32_t)(p[i] <= '9' ? p[i] - '0' : p[i] - 'A' + 10);
	}
	return v;
}

/* Parse a whole archive; returns the number of entries before the trailer. */
static size_t parse(const uint8_t *p, size_t n, struct rd_entry *out, size_t max)
{
	size_t off = 0, count = 0;
	assert_int_equal(n % 512, 0);
	for (;;) {
		assert_true(off % 4 == 0);
		assert_true(off + 110 <= n);
		assert_memory_equal(p + off, "070701", 6);
		const uint8_t *h = p + off + 6;
		struct rd_entry e = { 0 };
		e.ino = hex8(h);
		e.mode = hex8(h + 8);
		e.uid = hex8(h + 16);
		e.gid = hex8(h + 24);
		e.nlink = hex8(h + 32);
		e.mtime = hex8(h + 40);
		e.size = hex8(h + 48);
		assert_int_equal(hex8(h + 56), 0); /* devmajor */
		assert_int_equal(hex8(h + 64), 0); /* devminor */
		e.rmaj = hex8(h + 72);
		e.rmin = hex8(h + 80);
		uint32_t namesize = hex8(h + 88);
		assert_int_equal(hex8(h + 96), 0); /* check */
		assert_true(namesize > 1 && namesize < sizeof(e.name));
		assert_true(off + 110 + namesize <= n);
		memcpy(e.name, p + off + 110, namesize);
		assert_int_equal(e.name[namesize - 1], 0);
		assert_int_equal(strlen(e.name), namesize - 1);
		off = (off + 110 + namesize + 3) & ~(size_t)3;
		e.data = p + off;
		assert_true(off + e.size <= n);
		off = (off + e.size + 3) & ~(size_t)3;
		if (streq(e.name, "TRAILER!!!"))
			break;
		assert_true(count < max);
		out[count++] = e;
	}
	for (size_t i = off; i < n; i++)
		assert_int_equal(p[i], 0);
	return count;
}

static void build_sample(struct cpio *c, int reverse)
{
	if (!reverse) {
		assert_int_equal(cpio_add_dir(c, "/etc", 0755), 0);
		assert_int_equal(cpio_add_file(c, "/etc/hostname", 0644, "capsem\n", 7), 0);
		assert_int_equal(cpio_add_symlink(c, "/usr/bin/agent", "/init"), 0);
		assert_int_equal(cpio_add_chardev(c, "/dev/console", 0600, 5, 1), 0);
		assert_int_equal(cpio_add_file(c, "init", 0755, "ELF!", 4), 0);
	} else {
		assert_int_equal(cpio_add_file(c, "init", 0755, "ELF!", 4), 0);
		assert_int_equal(cpio_add_chardev(c, "/dev/console", 0600, 5, 1), 0);
		assert_int_equal(cpio_add_symlink(c, "/usr/bin/agent", "/init"), 0);
		assert_int_equal(cpio_add_file(c, "/etc/hostname", 0644, "capsem\n", 7), 0);
		assert_int_equal(cpio_add_dir(c, "/etc", 0755), 0);
	}
}

static void test_cpio_format(void **state)
{
	_cleanup_cpio_ struct cpio *c = cpio_new();
	struct buf b;
	struct rd_entry e[16];

	assert_non_null(c);
	build_sample(c, 0);
	/* parents were added: dev, usr, usr/bin */
	assert_int_equal(cpio_count(c), 8);
	assert_true(cpio_contains(c, "usr/bin"));
	assert_true(cpio_contains(c, "/dev"));
	buf_init(&b, 1 << 20);
	assert_int_equal(cpio_write(c, &b), 0);
	size_t n = parse(buf_head(&b), buf_len(&b), e, ELEMENTSOF(e));
	assert_int_equal(n, 8);
	const char *want[] = { "dev",  "dev/console", "etc",	 "etc/hostname",
			       "init", "usr",	      "usr/bin", "usr/bin/agent" };
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(e[i].name, want[i]);
		assert_int_equal(e[i].ino, i + 1);
		assert_int_equal(e[i].uid, 0);
		assert_int_equal(e[i].gid, 0);
		assert_int_equal(e[i].mtime, 0);
	}
	assert_int_equal(e[0].mode, S_IFDIR | 0755);
	assert_int_equal(e[0].nlink, 2);
	assert_int_equal(e[1].mode, S_IFCHR | 0600);
	assert_int_equal(e[1].rmaj, 5);
	assert_int_equal(e[1].rmin, 1);
	assert_int_equal(e[1].size, 0);
	assert_int_equal(e[3].mode, S_IFREG | 0644);
	assert_int_equal(e[3].size, 7);
	assert_memory_equal(e[3].data, "capsem\n", 7);
	assert_int_equal(e[4].mode, S_IFREG | 0755);
	assert_int_equal(e[4].nlink, 1);
	assert_int_equal(e[7].mode, S_IFLNK | 0777);
	assert_int_equal(e[7].size, 5);
	assert_memory_equal(e[7].data, "/init", 5);
	/* the first header, byte for byte */
	assert_memory_equal(buf_head(&b),
			    "070701"
			    "00000001000041ED000000000000000000000002000000000000000000000000"
			    "00000000000000000000000000000004"
			    "00000000"
			    "dev\0",
			    110 + 4);
	buf_done(&b, 0);
}

static void test_cpio_deterministic(void **state)
{
	_cleanup_cpio_ struct cpio *a = cpio_new();
	_cleanup_cpio_ struct cpio *z = cpio_new();
	struct buf ba, bz;
	build_sample(a, 0);
	build_sample(z, 1);
	buf_init(&ba, 1 << 20);
	buf_init(&bz, 1 << 20);
	assert_int_equal(cpio_write(a, &ba), 0);
	assert_int_equal(cpio_write(z, &bz), 0);
	assert_int_equal(buf_len(&ba), buf_len(&bz));
	assert_memory_equal(buf_head(&ba), buf_head(&bz), buf_len(&ba));
	/* writing twice gives the same bytes again */
	buf_done(&bz, 0);
	buf_init(&bz, 1 << 20);
	assert_int_equal(cpio_write(a, &bz), 0);
	assert_memory_equal(buf_head(&ba), buf_head(&bz), buf_len(&ba));
	buf_done(&ba, 0);
	buf_done(&bz, 0);
}

static void test_cpio_errors(void **state)
{
	_cleanup_cpio_ struct cpio *c = cpio_new();
	struct buf b;

	assert_int_equal(cpio_add_file(c, "", 0644, "x", 1), -EINVAL);
	assert_int_equal(cpio_add_file(c, "/", 0644, "x", 1), -EINVAL);
	assert_int_equal(cpio_add_file(c, "../x", 0644, "x", 1), -EINVAL);
	assert_int_equal(cpio_add_file(c, "a/../x", 0644, "x", 1), -EINVAL);
	assert_int_equal(cpio_add_file(c, "a/./x", 0644, "x", 1), -EINVAL);
	assert_int_equal(cpio_add_file(c, "a//x", 0644, "x", 1), -EINVAL);
	assert_int_equal(cpio_add_file(c, "a/", 0644, "x", 1), -EINVAL);
	assert_int_equal(cpio_add_file(c, "a\nb", 0644, "x", 1), -EINVAL);
	assert_int_equal(cpio_add_file(c, "x", 010644, "x", 1), -EINVAL);
	assert_int_equal(cpio_add_symlink(c, "l", ""), -EINVAL);
	assert_int_equal(cpio_count(c), 0);

	assert_int_equal(cpio_add_file(c, "/bin/sh", 0755, "x", 1), 0);
	assert_int_equal(cpio_add_file(c, "bin/sh", 0755, "x", 1), -EEXIST);
	assert_int_equal(cpio_add_symlink(c, "/bin/sh", "busybox"), -EEXIST);
	assert_int_equal(cpio_add_dir(c, "/bin/sh", 0755), -EEXIST);
	assert_int_equal(cpio_add_file(c, "/bin/sh/x", 0755, "x", 1), -ENOTDIR);
	/* re-adding an (implicit) directory sets its mode */
	assert_int_equal(cpio_add_dir(c, "/bin", 0700), 0);
	assert_int_equal(cpio_count(c), 2);
	/* empty files are fine */
	assert_int_equal(cpio_add_file(c, "/empty", 0600, NULL, 0), 0);

	buf_init(&b, 300); /* too small for the archive (512 bytes) */
	assert_int_equal(cpio_write(c, &b), -ENOBUFS);
	buf_done(&b, 0);

	buf_init(&b, 1 << 16);
	struct rd_entry e[8];
	assert_int_equal(cpio_write(c, &b), 0);
	assert_int_equal(parse(buf_head(&b), buf_len(&b), e, 8), 3);
	assert_string_equal(e[0].name, "bin");
	assert_int_equal(e[0].mode, S_IFDIR | 0700);
	assert_int_equal(e[2].size, 0);
	buf_done(&b, 0);
}

static void test_applets(void **state)
{
	_cleanup_strv_free_ char **v = NULL;
	size_t bad = 0;

	assert_int_equal(
		initramfs_parse_applets("bin/ls\r\nusr/bin/[[\nlinuxrc\n\nsbin/init", 1, &v, &bad),
		0);
	assert_int_equal(strv_length(v), 4);
	assert_string_equal(v[0], "bin/ls");
	assert_string_equal(v[1], "usr/bin/[[");
	assert_string_equal(v[2], "linuxrc");
	assert_string_equal(v[3], "sbin/init");
	strv_free(v);
	v = NULL;

	assert_int_equal(initramfs_parse_applets("ls\n[\n", 0, &v, &bad), 0);
	assert_string_equal(v[0], "bin/ls");
	assert_string_equal(v[1], "bin/[");
	strv_free(v);
	v = NULL;

	const char *bads[] = { "bin/ls\n../etc/passwd\n", "bin/ls\n/abs\n",   "bin/ls\nbin/a b\n",
			       "bin/ls\nbin/\n",	  "bin/ls\nbin//x\n", "bin/ls\nbin/./x\n" };
	for (size_t i = 0; i < ELEMENTSOF(bads); i++) {
		bad = 0;
		assert_int_equal(initramfs_parse_applets(bads[i], 1, &v, &bad), -EBADMSG);
		assert_int_equal(bad, 2);
		assert_null(v);
	}
	_cleanup_free_ char *many = malloc((INITRAMFS_MAX_APPLETS + 1) * 3 + 1);
	size_t o = 0;
	for (size_t i = 0; i <= INITRAMFS_MAX_APPLETS; i++) {
		memcpy(many + o, "ab\n", 3);
		o += 3;
	}
	many[o] = 0;
	assert_int_equal(initramfs_parse_applets(many, 0, &v, NULL), -E2BIG);
}

static void test_layout(void **state)
{
	_cleanup_cpio_ struct cpio *c = cpio_new();
	char *applets[] = { "bin/sh", "bin/busybox", "sbin/reboot", "usr/bin/env", "init", NULL };
	struct initramfs_inputs in = { .guest = "GUEST",
				       .guest_len = 5,
				       .busybox = "BB",
				       .busybox_len = 2,
				       .applets = applets };
	struct buf b;
	struct rd_entry e[64];

	assert_int_equal(initramfs_layout(c, &in), 0);
	buf_init(&b, 1 << 20);
	assert_int_equal(cpio_write(c, &b), 0);
	size_t n = parse(buf_head(&b), buf_len(&b), e, ELEMENTSOF(e));
	int seen = 0;
	for (size_t i = 0; i < n; i++) {
		const struct rd_entry *x = &e[i];
		if (streq(x->name, "init")) {
			assert_int_equal(x->mode, S_IFREG | 0755);
			assert_memory_equal(x->data, "GUEST", 5); /* ours, not the applet */
			seen |= 1;
		} else if (streq(x->name, "usr/bin/capsem-agent")) {
			assert_int_equal(x->mode, S_IFLNK | 0777);
			assert_memory_equal(x->data, "/init", 5);
			seen |= 2;
		} else if (streq(x->name, "bin/busybox")) {
			assert_int_equal(x->mode, S_IFREG | 0755);
			assert_memory_equal(x->data, "BB", 2);
			seen |= 4;
		} else if (streq(x->name, "sbin/reboot")) {
			assert_memory_equal(x->data, "/bin/busybox", 12);
			seen |= 8;
		} else if (streq(x->name, "dev/null")) {
			assert_int_equal(x->mode, S_IFCHR | 0666);
			assert_int_equal(x->rmaj, 1);
			assert_int_equal(x->rmin, 3);
			seen |= 16;
		} else if (streq(x->name, "tmp")) {
			assert_int_equal(x->mode, S_IFDIR | 01777);
			seen |= 32;
		} else if (streq(x->name, "etc/hostname")) {
			assert_memory_equal(x->data, "capsem\n", 7);
			seen |= 64;
		} else if (streq(x->name, "etc/passwd")) {
			assert_memory_equal(x->data, "root:x:0:0:", 11);
			seen |= 128;
		}
	}
	assert_int_equal(seen, 255);
	buf_done(&b, 0);
}

/* A minimal ELF image: header + program headers, with or without PT_INTERP. */
static void make_elf(uint8_t *img, size_t n, int interp, uint16_t machine)
{
	Elf64_Ehdr eh = { 0 };
	Elf64_Phdr ph[2] = { { 0 } };
	memset(img, 0, n);
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_type = ET_EXEC;
	eh.e_machine = machine;
	eh.e_phoff = sizeof(eh);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = 2;
	ph[0].p_type = PT_LOAD;
	ph[1].p_type = interp ? PT_INTERP : PT_NOTE;
	memcpy(img, &eh, sizeof(eh));
	memcpy(img + sizeof(eh), ph, sizeof(ph));
}

static void test_static_elf(void **state)
{
	uint8_t img[512];
	const char *why = NULL;

	make_elf(img, sizeof(img), 0, EM_X86_64);
	assert_int_equal(initramfs_check_static_elf(img, sizeof(img), &why), 0);
	make_elf(img, sizeof(img), 1, EM_X86_64);
	assert_int_equal(initramfs_check_static_elf(img, sizeof(img), &why), -ENOEXEC);
	assert_non_null(strstr(why, "dynamically linked"));
	make_elf(img, sizeof(img), 0, EM_AARCH64);
	assert_int_equal(initramfs_check_static_elf(img, sizeof(img), &why), -ENOEXEC);
	assert_non_null(strstr(why, "x86-64"));
	/* program headers cut off */
	make_elf(img, sizeof(img), 0, EM_X86_64);
	assert_int_equal(initramfs_check_static_elf(img, sizeof(Elf64_Ehdr) + 10, &why), -ENOEXEC);
	/* phoff pointing past the end */
	Elf64_Ehdr eh;
	memcpy(&eh, img, sizeof(eh));
	eh.e_phoff = UINT64_MAX - 8;
	memcpy(img, &eh, sizeof(eh));
	assert_int_equal(initramfs_check_static_elf(img, sizeof(img), &why), -ENOEXEC);
	assert_int_equal(initramfs_check_static_elf("#!/bin/sh\n", 10, &why), -ENOEXEC);
	assert_string_equal(why, "not an ELF file");
}

/* An ELF image whose PT_INTERP names interp (stored at offset 256). */
static void make_elf_interp(uint8_t *img, size_t n, const char *interp, size_t filesz)
{
	Elf64_Phdr ph;
	make_elf(img, n, 1, EM_X86_64);
	memcpy(&ph, img + sizeof(Elf64_Ehdr) + sizeof(ph), sizeof(ph));
	ph.p_offset = 256;
	ph.p_filesz = filesz;
	memcpy(img + sizeof(Elf64_Ehdr) + sizeof(ph), &ph, sizeof(ph));
	memcpy(img + 256, interp, strlen(interp) + 1);
}

static void test_elf_interp(void **state)
{
	static const char ld[] = "/lib64/ld-linux-x86-64.so.2";
	uint8_t img[512];
	char out[64];

	make_elf_interp(img, sizeof(img), ld, sizeof(ld));
	assert_int_equal(initramfs_elf_interp(img, sizeof(img), out, sizeof(out)), 0);
	assert_string_equal(out, ld);
	/* too small an output buffer, a name without its NUL, one running past the file */
	assert_int_equal(initramfs_elf_interp(img, sizeof(img), out, sizeof(ld) - 1), -ENOEXEC);
	make_elf_interp(img, sizeof(img), ld, sizeof(ld) - 1);
	assert_int_equal(initramfs_elf_interp(img, sizeof(img), out, sizeof(out)), -ENOEXEC);
	make_elf_interp(img, sizeof(img), ld, 300);
	assert_int_equal(initramfs_elf_interp(img, sizeof(img), out, sizeof(out)), -ENOEXEC);
	/* relative or unsafe names */
	make_elf_interp(img, sizeof(img), "lib/ld.so", 10);
	assert_int_equal(initramfs_elf_interp(img, sizeof(img), out, sizeof(out)), -ENOEXEC);
	make_elf_interp(img, sizeof(img), "/lib/../ld.so", 14);
	assert_int_equal(initramfs_elf_interp(img, sizeof(img), out, sizeof(out)), -ENOEXEC);
	/* static: no interpreter */
	make_elf(img, sizeof(img), 0, EM_X86_64);
	assert_int_equal(initramfs_elf_interp(img, sizeof(img), out, sizeof(out)), -ENOENT);
	assert_int_equal(initramfs_elf_interp("#!/bin/sh\n", 10, out, sizeof(out)), -ENOEXEC);
}

static void test_ldlist(void **state)
{
	/* what glibc's ld.so --list prints for Debian's nft */
	static const char text[] =
		"\tlinux-vdso.so.1 (0x00007ffd1b3f5000)\n"
		"\tlibnftables.so.1 => /lib/x86_64-linux-gnu/libnftables.so.1 "
		"(0x00007f07a6287000)\n"
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f07a606b000)\n"
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f07a6381000)\n"
		"\tlibmd.so.0 => /lib/x86_64-linux-gnu/libmd.so.0 (0x00007f07a5f31000)\n"
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f07a606b000)\n";
	_cleanup_strv_free_ char **v = NULL;
	assert_int_equal(initramfs_parse_ldlist(text, &v), 0);
	assert_int_equal(strv_length(v), 4);
	assert_string_equal(v[0], "/lib/x86_64-linux-gnu/libnftables.so.1");
	assert_string_equal(v[1], "/lib/x86_64-linux-gnu/libc.so.6");
	assert_string_equal(v[2], "/lib64/ld-linux-x86-64.so.2");
	assert_string_equal(v[3], "/lib/x86_64-linux-gnu/libmd.so.0");

	static const char *const bad[] = {
		"\tlibx.so => not found\n",
		"\tlibx.so => /lib/../etc/shadow (0x1)\n",
		"\tlibx.so => lib/relative.so (0x1)\n",
		"\tlibx.so => /lib/x y.so (0x1)\n",
		"\tstatically linked\n",
		"\tlibx.so => /lib/libx.so\n",
	};
	const int want[] = { -ENOENT, -EBADMSG, -EBADMSG, -EBADMSG, -EBADMSG, -EBADMSG };
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		char **w = NULL;
		assert_int_equal(initramfs_parse_ldlist(bad[i], &w), want[i]);
		assert_null(w);
	}
	char **w = NULL;
	assert_int_equal(initramfs_parse_ldlist("", &w), 0);
	assert_null(w);
}

static void test_layout_extra_files(void **state)
{
	_cleanup_cpio_ struct cpio *c = cpio_new();
	const struct initramfs_file extra[] = {
		{ "/usr/sbin/nft", 0755, "NFT", 3 },
		{ "/lib/x86_64-linux-gnu/libc.so.6", 0644, "LIBC", 4 },
		{ "/lib64/ld-linux-x86-64.so.2", 0755, "LD", 2 },
	};
	struct initramfs_inputs in = { .guest = "G",
				       .guest_len = 1,
				       .busybox = "B",
				       .busybox_len = 1,
				       .extra = extra,
				       .n_extra = ELEMENTSOF(extra) };
	struct buf b;
	struct rd_entry e[64];
	int seen = 0;

	assert_int_equal(initramfs_layout(c, &in), 0);
	buf_init(&b, 1 << 20);
	assert_int_equal(cpio_write(c, &b), 0);
	size_t n = parse(buf_head(&b), buf_len(&b), e, ELEMENTSOF(e));
	for (size_t i = 0; i < n; i++) {
		if (streq(e[i].name, "usr/sbin/nft")) {
			assert_int_equal(e[i].mode, S_IFREG | 0755);
			assert_memory_equal(e[i].data, "NFT", 3);
			seen |= 1;
		} else if (streq(e[i].name, "lib/x86_64-linux-gnu/libc.so.6")) {
			assert_int_equal(e[i].mode, S_IFREG | 0644);
			seen |= 2;
		} else if (streq(e[i].name, "lib64")) {
			assert_int_equal(e[i].mode, S_IFDIR | 0755);
			seen |= 4;
		}
	}
	assert_int_equal(seen, 7);
	buf_done(&b, 0);
}

static void test_gzip(void **state)
{
	struct buf in, a, b;
	buf_init(&in, 1 << 20);
	for (int i = 0; i < 5000; i++) {
		char line[32];
		int n = snprintf(line, sizeof(line), "line %d\n", i);
		assert_int_equal(buf_append(&in, line, (size_t)n), 0);
	}
	buf_init(&a, 1 << 20);
	buf_init(&b, 1 << 20);
	assert_int_equal(initramfs_gzip(buf_head(&in), buf_len(&in), &a), 0);
	assert_int_equal(initramfs_gzip(buf_head(&in), buf_len(&in), &b), 0);
	assert_int_equal(buf_len(&a), buf_len(&b));
	assert_memory_equal(buf_head(&a), buf_head(&b), buf_len(&a));
	const uint8_t *g = buf_head(&a);
	assert_int_equal(g[0], 0x1f);
	assert_int_equal(g[1], 0x8b);
	assert_int_equal(g[4] | g[5] | g[6] | g[7], 0); /* mtime 0 */
	assert_true(buf_len(&a) < buf_len(&in));

	/* round trip */
	_cleanup_free_ uint8_t *out = malloc(buf_len(&in));
	z_stream zs = { 0 };
	assert_int_equal(inflateInit2(&zs, 15 + 16), Z_OK);
	zs.next_in = (Bytef *)(uintptr_t)buf_head(&a);
	zs.avail_in = (uInt)buf_len(&a);
	zs.next_out = out;
	zs.avail_out = (uInt)buf_len(&in);
	assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
	assert_int_equal(zs.total_out, buf_len(&in));
	inflateEnd(&zs);
	assert_memory_equal(out, buf_head(&in), buf_len(&in));

	struct buf tiny;
	buf_init(&tiny, 16);
	assert_int_equal(initramfs_gzip(buf_head(&in), buf_len(&in), &tiny), -ENOBUFS);
	buf_done(&tiny, 0);
	buf_done(&in, 0);
	buf_done(&a, 0);
	buf_done(&b, 0);
}

static void test_compress_names(void **state)
{
	enum initramfs_compress c = INITRAMFS_COMPRESS_NONE;
	assert_int_equal(initramfs_compress_from_name("gzip", &c), 0);
	assert_int_equal(c, INITRAMFS_COMPRESS_GZIP);
	assert_string_equal(initramfs_compress_name(c), "gzip");
	assert_int_equal(initramfs_compress_from_name("none", &c), 0);
	assert_string_equal(initramfs_compress_name(c), "none");
	assert_int_equal(initramfs_compress_from_name("xz", &c), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpio_format),
		cmocka_unit_test(test_cpio_deterministic),
		cmocka_unit_test(test_cpio_errors),
		cmocka_unit_test(test_applets),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_static_elf),
		cmocka_unit_test(test_gzip),
		cmocka_unit_test(test_compress_names),
		cmocka_unit_test(test_elf_interp),
		cmocka_unit_test(test_ldlist),
		cmocka_unit_test(test_layout_extra_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
