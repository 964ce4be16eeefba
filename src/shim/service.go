// service.go - the task service: containerd's requests (create, start, wait, kill, exec, pause,
// stats, delete ...) mapped onto one Capsem VM per sandbox. Threads: ttrpc runs each request on
// a goroutine; s.mu guards the container and process tables; each process has one goroutine
// reading its exec connection (frames in order: output reaches the FIFOs before the exit).
//
// Where things live:
//   host  <run>/<namespace>/<sandbox>.vm, .home   the VM's id and Capsem home (for Cleanup)
//         <run>/<namespace>/<sandbox>.stage/      where a read-only volume is made read-only
//                                                 before it enters the pod (volumes.go)
//         <run>/<namespace>/<sandbox>/            the pod directory, a shared (rshared) bind mount
//         <pod>/c/<key>                           each container's root file system, bound here
//                                                 (key: the container's id; <id>~N when the id
//                                                 was used before in this VM, see rootKey)
//         <pod>/m/<key>/<n>, <pod>/m/<key>.json   its volumes and their list (volumes.go)
//         <pod>/.capsem/capsem-ctr-init           the guest helper, copied in once (from beside
//                                                 the shim, or the package's libexec directory)
//   guest /root/workspace/...                     the pod directory: the VM's workspace (capsemd
//                                                 "workspace"), over virtio-fs where capsem-vm
//                                                 can run virtiofsd, else QEMU's 9p

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/containerd/runtime/v2/shim"
	taskAPI "github.com/containerd/containerd/runtime/v2/task"
	"github.com/containerd/fifo"
	"github.com/containerd/typeurl"
	ptypes "github.com/gogo/protobuf/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const (
	guestPod    = "/root/workspace" // the pod directory in the guest: the VM's workspace
	helperName  = "capsem-ctr-init"
	annoSandbox = "io.kubernetes.cri.sandbox-id"
	annoImage   = "io.capsem.image"
	annoMemory  = "io.capsem.memory"
	annoCPUs    = "io.capsem.cpus"
	annoGroup   = "io.containerd.runc.v2.group"
	annoPolicy  = "io.capsem.policy"
)

var _ = (taskAPI.TaskService)(&service{})

type process struct {
	id       string // exec id ("" for the container's init process)
	spec     *specs.Process
	terminal bool
	stdin    string
	stdout   string
	stderr   string

	x        *execConn
	pid      uint32
	status   task.Status
	exitCode uint32
	exitedAt time.Time
	done     chan struct{}
	stdinW   sync.Once
}

type container struct {
	id      string
	key     string // its name in the pod directory: c/<key>, m/<key> (rootKey)
	bundle  string
	rootfs  string // host: the bundle's rootfs mount
	podPath string // host: where it is bound in the pod directory
	guest   string // guest: its root
	init    *process
	execs   map[string]*process
}

type service struct {
	mu         sync.Mutex
	ctx        context.Context
	id         string
	publisher  shim.Publisher
	shutdownFn func()
	d          *daemon
	vm         string
	podDir     string
	transport  string          // what shares the pod directory: "virtiofs" or "9p"
	used       map[string]bool // keys of c/ used in this VM, never reused (rootKey)
	containers map[string]*container
}

// New is the shim's init function (containerd's shim library calls it in the serving process).
func New(ctx context.Context, id string, publisher shim.Publisher, shutdown func()) (shim.Shim, error) {
	return &service{ctx: ctx, id: id, publisher: publisher, shutdownFn: shutdown,
		d: newDaemon(capsemHome()), containers: map[string]*container{}}, nil
}

// runDir is where the pod directories of the capsemd whose home is home live: inside that
// home (its pods/), because capsemd's Landlock ruleset lets its VMs' workspaces be only where
// it can reach them ($CAPSEM_HOME, /tmp, $HOME's own entries); $CAPSEM_SHIM_RUN overrides it.
func runDir(home string) string {
	if d := os.Getenv("CAPSEM_SHIM_RUN"); d != "" {
		return d
	}
	return filepath.Join(home, "pods")
}

func readAnnotations(bundle string) map[string]string {
	var s struct {
		Annotations map[string]string `json:"annotations"`
	}
	if b, err := os.ReadFile(filepath.Join(bundle, "config.json")); err == nil {
		_ = json.Unmarshal(b, &s)
	}
	return s.Annotations
}

