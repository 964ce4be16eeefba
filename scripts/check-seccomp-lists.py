#!/usr/bin/python3
"""check-seccomp-lists.py - seccomp filters stack and are inherited: a syscall reaches the kernel
only when every filter above the process lets it through. capsemd's allow-list
(src/daemon/dseccomp.c: capsem-vm's list, src/shared/vmsyscalls.c, the same array, and
`capsemd_extra`) is inherited by everything capsemd starts, so it must hold every syscall that
the filters installed beneath it allow: capsem-vm's own helpers' (src/vm/vmseccomp.c:
`ws9p_allow`, the workspace server's, and `keyd_allow`, the key broker's), mkfs.ext4's and
tar's (`mkfs_allow`, `tar_extra`, dseccomp.c), capsem-gateway's (`gw_allow`,
src/webgw/wgconfine.c) and QEMU 7.2's virtiofsd (its own list, below). A syscall added beneath
and forgotten in capsemd's list would be answered ENOSYS under the daemon only.

Also: the channel thread's list (`chan_allow`, stacked on capsem-vm's) is inside
capsem-vm's; no name twice in capsemd's list. Reads the C sources (the arrays of
SYS_* names); run by `meson test` (make check). Usage: check-seccomp-lists.py SRCDIR
"""
import re
import sys


def array(path, name):
    """The SYS_* names of `[static] const int NAME[] = { ... };` in path."""
    text = open(path).read()
    m = re.search(r"(?:static )?const int " + re.escape(name) + r"\[\]\s*=\s*\{(.*?)\};", text, re.S)
    if not m:
        sys.exit(f"{path}: no array {name}")
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    # the groups several lists share: #define SC_NAME SYS_a, SYS_b, ...
    groups = dict(re.findall(r"^#define (SC_\w+) (.*)$", text, re.M))
    body = re.sub(r"\bSC_\w+\b", lambda g: groups.get(g.group(0), g.group(0)), body)
    names = re.findall(r"\bSYS_(\w+)", body)
    if not names:
        sys.exit(f"{path}: {name} is empty")
    return names


# QEMU 7.2's C virtiofsd (Debian's /usr/lib/qemu/virtiofsd) installs this list itself
# (tools/virtiofsd/passthrough_seccomp.c), beneath capsemd's; it answers userfaultfd ENOSYS,
# which capsemd's filter must not turn into a kill
VIRTIOFSD = """brk capget capset clock_gettime clone clone3 close copy_file_range dup eventfd2 exit
exit_group fallocate fchdir fchmod fchmodat fchownat fcntl fdatasync fgetxattr flistxattr flock
fremovexattr fsetxattr fstat fstatfs fsync ftruncate futex getdents getdents64 getegid geteuid
getpid gettid gettimeofday getxattr linkat listxattr lseek madvise mkdirat mknodat mmap mprotect
mremap munmap newfstatat statx open openat ppoll prctl preadv pread64 pwritev pwrite64 read
readlinkat recvmsg renameat renameat2 removexattr restart_syscall rt_sigaction rt_sigprocmask
rt_sigreturn sched_getattr sched_setattr sendmsg setresgid setresuid set_robust_list setxattr
symlinkat time tgkill unlinkat unshare utimensat write writev umask""".split()


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "."
    d = f"{src}/src/daemon/dseccomp.c"
    # capsemd's list: capsem-vm's (the same array) and its extras
    vm_list = array(f"{src}/src/shared/vmsyscalls.c", "vm_syscalls")
    capsemd_list = vm_list + array(d, "capsemd_extra")
    capsemd = set(capsemd_list)
    beneath = {
        "the workspace server (src/vm/vmseccomp.c ws9p_allow)":
            array(f"{src}/src/vm/vmseccomp.c", "ws9p_allow"),
        "the key broker (src/vm/vmseccomp.c keyd_allow)":
            array(f"{src}/src/vm/vmseccomp.c", "keyd_allow"),
        "mkfs.ext4 (src/daemon/dseccomp.c mkfs_allow)": array(d, "mkfs_allow"),
        "tar (src/daemon/dseccomp.c mkfs_allow and tar_extra)":
            array(d, "mkfs_allow") + array(d, "tar_extra"),
        "capsem-gateway (src/webgw/wgconfine.c gw_allow)":
            array(f"{src}/src/webgw/wgconfine.c", "gw_allow"),
        "virtiofsd (QEMU 7.2's own list)": VIRTIOFSD,
    }
    bad = 0
    for who, names in beneath.items():
        missing = sorted(set(names) - capsemd)
        if missing:
            bad = 1
            print(f"capsemd's allow-list lacks what {who} allows: {' '.join(missing)}")
    vm = f"{src}/src/vm/vmseccomp.c"
    outside = sorted(set(array(vm, "chan_allow")) - set(vm_list))
    if outside:
        bad = 1
        print(f"the channel thread's list (chan_allow) allows what capsem-vm's does not: "
              f"{' '.join(outside)}")
    if "userfaultfd" not in array(d, "capsemd_not_killed"):
        bad = 1
        print("capsemd's filter kills userfaultfd, which virtiofsd probes (capsemd_not_killed)")
    dup = sorted({n for n in capsemd_list if capsemd_list.count(n) > 1})
    if dup:
        bad = 1
        print(f"capsemd's allow-list names twice: {' '.join(dup)}")
    if not bad:
        print(f"ok: capsemd allows {len(capsemd)} syscalls, a superset of the "
              f"{len(beneath)} filters beneath it")
    return bad


if __name__ == "__main__":
    sys.exit(main())
