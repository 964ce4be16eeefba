// capsem-ctr-init - runs inside the Capsem guest, one invocation per container process: it
// prepares a container's root file system (shared into the VM by containerd-shim-capsem-v2) and
// turns itself into the OCI process: chroot, cwd, groups, gid, uid, then execve. The exec
// protocol (docs/PROTOCOL.md §4) carries argv, env, cwd and a tty but no credentials: this helper
// is where the OCI user is honoured. Static (CGO_ENABLED=0): it needs nothing from the guest.
//
//	capsem-ctr-init run ROOTFS UID GID GROUPS CWD -- ARGV...   (GROUPS: comma list or "-")
//	capsem-ctr-init cleanup ROOTFS      undo the guest-side mounts before the host unmounts it
//	(ROOTFS is <pod>/c/<key>; the container's volumes are listed in <pod>/m/<key>.json; the pod
//	directory is the VM's workspace, /root/workspace)
//	capsem-ctr-init killall ROOTFS      SIGKILL every process whose root is the container's
//	capsem-ctr-init freeze PID 1|0      freeze or thaw the cgroup the agent made for PID
//	capsem-ctr-init stats PID           that cgroup's counters as JSON
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "capsem-ctr-init: "+format+"\n", a...)
	os.Exit(127)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// setup mounts /proc, /dev and /sys into the container's root (once), gives it the guest's