// StartShim starts the serving shim, or finds the one of the container's sandbox: containers with
// the same io.kubernetes.cri.sandbox-id share one shim (and so one VM), like runc's v2 shim.
func (s *service) StartShim(ctx context.Context, opts shim.StartOpts) (string, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	grouping := opts.ID
	a := readAnnotations(cwd)
	for _, k := range []string{annoGroup, annoSandbox} {
		if g, ok := a[k]; ok && g != "" {
			grouping = g
			break
		}
	}
	address, err := shim.SocketAddress(ctx, opts.Address, grouping)
	if err != nil {
		return "", err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			return address, shim.WriteAddress("address", address)
		}
		if err := shim.RemoveSocket(address); err != nil {
			return "", err
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return "", err
		}
	}
	// not closed here: a Go listener's Close unlinks the socket the new shim serves on
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	args := []string{"-namespace", ns, "-id", grouping, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := execCommand(self, args...)
	cmd.Dir = cwd
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = shim.RemoveSocket(address)
		return "", err
	}
	go func() { _ = cmd.Wait() }()
	if err := shim.WriteAddress("address", address); err != nil {
		_ = cmd.Process.Kill()
		return "", err
	}
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		log.G(ctx).WithError(err).Warn("adjust shim OOM score")
	}
	return address, nil
}

// Cleanup is containerd's "delete" of a shim that died: unmount the container's rootfs and, if
// the pod directory names a VM and no container is left in it, delete the VM.
func (s *service) Cleanup(ctx context.Context) (*taskAPI.DeleteResponse, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	id := filepath.Base(cwd)
	_ = mount.UnmountAll(filepath.Join(cwd, "rootfs"), 0)
	ns, _ := namespaces.Namespace(ctx)
	grouping := id
	a := readAnnotations(cwd)
	if g, ok := a[annoSandbox]; ok && g != "" {
		grouping = g
	}
	phome, err := policyHome(a)
	if err != nil {
		phome = capsemHome()
	}
	pod := filepath.Join(runDir(phome), ns, grouping)
	keys := []string{id}
	if more, err := filepath.Glob(filepath.Join(pod, "c", id+"~*")); err == nil {
		for _, m := range more {
			keys = append(keys, filepath.Base(m))
		}
	}
	for _, k := range keys {
		unmountVolumes(pod, k)
		_ = unix.Unmount(filepath.Join(pod, "c", k), unix.MNT_DETACH)
		_ = os.Remove(filepath.Join(pod, "c", k))
	}
	if ents, _ := os.ReadDir(filepath.Join(pod, "c")); len(ents) == 0 {
		if b, err := os.ReadFile(pod + ".vm"); err == nil {
			home := capsemHome()
			if h, err := os.ReadFile(pod + ".home"); err == nil {
				home = strings.TrimSpace(string(h))
			}
			d := newDaemon(home)
			_ = d.call(ctx, "DELETE", "/vms/"+strings.TrimSpace(string(b)), nil, nil)
		}
		removePod(pod)
	}
	return &taskAPI.DeleteResponse{ExitedAt: time.Now(), ExitStatus: 128 + uint32(unix.SIGKILL)}, nil
}

// removePod detaches the pod directory's bind mount (and every root file system still bound
// beneath it), then removes what is left: the helper and empty mount points. The VM's id and
// home are kept beside the pod directory, never in it: the guest can write the share.
func removePod(pod string) {
	_ = unix.Unmount(pod, unix.MNT_DETACH)
	_ = os.RemoveAll(pod)
	_ = os.Remove(pod + ".vm")
	_ = os.Remove(pod + ".home")
	_ = os.Remove(pod + ".stage") // empty: each read-only volume's stage goes at once
}

var profileName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// policyHome is the Capsem home whose capsemd runs the sandbox's VM. The egress policy, the
// credentials and the MCP configuration belong to a Capsem home ($CAPSEM_HOME/user.toml, ...;
// /etc/capsem/corp.toml over all of them): the annotation io.capsem.policy=NAME picks the
// profile home $CAPSEM_HOME/profiles/NAME (made by the operator, with its user.toml), served
// by a capsemd of its own; without it the installation's home.
func policyHome(anno map[string]string) (string, error) {
	name, ok := anno[annoPolicy]
	if !ok || name == "" || name == "default" {
		return capsemHome(), nil
	}
	if !profileName.MatchString(name) {
		return "", fmt.Errorf("%w: bad %s %q", errdefs.ErrInvalidArgument, annoPolicy, name)
	}
	h := filepath.Join(capsemHome(), "profiles", name)
	if _, err := os.Stat(filepath.Join(h, "user.toml")); err != nil {
		return "", fmt.Errorf("%w: policy profile %q: no %s", errdefs.ErrInvalidArgument, name,
			filepath.Join(h, "user.toml"))
	}
	return h, nil
}

