// volumes.go - the OCI spec's extra mounts (ctr --mount, Kubernetes volumes, the CRI's
// /etc/hosts and resolv.conf): bind mounts are bound on the host into the pod directory
// (<pod>/m/<key>/<n>, read-only when the spec says ro: the host enforces it, whatever the
// guest does), tmpfs mounts are made in the guest; capsem-ctr-init mounts them at their
// destinations inside the container's root from the list in <pod>/m/<key>.json (key: the
// container's name in the pod directory, service.go rootKey). /proc,
// /dev and /sys and what is beneath them are the helper's own (the guest's), so the spec's
// entries there are skipped; other types are refused.

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// guestMount is one entry of <pod>/m/<key>.json (read by capsem-ctr-init).
type guestMount struct {
	Source string   `json:"source"` // guest path (a bind) or "" (tmpfs)
	Dest   string   `json:"dest"`
	Type   string   `json:"type"` // bind or tmpfs
	File   bool     `json:"file"` // a bind of a single file
	RO     bool     `json:"ro"`
	Opts   []string `json:"options,omitempty"`
}

func ownedByHelper(dest string) bool {
	for _, p := range []string{"/proc", "/dev", "/sys"} {
		if dest == p || strings.HasPrefix(dest, p+"/") {
			return true
		}
	}
	return false
}

func hasOpt(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// prepareMounts binds the spec's bind sources into the pod directory and writes the list for
// the helper (the container's key: id below). A read-only one is bound and made read-only in
// stage (<pod>.stage, outside the pod directory) first and bound into the pod directory from
// there: a remount's flags do not propagate, so a bind made in the shared pod directory and
// remounted read-only there would stay writable in virtiofsd's mount namespace (a slave of
// ours), whereas a bind of a read-only mount is read-only, and so is each copy propagated. On
// failure everything it bound is undone.
func prepareMounts(pod, id, stage string, mounts []specs.Mount) (err error) {
	dir := filepath.Join(pod, "m", id)
	var list []guestMount
	defer func() {
		if err != nil {
			unmountVolumes(pod, id)
		}
	}()
	for i, m := range mounts {
		if !filepath.IsAbs(m.Destination) || ownedByHelper(filepath.Clean(m.Destination)) {
			continue
		}
		dest := filepath.Clean(m.Destination)
		bind := m.Type == "bind" || hasOpt(m.Options, "bind") || hasOpt(m.Options, "rbind")
		ro := hasOpt(m.Options, "ro")
		switch {
		case bind:
			st, err := os.Stat(m.Source)
			if err != nil {
				return fmt.Errorf("mount %s: %w", m.Destination, err)
			}
			if err := os.MkdirAll(dir, 0o711); err != nil {
				return err
			}
			target := filepath.Join(dir, strconv.Itoa(i))
			if err := mountPoint(target, st.IsDir()); err != nil {
				return err
			}
			flags := uintptr(unix.MS_BIND)
			if hasOpt(m.Options, "rbind") {
				flags |= unix.MS_REC
			}
			src := m.Source
			if ro {
				if src, err = readOnlyBind(m.Source, filepath.Join(stage, id+"."+strconv.Itoa(i)),
					st.IsDir(), flags); err != nil {
					return err
				}
			}
			err = unix.Mount(src, target, "", flags, "")
			if ro {
				_ = unix.Unmount(src, unix.MNT_DETACH)
				_ = os.Remove(src)
			}
			if err != nil {
				return fmt.Errorf("bind %s: %w", m.Source, err)
			}
			list = append(list, guestMount{Source: guestPod + "/m/" + id + "/" + strconv.Itoa(i),
				Dest: dest, Type: "bind", File: !st.IsDir(), RO: ro})
		case m.Type == "tmpfs":
			var opts []string
			for _, o := range m.Options {
				if strings.HasPrefix(o, "size=") || strings.HasPrefix(o, "mode=") {
					opts = append(opts, o)
				}
			}
			list = append(list, guestMount{Dest: dest, Type: "tmpfs", RO: ro, Opts: opts})
		default:
			return fmt.Errorf("%w: mount type %q at %s", errdefs.ErrNotImplemented, m.Type, m.Destination)
		}
	}
	if err := os.MkdirAll(filepath.Join(pod, "m"), 0o711); err != nil {
		return err
	}
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(pod, "m", id+".json"), b, 0o644)
}

// mountPoint makes an empty directory or file to mount on.
func mountPoint(p string, dir bool) error {
	if dir {
		return os.Mkdir(p, 0o755)
	}
	return os.WriteFile(p, nil, 0o644)
}

// readOnlyBind binds source on stage (made here) and remounts it read-only; it returns stage,
// which the caller binds on and then detaches and removes (never recursively: until detached
// it is the volume itself).
func readOnlyBind(source, stage string, dir bool, flags uintptr) (string, error) {
	if err := os.MkdirAll(filepath.Dir(stage), 0o700); err != nil {
		return "", err
	}
	_ = os.Remove(stage) // a leftover of a create that died
	if err := mountPoint(stage, dir); err != nil {
		return "", err
	}
	err := unix.Mount(source, stage, "", flags, "")
	if err == nil {
		err = unix.Mount("", stage, "", flags|unix.MS_REMOUNT|unix.MS_RDONLY, "")
		if err != nil {
			_ = unix.Unmount(stage, unix.MNT_DETACH)
		}
	}
	if err != nil {
		_ = os.Remove(stage)
		return "", fmt.Errorf("read-only %s: %w", source, err)
	}
	return stage, nil
}

// unmountVolumes detaches the container's binds in the pod directory and removes them.
func unmountVolumes(pod, id string) {
	dir := filepath.Join(pod, "m", id)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		_ = unix.Unmount(p, unix.MNT_DETACH)
		_ = os.Remove(p)
	}
	_ = os.Remove(dir)
	_ = os.Remove(filepath.Join(pod, "m", id+".json"))
}
