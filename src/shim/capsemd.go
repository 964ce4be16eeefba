// capsemd.go - the shim's client of capsemd's API (docs/API.md): HTTP/1.1 over the daemon's Unix
// socket, JSON bodies, and the exec upgrade whose frames are docs/PROTOCOL.md §4. The shim never
// talks to capsem-vm or QEMU itself: the daemon owns every VM (its registry, recovery, ledger).

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/sys/reaper"
)

// exec frame types (docs/PROTOCOL.md §4)
const (
	frameStdin   = 17
	frameSignal  = 18
	frameWinsize = 19
	frameStarted = 20
	frameStdout  = 21
	frameStderr  = 22
	frameExit    = 23
	frameError   = 24
	maxPayload   = 1 << 20
)

type daemon struct {
	home string
	sock string
	http *http.Client
}

// capsemHome is the Capsem home the shim uses: $CAPSEM_HOME (containerd's environment reaches its
// shims), else the system home /var/lib/capsem (a root-run containerd has no ~/.capsem to speak of).
func capsemHome() string {
	if h := os.Getenv("CAPSEM_HOME"); h != "" {
		return h
	}
	return "/var/lib/capsem"
}

func newDaemon(home string) *daemon {
	sock := filepath.Join(home, "run", "capsemd.sock")
	d := &daemon{home: home, sock: sock}
	d.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "unix", sock)
		},
	}}
	return d
}

// daemonBin finds capsemd: $CAPSEM_DAEMON_BIN, next to the shim, or on PATH.
func daemonBin() string {
	if b := os.Getenv("CAPSEM_DAEMON_BIN"); b != "" {
		return b
	}
	if self, err := os.Executable(); err == nil {
		b := filepath.Join(filepath.Dir(self), "capsemd")
		if _, err := os.Stat(b); err == nil {
			return b
		}
	}
	if b, err := exec.LookPath("capsemd"); err == nil {
		return b
	}
	return "/usr/bin/capsemd"
}

// ensure starts capsemd when its socket does not answer. capsemd detaches and its starting
// process exits 0 once the socket accepts connections (3: another daemon holds the lock, which is
// as good): readiness is an exit status, not a poll.
func (d *daemon) ensure() error {
	if c, err := net.Dial("unix", d.sock); err == nil {
		c.Close()
		return nil
	}
	if err := os.MkdirAll(d.home, 0o700); err != nil {
		return err
	}
	// containerd's shim library reaps every child on SIGCHLD (the shim is a subreaper), so the
	// exit status is taken from its reaper, never from a wait of our own (ECHILD)
	var out bytes.Buffer
	cmd := exec.Command(daemonBin(), "--home", d.home)
	cmd.Stdout, cmd.Stderr = &out, &out
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return fmt.Errorf("starting capsemd: %w", err)
	}
	status, err := reaper.Default.WaitTimeout(cmd, ec, 2*time.Minute)
	if err != nil {
		return fmt.Errorf("starting capsemd: %w", err)
	}
	if status != 0 && status != 3 {
		return fmt.Errorf("starting capsemd: exit %d: %s", status, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

type apiError struct {
	Status int
	Msg    string `json:"error"`
	Code   string `json:"code"`
}

func (e *apiError) Error() string { return fmt.Sprintf("capsemd: %s (%d %s)", e.Msg, e.Status, e.Code) }

// call sends one JSON request and decodes the answer into out (when not nil).
func (d *daemon) call(ctx context.Context, method, path string, in, out interface{}) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://capsemd"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Msg == "" {
			e.Msg = strings.TrimSpace(string(data))
		}
		return e
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

type vmMount struct {
	Host  string `json:"host"`
	Guest string `json:"guest"`
	RO    bool   `json:"ro,omitempty"`
}

type vmCreate struct {
	Image  string    `json:"image,omitempty"`
	CPUs   int       `json:"cpus,omitempty"`
	Memory string    `json:"memory,omitempty"`
	Env    []string  `json:"env,omitempty"`
	Mounts []vmMount `json:"mounts,omitempty"`
	// the pod directory as the VM's workspace: over virtio-fs when capsem-vm can run
	// virtiofsd, else QEMU's 9p; a suspendable VM's workspace would go over the slow
	// virtio-serial port instead
	Workspace   string `json:"workspace,omitempty"`
	Suspendable *bool  `json:"suspendable,omitempty"`
	// false: no file audit rows, no automatic snapshots (container roots are not the
	// agent's work, and hashing them every 5 minutes would cost the node)
	WorkspaceAudit *bool `json:"workspace_audit,omitempty"`
}

type vmInfo struct {
	ID                 string `json:"id"`
	State              string `json:"state"`
	Session            string `json:"session"`
	Error              string `json:"error"`
	WorkspaceTransport string `json:"workspace_transport"`
}

// execReq is the body of POST /vms/{ref}/exec.
type execReq struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Cwd  string   `json:"cwd,omitempty"`
	TTY  bool     `json:"tty"`
	Rows int      `json:"rows,omitempty"`
	Cols int      `json:"cols,omitempty"`
}