// ensureVM boots the sandbox's VM on its first container: the pod directory becomes an
// rshared bind mount (so the root file systems bound into it later reach the VM's file server
// too: virtiofsd's mount namespace is a slave of ours, QEMU's 9p shares ours) and is the VM's
// workspace; the helper is copied into it. The VM is not suspendable (a suspendable VM's
// workspace goes over its virtio-serial port, far slower: docs/ARCHITECTURE.md "The
// workspace"), so capsem-vm serves the workspace over virtio-fs, or over QEMU's 9p where
// virtiofsd cannot run (no root, or an open-file limit it cannot raise), and says which.
// No file audit or automatic snapshots of it: container roots are not the agent's work.
func (s *service) ensureVM(ctx context.Context, ns string, anno map[string]string) error {
	if s.vm != "" {
		return nil
	}
	home, err := policyHome(anno)
	if err != nil {
		return err
	}
	if home != capsemHome() && os.Getenv("CAPSEM_IMAGES_DIR") == "" {
		// a profile's capsemd boots the installation's images
		os.Setenv("CAPSEM_IMAGES_DIR", filepath.Join(capsemHome(), "images"))
	}
	s.d = newDaemon(home)
	pod := filepath.Join(runDir(home), ns, s.id)
	if err := os.MkdirAll(filepath.Join(pod, "c"), 0o711); err != nil {
		return err
	}
	if err := unix.Mount(pod, pod, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", pod, err)
	}
	if err := unix.Mount("", pod, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		removePod(pod)
		return fmt.Errorf("make %s shared: %w", pod, err)
	}
	if err := installHelper(filepath.Join(pod, ".capsem")); err != nil {
		removePod(pod)
		return err
	}
	if err := s.d.ensure(); err != nil {
		removePod(pod)
		return err
	}
	no := false
	req := vmCreate{Image: anno[annoImage], Memory: anno[annoMemory], Workspace: pod,
		Suspendable: &no, WorkspaceAudit: &no}
	if c, err := strconv.Atoi(anno[annoCPUs]); err == nil {
		req.CPUs = c
	}
	var vm vmInfo
	if err := s.d.call(ctx, "POST", "/vms", &req, &vm); err != nil {
		removePod(pod)
		return fmt.Errorf("creating the Capsem VM: %w", err)
	}
	_ = os.WriteFile(pod+".vm", []byte(vm.ID+"\n"), 0o600)
	_ = os.WriteFile(pod+".home", []byte(home+"\n"), 0o600)
	s.vm, s.podDir, s.transport, s.used = vm.ID, pod, vm.WorkspaceTransport, map[string]bool{}
	l := log.G(ctx).WithField("vm", vm.ID).WithField("transport", vm.WorkspaceTransport)
	if vm.WorkspaceTransport == "virtiofs" {
		l.Info("capsem VM ready: the pod directory is shared over virtio-fs")
	} else {
		l.Warn("capsem VM ready: the pod directory is shared over QEMU's 9p, not virtio-fs " +
			"(capsem-vm could not run virtiofsd here; `capsem logs " + vm.ID + "` says why)")
	}
	return nil
}

// rootKey is the name of a new container's root in the pod directory (c/<key>): its id, or
// <id>~N when the id was used before in this VM. The guest caches a name it looked up (its
// dentry) for up to a second over virtio-fs (cache=auto), so a root bound anew under a name the
// guest saw could show it the old one; a name never repeats instead. Called with s.mu held.
func (s *service) rootKey(id string) string {
	key := id
	for n := 1; s.used[key]; n++ {
		key = id + "~" + strconv.Itoa(n)
	}
	s.used[key] = true
	return key
}

// helperDir is where the Debian package installs capsem-ctr-init (a guest binary, so not on
// PATH): set at link time by scripts/build-shim.sh --package (-X main.helperDir=...), empty in a
// build tree, whose helper is always next to its shim.
var helperDir string