// resolver and the installation CA in its trust store: the egress proxy re-signs every HTTPS
// connection with that CA, so without it a container's TLS fails.
func setup(root string) {
	// one at a time per container: the init process and an exec started right after it
	// (ctr run -d, then ctr tasks exec) would both find /dev unmounted and mount it twice, and
	// a volume mounted twice would show two processes two different directories
	lock := lockSetup(filepath.Base(root))
	defer syscall.Close(lock)
	for _, d := range []string{"proc", "dev", "sys", "tmp", "etc"} {
		_ = os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	if !exists(filepath.Join(root, "proc/self")) {
		if err := syscall.Mount("proc", filepath.Join(root, "proc"), "proc", 0, ""); err != nil {
			die("mount proc: %v", err)
		}
	}
	if !exists(filepath.Join(root, "dev/null")) {
		if err := syscall.Mount("/dev", filepath.Join(root, "dev"), "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			die("bind /dev: %v", err)
		}
	}
	if !exists(filepath.Join(root, "sys/kernel")) {
		_ = syscall.Mount("sysfs", filepath.Join(root, "sys"), "sysfs",
			syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "")
	}
	mountVolumes(root)
	for _, f := range []string{"etc/resolv.conf", "etc/hosts"} {
		dst := filepath.Join(root, f)
		if st, err := os.Stat(dst); err == nil && st.Size() > 0 {
			continue
		}
		if b, err := os.ReadFile("/" + f); err == nil {
			_ = os.WriteFile(dst, b, 0o644)
		}
	}
	ca, err := os.ReadFile("/etc/capsem/ca.pem")
	if err != nil || !bytes.Contains(ca, []byte("BEGIN CERTIFICATE")) {
		return
	}
	ca = bytes.TrimSpace(ca)
	bundles := []string{"etc/ssl/certs/ca-certificates.crt", "etc/pki/tls/certs/ca-bundle.crt",
		"etc/ssl/cert.pem"}
	found := false
	for _, b := range bundles {
		p := filepath.Join(root, b)
		old, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		found = true
		if bytes.Contains(old, ca) {
			continue
		}
		if len(old) > 0 && old[len(old)-1] != '\n' {
			old = append(old, '\n')
		}
		_ = os.WriteFile(p, append(append(old, ca...), '\n'), 0o644)
	}
	if !found {
		p := filepath.Join(root, bundles[0])
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		_ = os.WriteFile(p, append(ca, '\n'), 0o644)
	}
	d := filepath.Join(root, "usr/local/share/ca-certificates")
	if os.MkdirAll(d, 0o755) == nil {
		_ = os.WriteFile(filepath.Join(d, "capsem-ca.crt"), append(ca, '\n'), 0o644)
	}
}

// lockSetup takes an exclusive lock on /run/capsem-ctr/<key>.lock (the guest's /run, not the
// container's); the descriptor holds it until closed (exec keeps nothing: O_CLOEXEC).
func lockSetup(key string) int {
	_ = os.MkdirAll("/run/capsem-ctr", 0o700)
	fd, err := syscall.Open(filepath.Join("/run/capsem-ctr", key+".lock"),
		syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		die("lock: %v", err)
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
		die("lock: %v", err)
	}
	return fd
}

// volume is an entry of <pod>/m/<container>.json, written by the shim (volumes.go).
type volume struct {
	Source string   `json:"source"`
	Dest   string   `json:"dest"`
	Type   string   `json:"type"`
	File   bool     `json:"file"`
	RO     bool     `json:"ro"`
	Opts   []string `json:"options"`
}

// volumes reads the container's mount list: ROOT is <pod>/c/<key>, the list <pod>/m/<key>.json.
func volumes(root string) []volume {
	pod := filepath.Dir(filepath.Dir(root))
	b, err := os.ReadFile(filepath.Join(pod, "m", filepath.Base(root)+".json"))
	if err != nil {
		return nil
	}
	var v []volume
	if json.Unmarshal(b, &v) != nil {
		die("bad mount list")
	}
	return v
}

// mountVolumes mounts the container's volumes once per VM (a marker in the guest's /run).
func mountVolumes(root string) {
	marker := filepath.Join("/run/capsem-ctr", filepath.Base(root)+".mounted")
	if exists(marker) {
		return
	}
	for _, v := range volumes(root) {
		dst := filepath.Join(root, v.Dest)
		if v.File {
			_ = os.MkdirAll(filepath.Dir(dst), 0o755)
			if !exists(dst) {
				_ = os.WriteFile(dst, nil, 0o644)
			}
		} else {
			_ = os.MkdirAll(dst, 0o755)
		}
		switch v.Type {
		case "bind":
			if err := syscall.Mount(v.Source, dst, "", syscall.MS_BIND, ""); err != nil {
				die("bind %s: %v", v.Dest, err)
			}
			if v.RO {
				_ = syscall.Mount("", dst, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, "")
			}
		case "tmpfs":
			var flags uintptr = syscall.MS_NOSUID | syscall.MS_NODEV
			if v.RO {
				flags |= syscall.MS_RDONLY
			}
			if err := syscall.Mount("tmpfs", dst, "tmpfs", flags, strings.Join(v.Opts, ",")); err != nil {
				die("tmpfs %s: %v", v.Dest, err)
			}
		}
	}
	_ = os.MkdirAll(filepath.Dir(marker), 0o700)
	_ = os.WriteFile(marker, nil, 0o600)
}

// cleanup undoes the guest's mounts in and of the container's root. Over virtio-fs the root and
// each bound volume are submounts of the workspace in the guest (virtiofsd announces the host's
// mounts below the shared folder): unmounting them makes the guest forget their inodes, and so
// virtiofsd close the descriptor it holds for each, which would otherwise keep the container's
// unmounted root alive on the host and count against virtiofsd's open-file limit until the VM
// ends. Over 9p they are plain directories and those unmounts fail harmlessly.
func cleanup(root string) {
	v := volumes(root)
	for i := len(v) - 1; i >= 0; i-- {
		_ = syscall.Unmount(filepath.Join(root, v[i].Dest), syscall.MNT_DETACH)
	}
	_ = os.Remove(filepath.Join("/run/capsem-ctr", filepath.Base(root)+".mounted"))
	_ = os.Remove(filepath.Join("/run/capsem-ctr", filepath.Base(root)+".lock"))
	for _, m := range []string{"sys", "dev", "proc"} {
		_ = syscall.Unmount(filepath.Join(root, m), syscall.MNT_DETACH)
	}
	for _, x := range v {
		if x.Type == "bind" && !x.File {
			_ = syscall.Unmount(x.Source, syscall.MNT_DETACH)
		}
	}
	_ = syscall.Unmount(root, syscall.MNT_DETACH)
}

// killall SIGKILLs every process whose root is the container's (what runc gets from the end of
// the container's PID namespace): a container's life ends with its init process, background
// processes and execs included. A few rounds, for processes forked meanwhile.
func killall(root string) {
	self := strconv.Itoa(os.Getpid())
	for round := 0; round < 10; round++ {
		found := 0
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || e.Name() == self {
				continue
			}
			r, err := os.Readlink("/proc/" + e.Name() + "/root")
			if err != nil || (r != root && !strings.HasPrefix(r, root+"/")) {
				continue
			}
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				found++
			}
		}
		if found == 0 {
			return
		}
	}
}

