// volumes.go - the OCI spec's extra mounts (ctr --mount, Kubernetes volumes, the CRI's
// /etc/hosts and resolv.conf): bind mounts are bound on the host into the pod directory
// (<pod>/m/<container>/<n>, read-only when the spec says ro: the host enforces it, whatever the
// guest does), tmpfs mounts are made in the guest; capsem-ctr-init mounts them at their
// destinations inside the container's root from the list in <pod>/m/<container>.json. /proc,
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

// guestMount is one entry of <pod>/m/<container>.json (read by capsem-ctr-init).
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
// the helper. On failure everything it bound is undone.
func prepareMounts(pod, id string, mounts []specs.Mount) (err error) {
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
			if st.IsDir() {
				err = os.Mkdir(target, 0o755)
			} else {
				err = os.WriteFile(target, nil, 0o644)
			}
			if err != nil {
				return err
			}
			flags := uintptr(unix.MS_BIND)
			if hasOpt(m.Options, "rbind") {
				flags |= unix.MS_REC
			}
			if err := unix.Mount(m.Source, target, "", flags, ""); err != nil {
				return fmt.Errorf("bind %s: %w", m.Source, err)
			}
			if ro {
				if err := unix.Mount("", target, "", flags|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
					return fmt.Errorf("read-only %s: %w", m.Source, err)
				}
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