// helperPath finds capsem-ctr-init: $CAPSEM_CTR_INIT, next to the shim (self), else in helperDir.
func helperPath(self string) string {
	if p := os.Getenv("CAPSEM_CTR_INIT"); p != "" {
		return p
	}
	p := filepath.Join(filepath.Dir(self), helperName)
	if _, err := os.Stat(p); err != nil && helperDir != "" {
		return filepath.Join(helperDir, helperName)
	}
	return p
}

// installHelper copies capsem-ctr-init (helperPath) into dir.
func installHelper(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src := helperPath(self)
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("the guest helper: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(dir, helperName), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var sp specs.Spec
	if err := json.Unmarshal(b, &sp); err != nil {
		return nil, err
	}
	if sp.Process == nil {
		return nil, fmt.Errorf("%w: the OCI spec has no process", errdefs.ErrInvalidArgument)
	}
	return &sp, nil
}

func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[r.ID]; ok {
		return nil, errdefs.ErrAlreadyExists
	}
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("checkpoints: %w", errdefs.ErrNotImplemented)
	}
	sp, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(r.Bundle, "rootfs")
	var mounts []mount.Mount
	for _, m := range r.Rootfs {
		mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Options: m.Options})
	}
	if len(mounts) > 0 {
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, err
		}
		if err := mount.All(mounts, rootfs); err != nil {
			return nil, fmt.Errorf("mount rootfs: %w", err)
		}
	}
	fail := func(err error) (*taskAPI.CreateTaskResponse, error) {
		if len(mounts) > 0 {
			_ = mount.UnmountAll(rootfs, 0)
		}
		return nil, err
	}
	if err := s.ensureVM(ctx, ns, sp.Annotations); err != nil {
		return fail(err)
	}
	key := s.rootKey(r.ID)
	pp := filepath.Join(s.podDir, "c", key)
	if err := os.MkdirAll(pp, 0o755); err != nil {
		return fail(err)
	}
	if err := unix.Mount(rootfs, pp, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fail(fmt.Errorf("bind rootfs into the pod: %w", err))
	}
	if err := prepareMounts(s.podDir, key, s.podDir+".stage", sp.Mounts); err != nil {
		_ = unix.Unmount(pp, unix.MNT_DETACH)
		_ = os.Remove(pp)
		return fail(err)
	}
	c := &container{id: r.ID, key: key, bundle: r.Bundle, rootfs: rootfs, podPath: pp,
		guest: guestPod + "/c/" + key, execs: map[string]*process{}}
	c.init = &process{spec: sp.Process, terminal: r.Terminal, stdin: r.Stdin, stdout: r.Stdout,
		stderr: r.Stderr, status: task.StatusCreated, done: make(chan struct{})}
	s.containers[r.ID] = c
	s.publish(ctx, runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{ContainerID: r.ID,
		Bundle: r.Bundle, Pid: 0, IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout,
			Stderr: r.Stderr, Terminal: r.Terminal}})
	return &taskAPI.CreateTaskResponse{}, nil
}

func (s *service) publish(ctx context.Context, topic string, ev interface{}) {
	if s.publisher == nil {
		return
	}
	ctx = namespaces.WithNamespace(context.Background(), nsOf(ctx))
	if err := s.publisher.Publish(ctx, topic, ev); err != nil {
		log.G(ctx).WithError(err).Warn("publish " + topic)
	}
}

func nsOf(ctx context.Context) string {
	if ns, ok := namespaces.Namespace(ctx); ok {
		return ns
	}
	return "default"
}