// lookPath resolves argv[0] with the container's PATH, inside the new root.
func lookPath(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		die("bad number %q", s)
	}
	return n
}

func run(args []string) {
	if len(args) < 7 || args[5] != "--" {
		die("usage: run ROOTFS UID GID GROUPS CWD -- ARGV...")
	}
	root, uid, gid, groups, cwd, argv := args[0], atoi(args[1]), atoi(args[2]), args[3], args[4], args[6:]
	setup(root)
	if err := syscall.Chroot(root); err != nil {
		die("chroot %s: %v", root, err)
	}
	if cwd == "" {
		cwd = "/"
	}
	_ = os.MkdirAll(cwd, 0o755)
	if err := syscall.Chdir(cwd); err != nil {
		die("chdir %s: %v", cwd, err)
	}
	gids := []int{}
	if groups != "-" && groups != "" {
		for _, g := range strings.Split(groups, ",") {
			gids = append(gids, atoi(g))
		}
	}
	if err := syscall.Setgroups(gids); err != nil {
		die("setgroups: %v", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		die("setgid %d: %v", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		die("setuid %d: %v", uid, err)
	}
	if os.Getenv("HOME") == "" || (uid != 0 && os.Getenv("HOME") == "/root") {
		os.Setenv("HOME", "/")
	}
	bin := lookPath(argv[0])
	if bin == "" {
		fmt.Fprintf(os.Stderr, "%s: not found\n", argv[0])
		os.Exit(127)
	}
	err := syscall.Exec(bin, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "%s: %v\n", argv[0], err)
	if err == syscall.EACCES {
		os.Exit(126)
	}
	os.Exit(127)
}

// cgroupOf is the directory of the cgroup (v2) that PID is in.
func cgroupOf(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		die("%v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "0::") {
			return filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(l, "0::"))
		}
	}
	die("no cgroup v2 for pid %s", pid)
	return ""
}

func readKV(p string) map[string]uint64 {
	m := map[string]uint64{}
	b, _ := os.ReadFile(p)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 {
			if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				m[f[0]] = v
			}
		}
	}
	return m
}

func readU(p string) uint64 {
	b, _ := os.ReadFile(p)
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

func main() {
	if len(os.Args) < 3 {
		die("usage: run|cleanup|freeze|stats ...")
	}
	switch os.Args[1] {
	case "run":
		run(os.Args[2:])
	case "cleanup":
		cleanup(os.Args[2])
	case "killall":
		killall(filepath.Clean(os.Args[2]))
	case "freeze":
		if len(os.Args) != 4 {
			die("usage: freeze PID 1|0")
		}
		if err := os.WriteFile(filepath.Join(cgroupOf(os.Args[2]), "cgroup.freeze"),
			[]byte(os.Args[3]), 0); err != nil {
			die("freeze: %v", err)
		}
	case "stats":
		cg := cgroupOf(os.Args[2])
		cpu := readKV(filepath.Join(cg, "cpu.stat"))
		mem := readKV(filepath.Join(cg, "memory.stat"))
		out := map[string]interface{}{
			"cgroup":         cg,
			"cpu":            cpu,
			"memory_current": readU(filepath.Join(cg, "memory.current")),
			"memory_max":     strings.TrimSpace(string(must(os.ReadFile(filepath.Join(cg, "memory.max"))))),
			"memory_stat":    mem,
			"pids_current":   readU(filepath.Join(cg, "pids.current")),
		}
		_ = json.NewEncoder(os.Stdout).Encode(out)
	default:
		die("unknown command %q", os.Args[1])
	}
}

func must(b []byte, _ error) []byte { return b }
