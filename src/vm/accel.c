/* accel.c - accelerator selection for capsem-vm. Reads /proc/cpuinfo and opens /dev/kvm; the
 * decision never trusts the mere existence of /dev/kvm. Main thread. */
#include "accel.h"

#include <fcntl.h>

#include "fdutil.h"
#include "macro.h"

int accel_parse(const char *s, enum vm_accel *ret)
{
	if (streq(s, "auto"))
		*ret = VM_ACCEL_AUTO;
	else if (streq(s, "kvm"))
		*ret = VM_ACCEL_KVM;
	else if (streq(s, "tcg"))
		*ret = VM_ACCEL_TCG;
	else
		return -EINVAL;
	return 0;
}

const char *accel_name(enum vm_accel a)
{
	return a == VM_ACCEL_KVM ? "kvm" : a == VM_ACCEL_TCG ? "tcg" : "auto";
}

static int word_in(const char *line, size_t n, const char *w)
{
	size_t wl = strlen(w);
	for (size_t i = 0; i + wl <= n; i++) {
		if (memcmp(line + i, w, wl) != 0)
			continue;
		int before = i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t';
		int after = i + wl == n || line[i + wl] == ' ' || line[i + wl] == '\t' ||
			    line[i + wl] == '\n';
		if (before && after)
			return 1;
	}
	return 0;
}

int accel_cpuinfo_has_virt(const char *cpuinfo)
{
	const char *p = cpuinfo;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		if (n >= 5 && memcmp(p, "flags", 5) == 0) {
			const char *colon = memchr(p, ':', n);
			if (colon) {
				size_t rest = n - (size_t)(colon + 1 - p);
				if (word_in(colon + 1, rest, "vmx") ||
				    word_in(colon + 1, rest, "svm"))
					return 1;
			}
			return 0; /* every CPU lists the same flags: the first line decides */
		}
		p = nl ? nl + 1 : NULL;
	}
	return 0;
}

int accel_resolve(enum vm_accel want, enum vm_accel *ret, const char **ret_why)
{
	_cleanup_free_ char *cpuinfo = NULL;
	const char *why = NULL;

	if (want == VM_ACCEL_TCG) {
		*ret = VM_ACCEL_TCG;
		return 0;
	}
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		why = errno == ENOENT ? "/dev/kvm does not exist" : "/dev/kvm cannot be opened";
	safe_close(fd);
	if (!why && (read_file_small("/proc/cpuinfo", 16u << 20, &cpuinfo, NULL) < 0 ||
		     !accel_cpuinfo_has_virt(cpuinfo)))
		why = "the CPU exposes no vmx/svm flag (nested or paravirtual KVM cannot run a "
		      "normal guest)";
	if (!why) {
		*ret = VM_ACCEL_KVM;
		return 0;
	}
	*ret_why = why;
	if (want == VM_ACCEL_KVM)
		return -ENODEV;
	*ret = VM_ACCEL_TCG;
	return 0;
}