func (s *service) get(id, execID string) (*container, *process, error) {
	c, ok := s.containers[id]
	if !ok {
		return nil, nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %s: %w", execID, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// helperArgv is the exec argv that makes the guest helper become the OCI process.
func helperArgv(c *container, p *specs.Process) []string {
	uid, gid, groups := "0", "0", "-"
	if p.User.UID != 0 || p.User.GID != 0 {
		uid, gid = strconv.Itoa(int(p.User.UID)), strconv.Itoa(int(p.User.GID))
	}
	if len(p.User.AdditionalGids) > 0 {
		var g []string
		for _, x := range p.User.AdditionalGids {
			g = append(g, strconv.Itoa(int(x)))
		}
		groups = strings.Join(g, ",")
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	argv := []string{guestPod + "/.capsem/" + helperName, "run", c.guest, uid, gid, groups, cwd, "--"}
	return append(argv, p.Args...)
}

// startProcess opens the exec connection, waits for STARTED and starts the frame reader.
func (s *service) startProcess(ctx context.Context, c *container, p *process) error {
	if len(p.spec.Args) == 0 {
		return fmt.Errorf("%w: no args", errdefs.ErrInvalidArgument)
	}
	var stdout, stderr io.WriteCloser
	var stdin io.ReadCloser
	var err error
	if p.stdin != "" {
		if stdin, err = fifo.OpenFifo(ctx, p.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
			return fmt.Errorf("stdin fifo: %w", err)
		}
	}
	if p.stdout != "" {
		if stdout, err = fifo.OpenFifo(ctx, p.stdout, syscall.O_WRONLY, 0); err != nil {
			return fmt.Errorf("stdout fifo: %w", err)
		}
	}
	if p.stderr != "" && !p.terminal {
		if stderr, err = fifo.OpenFifo(ctx, p.stderr, syscall.O_WRONLY, 0); err != nil {
			return fmt.Errorf("stderr fifo: %w", err)
		}
	}
	closeAll := func() {
		for _, f := range []io.Closer{stdin, stdout, stderr} {
			if f != nil && f != io.Closer(nil) {
				f.Close()
			}
		}
	}
	req := &execReq{Argv: helperArgv(c, p.spec), Env: p.spec.Env, TTY: p.terminal}
	if p.terminal && p.spec.ConsoleSize != nil {
		req.Rows, req.Cols = int(p.spec.ConsoleSize.Height), int(p.spec.ConsoleSize.Width)
	}
	x, err := s.d.startExec(s.vm, req)
	if err != nil {
		closeAll()
		return err
	}
	for {
		t, pl, err := x.recv()
		if err != nil {
			x.close()
			closeAll()
			return fmt.Errorf("exec: %w", err)
		}
		if t == frameError {
			x.close()
			closeAll()
			return fmt.Errorf("exec refused by the guest: %s", errorInfo(pl))
		}
		if t == frameStarted && len(pl) == 4 {
			p.pid = uint32(pl[0])<<24 | uint32(pl[1])<<16 | uint32(pl[2])<<8 | uint32(pl[3])
			break
		}
	}
	p.x = x
	p.status = task.StatusRunning
	if stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					if x.send(frameStdin, buf[:n]) != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			p.closeStdin()
			stdin.Close()
		}()
	} else if !p.terminal {
		p.closeStdin()
	}
	go s.reader(c, p, stdout, stderr, nsOf(ctx))
	return nil
}

func (p *process) closeStdin() {
	p.stdinW.Do(func() { _ = p.x.send(frameStdin, nil) })
}

// reader copies output frames to the FIFOs in order and records the exit; a connection that
// ends without EXIT (the VM went away) is exit 255.
func (s *service) reader(c *container, p *process, stdout, stderr io.WriteCloser, ns string) {
	status, oom := uint32(255), false
	for {
		t, pl, err := p.x.recv()
		if err != nil {
			break
		}
		if t == frameStdout && stdout != nil {
			_, _ = stdout.Write(pl)
		} else if t == frameStderr && stderr != nil {
			_, _ = stderr.Write(pl)
		} else if t == frameStderr && p.terminal && stdout != nil {
			_, _ = stdout.Write(pl)
		} else if t == frameExit {
			if st, o, err := exitInfo(pl); err == nil {
				status, oom = st, o
			}
			break
		} else if t == frameError {
			break
		}
	}
	p.x.close()
	if p.id == "" {
		// the container ends with its init process: what it left running and its execs go too
		s.mu.Lock()
		vm := s.vm
		s.mu.Unlock()
		if vm != "" {
			if _, err := s.d.run(vm, []string{guestPod + "/.capsem/" + helperName, "killall",
				c.guest}); err != nil {
				log.L.WithError(err).Warn("killall in the guest")
			}
		}
	}
	if stdout != nil {
		stdout.Close()
	}
	if stderr != nil {
		stderr.Close()
	}
	ctx := namespaces.WithNamespace(context.Background(), ns)
	if oom {
		s.publish(ctx, runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: c.id})
	}
	s.mu.Lock()
	p.exitCode, p.exitedAt, p.status = status, time.Now(), task.StatusStopped
	close(p.done)
	s.mu.Unlock()
	id := p.id
	if id == "" {
		id = c.id
	}
	s.publish(ctx, runtime.TaskExitEventTopic, &eventstypes.TaskExit{ContainerID: c.id, ID: id,
		Pid: p.pid, ExitStatus: status, ExitedAt: p.exitedAt})
}