// execConn is one exec session: frames over the upgraded connection. Writes are serialised.
type execConn struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex
}

// startExec opens the exec upgrade for vm and returns the connection once the 101 arrived.
func (d *daemon) startExec(vm string, req *execReq) (*execConn, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	c, err := net.DialTimeout("unix", d.sock, 10*time.Second)
	if err != nil {
		return nil, err
	}
	head := fmt.Sprintf("POST /vms/%s/exec?via=api HTTP/1.1\r\nHost: capsemd\r\nConnection: Upgrade\r\n"+
		"Upgrade: capsem-exec/1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		vm, len(body))
	if _, err := c.Write(append([]byte(head), body...)); err != nil {
		c.Close()
		return nil, err
	}
	r := newReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		c.Close()
		e := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Msg == "" {
			e.Msg = strings.TrimSpace(string(data))
		}
		return nil, e
	}
	return &execConn{c: c, r: r}, nil
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, 64<<10) }

func (x *execConn) send(typ uint16, payload []byte) error {
	var h [6]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint16(h[4:6], typ)
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, err := x.c.Write(h[:]); err != nil {
		return err
	}
	if len(payload) > 0 {
		_, err := x.c.Write(payload)
		return err
	}
	return nil
}

func (x *execConn) sendSignal(sig uint32) error {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], sig)
	return x.send(frameSignal, p[:])
}

func (x *execConn) sendWinsize(rows, cols uint16) error {
	var p [4]byte
	binary.BigEndian.PutUint16(p[0:2], rows)
	binary.BigEndian.PutUint16(p[2:4], cols)
	return x.send(frameWinsize, p[:])
}

// recv reads one frame; the payload is capped at 1 MiB.
func (x *execConn) recv() (uint16, []byte, error) {
	var h [6]byte
	if _, err := io.ReadFull(x.r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n > maxPayload {
		return 0, nil, errors.New("exec frame too large")
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(x.r, p); err != nil {
		return 0, nil, err
	}
	return binary.BigEndian.Uint16(h[4:6]), p, nil
}

func (x *execConn) close() { x.c.Close() }

// exitInfo decodes an EXIT payload: the status a shell would show (128+N for a signal, 124 for
// a timeout) and whether the OOM killer took one of the exec's processes.
func exitInfo(p []byte) (status uint32, oom bool, err error) {
	if len(p) != 37 && len(p) != 41 {
		return 0, false, fmt.Errorf("bad EXIT frame (%d bytes)", len(p))
	}
	code := int32(binary.BigEndian.Uint32(p[1:5]))
	switch p[0] {
	case 0:
		status = uint32(code)
	case 1:
		status = 128 + uint32(code)
	default:
		status = 124
	}
	if len(p) == 41 {
		oom = binary.BigEndian.Uint32(p[37:41])&1 != 0
	}
	return status, oom, nil
}

// errorInfo decodes an ERROR payload: i32 errno, str message.
func errorInfo(p []byte) string {
	if len(p) < 8 {
		return "exec refused"
	}
	n := binary.BigEndian.Uint32(p[4:8])
	if int(n) > len(p)-8 {
		return "exec refused"
	}
	return string(p[8 : 8+n])
}

// maxRunOutput caps what run keeps of a helper's output: the guest writes it.
const maxRunOutput = 1 << 20

// run runs a short command in the VM and returns its stdout (stderr folded into the error).
func (d *daemon) run(vm string, argv []string) ([]byte, error) {
	x, err := d.startExec(vm, &execReq{Argv: argv})
	if err != nil {
		return nil, err
	}
	defer x.close()
	var out, serr bytes.Buffer
	for {
		t, p, err := x.recv()
		if err != nil {
			return nil, err
		}
		if out.Len()+serr.Len()+len(p) > maxRunOutput {
			return nil, fmt.Errorf("%s: more than %d bytes of output", argv[0], maxRunOutput)
		}
		switch t {
		case frameStdout:
			out.Write(p)
		case frameStderr:
			serr.Write(p)
		case frameError:
			return nil, errors.New(errorInfo(p))
		case frameExit:
			st, _, err := exitInfo(p)
			if err != nil {
				return nil, err
			}
			if st != 0 {
				return out.Bytes(), fmt.Errorf("%s: exit %d: %s", argv[0], st,
					strings.TrimSpace(serr.String()))
			}
			return out.Bytes(), nil
		}
	}
}
