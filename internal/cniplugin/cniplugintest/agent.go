// Package cniplugintest provides a fake podnet agent for tests of the CNI plugin: it
// serves the agent's JSON API on a unix socket, receives namespace descriptors the way
// the real agent does (fdpass.FDListener, fdpass.ConnContext, fdpass.TakeFD), records every
// request and answers with canned results or errors.
package cniplugintest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/fdpass"
)

// Request is one request the fake received.
type Request struct {
	Method, Path string
	Body         []byte
	// FD says whether a descriptor came with the request; Dev and Ino identify the file
	// it referred to (fstat on the received descriptor).
	FD       bool
	Dev, Ino uint64
}

// Decode unmarshals the request body into v.
func (r Request) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s %s body %q: %v", r.Method, r.Path, r.Body, err)
	}
}

// Agent is a fake agent. Set its answer fields before the plugin calls it.
type Agent struct {
	// Socket is the path the fake listens on.
	Socket string

	mu sync.Mutex // guards the fields below
	// Result answers attach requests.
	Result api.Result
	// Status answers status requests.
	Status api.Status
	// Err, when set, answers every request.
	Err *api.Error
	// Requests lists what was received, in order.
	Requests []Request
}

// NewAgent starts a fake agent on a socket in a temporary directory; it stops when the
// test ends.
func NewAgent(t testing.TB) *Agent {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 { // sun_path holds 108 bytes
		d, err := os.MkdirTemp("", "pn")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	a := &Agent{Socket: filepath.Join(dir, "agent.sock"), Status: api.Status{Ready: true, Version: "fake"}}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: a.Socket, Net: "unix"})
	if err != nil {
		t.Fatalf("listen %s: %v", a.Socket, err)
	}
	srv := &http.Server{Handler: a, ConnContext: fdpass.ConnContext}
	go srv.Serve(fdpass.FDListener{UnixListener: ln})
	t.Cleanup(func() { srv.Close() })
	return a
}

// Set changes the answers under the lock.
func (a *Agent) Set(f func(a *Agent)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

// Received returns a copy of the requests received so far.
func (a *Agent) Received() []Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Request(nil), a.Requests...)
}

// Last returns the last request and fails the test when there is none.
func (a *Agent) Last(t testing.TB) Request {
	t.Helper()
	rs := a.Received()
	if len(rs) == 0 {
		t.Fatal("fake agent received no request")
	}
	return rs[len(rs)-1]
}

// ServeHTTP records the request and answers it.
func (a *Agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := Request{Method: r.Method, Path: r.URL.Path}
	if fd := fdpass.TakeFD(r); fd >= 0 {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err == nil {
			rec.FD, rec.Dev, rec.Ino = true, st.Dev, st.Ino
		}
		syscall.Close(fd)
	}
	rec.Body, _ = io.ReadAll(r.Body)

	a.mu.Lock()
	a.Requests = append(a.Requests, rec)
	aerr, result, status := a.Err, a.Result, a.Status
	a.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	if aerr != nil {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(aerr)
		return
	}
	switch r.URL.Path {
	case api.PathStatus:
		json.NewEncoder(w).Encode(status)
	case api.PathEndpoints:
		json.NewEncoder(w).Encode(result)
	case api.PathGC:
		json.NewEncoder(w).Encode(api.GCResponse{})
	case api.PathEndpointsDel, api.PathEndpointCheck:
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.Errorf(api.CodeNotFound, "no such path %s", r.URL.Path))
	}
}

// StatFile returns the device and inode of the file at path, to compare with Request.Dev
// and Request.Ino.
func StatFile(t testing.TB, path string) (dev, ino uint64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev, st.Ino
}