func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	c, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if p.status != task.StatusCreated {
		s.mu.Unlock()
		return nil, fmt.Errorf("process already started: %w", errdefs.ErrFailedPrecondition)
	}
	p.status = task.StatusUnknown // starting
	s.mu.Unlock()
	if err := s.startProcess(ctx, c, p); err != nil {
		s.mu.Lock()
		p.status = task.StatusCreated
		s.mu.Unlock()
		return nil, err
	}
	if r.ExecID == "" {
		s.publish(ctx, runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: c.id, Pid: p.pid})
	} else {
		s.publish(ctx, runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{
			ContainerID: c.id, ExecID: r.ExecID, Pid: p.pid})
	}
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.mu.Lock()
	c, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if p.status == task.StatusRunning || p.status == task.StatusPaused || p.status == task.StatusUnknown {
		s.mu.Unlock()
		return nil, fmt.Errorf("process %s is running: %w", r.ID, errdefs.ErrFailedPrecondition)
	}
	if r.ExecID != "" {
		delete(c.execs, r.ExecID)
		s.mu.Unlock()
		return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: p.exitCode, ExitedAt: p.exitedAt}, nil
	}
	delete(s.containers, r.ID)
	last := len(s.containers) == 0
	vm, pod := s.vm, s.podDir
	s.mu.Unlock()
	if vm != "" && !last { // the last container's VM is deleted with its mounts
		if _, err := s.d.run(vm, []string{guestPod + "/.capsem/" + helperName, "cleanup", c.guest}); err != nil {
			log.G(ctx).WithError(err).Warn("guest cleanup")
		}
	}
	unmountVolumes(pod, c.key)
	_ = unix.Unmount(c.podPath, unix.MNT_DETACH)
	_ = os.Remove(c.podPath)
	_ = mount.UnmountAll(c.rootfs, 0)
	if last {
		s.mu.Lock()
		s.stopVM(ctx)
		s.mu.Unlock()
	}
	s.publish(ctx, runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{ContainerID: c.id,
		Pid: p.pid, ExitStatus: p.exitCode, ExitedAt: p.exitedAt})
	return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: p.exitCode, ExitedAt: p.exitedAt}, nil
}

// stopVM deletes the sandbox's VM (capsemd stops it: QEMU, capsem-vm and virtiofsd go) and the
// pod directory. Called with s.mu held.
func (s *service) stopVM(ctx context.Context) {
	if s.vm == "" {
		return
	}
	if err := s.d.call(ctx, "DELETE", "/vms/"+s.vm, nil, nil); err != nil {
		log.G(ctx).WithError(err).Warn("delete the VM")
	}
	removePod(s.podDir)
	s.vm, s.podDir, s.transport, s.used = "", "", "", nil
}

func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[r.ID]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	if _, ok := c.execs[r.ExecID]; ok {
		return nil, fmt.Errorf("exec %s: %w", r.ExecID, errdefs.ErrAlreadyExists)
	}
	if c.init.status == task.StatusStopped {
		return nil, fmt.Errorf("container stopped: %w", errdefs.ErrFailedPrecondition)
	}
	v, err := typeurl.UnmarshalAny(r.Spec)
	if err != nil {
		return nil, err
	}
	sp, ok := v.(*specs.Process)
	if !ok {
		return nil, fmt.Errorf("%w: exec spec is not a process", errdefs.ErrInvalidArgument)
	}
	c.execs[r.ExecID] = &process{id: r.ExecID, spec: sp, terminal: r.Terminal, stdin: r.Stdin,
		stdout: r.Stdout, stderr: r.Stderr, status: task.StatusCreated, done: make(chan struct{})}
	s.publish(ctx, runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &ptypes.Empty{}, nil
}

func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	_, p, err := s.get(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if p.x != nil {
		_ = p.x.sendWinsize(uint16(r.Height), uint16(r.Width))
	}
	return &ptypes.Empty{}, nil
}

