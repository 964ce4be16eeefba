package main

import (
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func exitPayload(kind byte, code int32, flags *uint32) []byte {
	p := make([]byte, 37)
	p[0] = kind
	binary.BigEndian.PutUint32(p[1:5], uint32(code))
	if flags != nil {
		p = binary.BigEndian.AppendUint32(p, *flags)
	}
	return p
}

func TestExitInfo(t *testing.T) {
	oom := uint32(1)
	other := uint32(2)
	cases := []struct {
		p      []byte
		status uint32
		oom    bool
	}{
		{exitPayload(0, 7, nil), 7, false},
		{exitPayload(1, 9, nil), 137, false},
		{exitPayload(2, 9, nil), 124, false},
		{exitPayload(1, 9, &oom), 137, true},
		{exitPayload(0, 0, &other), 0, false},
	}
	for i, c := range cases {
		st, o, err := exitInfo(c.p)
		if err != nil || st != c.status || o != c.oom {
			t.Errorf("case %d: got %d %v %v", i, st, o, err)
		}
	}
	for _, n := range []int{0, 36, 38, 40, 42} {
		if _, _, err := exitInfo(make([]byte, n)); err == nil {
			t.Errorf("a %d-byte EXIT was accepted", n)
		}
	}
}

func TestErrorInfo(t *testing.T) {
	p := []byte{0, 0, 0, 2, 0, 0, 0, 3, 'b', 'a', 'd'}
	if m := errorInfo(p); m != "bad" {
		t.Errorf("got %q", m)
	}
	// a length beyond the payload, a short payload: no panic, a generic message
	if m := errorInfo([]byte{0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 'x'}); m != "exec refused" {
		t.Errorf("got %q", m)
	}
	if m := errorInfo([]byte{1, 2}); m != "exec refused" {
		t.Errorf("got %q", m)
	}
}

func TestFrames(t *testing.T) {
	a, b := net.Pipe()
	x := &execConn{c: a}
	y := &execConn{c: b}
	y.r = newReader(b)
	go func() {
		_ = x.sendSignal(15)
		_ = x.sendWinsize(24, 80)
		_ = x.send(frameStdin, nil)
		// a frame over the cap: the reader must refuse it without reading 4 GiB
		_, _ = a.Write([]byte{0xff, 0xff, 0xff, 0xff, 0, frameStdout})
	}()
	typ, p, err := y.recv()
	if err != nil || typ != frameSignal || binary.BigEndian.Uint32(p) != 15 {
		t.Fatalf("signal: %d %v %v", typ, p, err)
	}
	typ, p, err = y.recv()
	if err != nil || typ != frameWinsize || binary.BigEndian.Uint16(p) != 24 || binary.BigEndian.Uint16(p[2:]) != 80 {
		t.Fatalf("winsize: %d %v %v", typ, p, err)
	}
	typ, p, err = y.recv()
	if err != nil || typ != frameStdin || len(p) != 0 {
		t.Fatalf("stdin EOF: %d %v %v", typ, p, err)
	}
	if _, _, err = y.recv(); err == nil {
		t.Fatal("an oversized frame was accepted")
	}
}

func TestHelperArgv(t *testing.T) {
	c := &container{guest: "/root/workspace/c/x"}
	p := &specs.Process{Args: []string{"sh", "-c", "id"}, Cwd: "/w",
		User: specs.User{UID: 1000, GID: 100, AdditionalGids: []uint32{5, 6}}}
	got := helperArgv(c, p)
	want := []string{"/root/workspace/.capsem/capsem-ctr-init", "run", "/root/workspace/c/x", "1000", "100",
		"5,6", "/w", "--", "sh", "-c", "id"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v", got)
		}
	}
	got = helperArgv(c, &specs.Process{Args: []string{"true"}})
	if got[3] != "0" || got[4] != "0" || got[5] != "-" || got[6] != "/" {
		t.Fatalf("defaults: %v", got)
	}
}

func TestPolicyHome(t *testing.T) {
	t.Setenv("CAPSEM_HOME", t.TempDir())
	if h, err := policyHome(map[string]string{}); err != nil || h != capsemHome() {
		t.Fatalf("default: %q %v", h, err)
	}
	for _, bad := range []string{"../x", "A", "a/b", ".x", "nosuch"} {
		if _, err := policyHome(map[string]string{annoPolicy: bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestOwnedByHelper(t *testing.T) {
	for _, d := range []string{"/proc", "/dev/shm", "/sys/fs/cgroup", "/dev"} {
		if !ownedByHelper(d) {
			t.Errorf("%s", d)
		}
	}
	for _, d := range []string{"/data", "/device", "/system", "/etc/hosts"} {
		if ownedByHelper(d) {
			t.Errorf("%s", d)
		}
	}
}

func TestHelperPath(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "containerd-shim-capsem-v2")
	t.Setenv("CAPSEM_CTR_INIT", "")
	defer func(d string) { helperDir = d }(helperDir)
	// a build tree: beside the shim, whether or not it is there yet
	helperDir = ""
	if p := helperPath(self); p != filepath.Join(dir, helperName) {
		t.Errorf("build tree: %s", p)
	}
	// the package: /usr/bin holds no helper, the libexec directory does
	helperDir = "/usr/libexec/capsem"
	if p := helperPath(self); p != "/usr/libexec/capsem/"+helperName {
		t.Errorf("package: %s", p)
	}
	// one beside the shim wins (a shim copied by hand with its helper)
	if err := os.WriteFile(filepath.Join(dir, helperName), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if p := helperPath(self); p != filepath.Join(dir, helperName) {
		t.Errorf("beside the shim: %s", p)
	}
	t.Setenv("CAPSEM_CTR_INIT", "/x/helper")
	if p := helperPath(self); p != "/x/helper" {
		t.Errorf("CAPSEM_CTR_INIT: %s", p)
	}
}

func TestRootKeyNeverRepeats(t *testing.T) {
	s := &service{used: map[string]bool{}}
	got := []string{s.rootKey("a"), s.rootKey("b"), s.rootKey("a"), s.rootKey("a"), s.rootKey("a~1")}
	want := []string{"a", "b", "a~1", "a~2", "a~1~1"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}