func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st := p.status
	if st == task.StatusUnknown {
		st = task.StatusCreated
	}
	return &taskAPI.StateResponse{ID: r.ID, ExecID: r.ExecID, Bundle: c.bundle, Pid: p.pid,
		Status: st, Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal,
		ExitStatus: p.exitCode, ExitedAt: p.exitedAt}, nil
}

// freeze freezes or thaws the guest cgroup of a running process (capsem-ctr-init freeze).
func (s *service) freeze(c *container, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	procs := []*process{c.init}
	for _, e := range c.execs {
		procs = append(procs, e)
	}
	for _, p := range procs {
		if p.x == nil || (p.status != task.StatusRunning && p.status != task.StatusPaused) {
			continue
		}
		if _, err := s.d.run(s.vm, []string{guestPod + "/.capsem/" + helperName, "freeze",
			strconv.Itoa(int(p.pid)), v}); err != nil {
			return err
		}
	}
	return nil
}

func (s *service) setPaused(ctx context.Context, id string, on bool) error {
	s.mu.Lock()
	c, ok := s.containers[id]
	s.mu.Unlock()
	if !ok {
		return errdefs.ErrNotFound
	}
	if err := s.freeze(c, on); err != nil {
		return err
	}
	s.mu.Lock()
	for _, p := range append([]*process{c.init}, mapValues(c.execs)...) {
		if on && p.status == task.StatusRunning {
			p.status = task.StatusPaused
		} else if !on && p.status == task.StatusPaused {
			p.status = task.StatusRunning
		}
	}
	s.mu.Unlock()
	if on {
		s.publish(ctx, runtime.TaskPausedEventTopic, &eventstypes.TaskPaused{ContainerID: id})
	} else {
		s.publish(ctx, runtime.TaskResumedEventTopic, &eventstypes.TaskResumed{ContainerID: id})
	}
	return nil
}

func mapValues(m map[string]*process) []*process {
	var v []*process
	for _, p := range m {
		v = append(v, p)
	}
	return v
}

func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return &ptypes.Empty{}, s.setPaused(ctx, r.ID, true)
}

func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return &ptypes.Empty{}, s.setPaused(ctx, r.ID, false)
}

func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ErrNotImplemented
}

// Kill signals the process group of the process in the guest; a process that was created but
// never started just becomes stopped.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	c, p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	procs := []*process{p}
	if r.All && r.ExecID == "" {
		procs = append(procs, mapValues(c.execs)...)
	}
	if p.status == task.StatusCreated {
		p.status, p.exitCode, p.exitedAt = task.StatusStopped, 128+r.Signal, time.Now()
		close(p.done)
		s.mu.Unlock()
		return &ptypes.Empty{}, nil
	}
	paused := c.init.status == task.StatusPaused
	s.mu.Unlock()
	if paused && (r.Signal == uint32(unix.SIGKILL) || r.Signal == uint32(unix.SIGTERM)) {
		// a frozen process cannot die: thaw it so the signal lands
		_ = s.setPaused(ctx, r.ID, false)
	}
	for _, q := range procs {
		if q.x != nil && q.status != task.StatusStopped {
			if err := q.x.sendSignal(r.Signal); err != nil && q == p {
				return nil, fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
			}
		}
	}
	return &ptypes.Empty{}, nil
}

func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[r.ID]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	var ps []*task.ProcessInfo
	for _, p := range append([]*process{c.init}, mapValues(c.execs)...) {
		if p.pid != 0 && p.status != task.StatusStopped {
			ps = append(ps, &task.ProcessInfo{Pid: p.pid})
		}
	}
	return &taskAPI.PidsResponse{Processes: ps}, nil
}

func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	_, p, err := s.get(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if r.Stdin && p.x != nil {
		p.closeStdin()
	}
	return &ptypes.Empty{}, nil
}

func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ErrNotImplemented
}

func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	s.mu.Lock()
	_, p, err := s.get(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.WaitResponse{ExitStatus: p.exitCode, ExitedAt: p.exitedAt}, nil
}

func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pid uint32
	if c, ok := s.containers[r.ID]; ok {
		pid = c.init.pid
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: pid}, nil
}

// Shutdown ends the shim once its sandbox has no container left (the VM is gone by then).
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.containers) > 0 {
		return &ptypes.Empty{}, nil
	}
	s.stopVM(ctx)
	s.shutdownFn()
	return &ptypes.Empty{}, nil
}
