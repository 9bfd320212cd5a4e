package bgp

// The privileged tests run each speaker in a child process inside a node namespace,
// never in the test's own: GoBGP opens its sockets from goroutines of its own, on any
// thread, so only a whole process can be put in a namespace (see the package doc).
// The child is this test binary again, in helper mode (helperEnv set), driven over
// stdin/stdout with JSON lines: one request, one response.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// helperEnv holds the child's Config as JSON; its presence selects helper mode.
const helperEnv = "PODNET_BGP_TEST_SPEAKER"

func TestMain(m *testing.M) {
	if cfg, ok := os.LookupEnv(helperEnv); ok {
		if err := runHelper(cfg, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bgp test speaker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperRequest is one command to the child. Op is setPeers, advertise, learned,
// sessions, watched or stop.
type helperRequest struct {
	Op     string
	Peers  []Peer  `json:",omitempty"`
	Routes []Route `json:",omitempty"`
}

// helperResponse is the child's answer: Error is the method's error, if any.
type helperResponse struct {
	Error    string    `json:",omitempty"`
	Routes   []Route   `json:",omitempty"`
	Sessions []Session `json:",omitempty"`
	// For watched: the routes of Watch's last call, how many calls there were, and
	// the error Watch returned (once it did).
	WatchCalls int    `json:",omitempty"`
	WatchErr   string `json:",omitempty"`
}

// runHelper runs a speaker with the JSON config cfgJSON and serves requests from in
// until it closes, then stops the speaker. A watcher records what Watch reports.
func runHelper(cfgJSON string, in io.Reader, out io.Writer) error {
	var cfg Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := Start(context.Background(), cfg)
	if err != nil {
		return err
	}
	defer s.Stop()

	var (
		mu         sync.Mutex // guards the three below
		watched    []Route
		watchCalls int
		watchErr   error
	)
	go func() {
		err := s.Watch(context.Background(), func(routes []Route) {
			mu.Lock()
			defer mu.Unlock()
			watched, watchCalls = routes, watchCalls+1
		})
		mu.Lock()
		defer mu.Unlock()
		watchErr = err
	}()

	dec, enc := json.NewDecoder(in), json.NewEncoder(out)
	for {
		var req helperRequest
		if err := dec.Decode(&req); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("request: %w", err)
		}
		var resp helperResponse
		var err error
		switch req.Op {
		case "setPeers":
			err = s.SetPeers(req.Peers)
		case "advertise":
			err = s.Advertise(req.Routes)
		case "learned":
			resp.Routes, err = s.Learned()
		case "sessions":
			resp.Sessions, err = s.Sessions()
		case "watched":
			mu.Lock()
			resp.Routes, resp.WatchCalls = watched, watchCalls
			if watchErr != nil {
				resp.WatchErr = watchErr.Error()
			}
			mu.Unlock()
		case "stop":
			s.Stop()
		default:
			err = fmt.Errorf("unknown op %q", req.Op)
		}
		if err != nil {
			resp.Error = err.Error()
		}
		if err := enc.Encode(resp); err != nil {
			return fmt.Errorf("response: %w", err)
		}
	}
}

// callTimeout bounds one request to a child; pollTimeout one wait for an eventual
// state (a BGP session takes a few seconds to come up with the test timers).
const (
	callTimeout  = 20 * time.Second
	pollTimeout  = 30 * time.Second
	pollInterval = 200 * time.Millisecond
)

// testConfig is a speaker config with short timers, so that sessions come up (and
// reconnect) within seconds.
func testConfig(routerID string, asn uint32) Config {
	return Config{ASN: asn, RouterID: addr(routerID), HoldTime: 9 * time.Second, ConnectRetry: time.Second}
}

// speakerProc is a speaker running in a child process inside a namespace.
type speakerProc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	dec    *json.Decoder
	stderr *lockedBuffer
}

// startSpeaker starts a speaker with cfg in a child process inside ns. The child is
// stopped (its stdin closed, then killed by PID if it lingers) when the test ends,
// and its log printed if the test failed.
func startSpeaker(t *testing.T, name string, ns netns.NsHandle, cfg Config) *speakerProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &speakerProc{t: t, name: name, stderr: &lockedBuffer{}}
	p.cmd = exec.Command(self)
	p.cmd.Env = append(os.Environ(), helperEnv+"="+string(cfgJSON))
	p.cmd.Stderr = p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.dec = json.NewDecoder(stdout)
	// StartIn forks from a thread that entered ns, so the child starts in ns.
	if err := kernel.StartIn(ns, p.cmd); err != nil {
		t.Fatalf("start speaker %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.stdin.Close()
		waitOrKill(t, p.cmd, 10*time.Second)
		if t.Failed() {
			t.Logf("speaker %s log:\n%s", name, p.stderr.String())
		}
	})
	return p
}

// waitOrKill waits for cmd to exit, and kills it (by its PID) if it has not after d.
func waitOrKill(t *testing.T, cmd *exec.Cmd, d time.Duration) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", cmd.Path, err)
		}
	case <-time.After(d):
		t.Errorf("%s (pid %d) still running after %s: killing it", cmd.Path, cmd.Process.Pid, d)
		cmd.Process.Kill()
		<-done
	}
}

// call sends req and returns the response, failing the test if the child does not
// answer in time.
func (p *speakerProc) call(req helperRequest) helperResponse {
	p.t.Helper()
	if err := json.NewEncoder(p.stdin).Encode(req); err != nil {
		p.t.Fatalf("speaker %s: %s: %v", p.name, req.Op, err)
	}
	type result struct {
		resp helperResponse
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		r.err = p.dec.Decode(&r.resp)
		ch <- r
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			p.t.Fatalf("speaker %s: %s: read response: %v", p.name, req.Op, r.err)
		}
		return r.resp
	case <-time.After(callTimeout):
		p.t.Fatalf("speaker %s: %s: no response after %s", p.name, req.Op, callTimeout)
	}
	panic("unreachable")
}

// must fails the test if resp carries an error.
func (p *speakerProc) must(op string, resp helperResponse) helperResponse {
	p.t.Helper()
	if resp.Error != "" {
		p.t.Fatalf("speaker %s: %s: %s", p.name, op, resp.Error)
	}
	return resp
}

func (p *speakerProc) SetPeers(peers ...Peer) {
	p.t.Helper()
	p.must("SetPeers", p.call(helperRequest{Op: "setPeers", Peers: peers}))
}

func (p *speakerProc) Advertise(routes ...Route) {
	p.t.Helper()
	p.must("Advertise", p.call(helperRequest{Op: "advertise", Routes: routes}))
}

func (p *speakerProc) Learned() []Route {
	p.t.Helper()
	return p.must("Learned", p.call(helperRequest{Op: "learned"})).Routes
}

func (p *speakerProc) Sessions() []Session {
	p.t.Helper()
	return p.must("Sessions", p.call(helperRequest{Op: "sessions"})).Sessions
}

// session returns the session with the peer named peer, if configured.
func (p *speakerProc) session(peer string) (Session, bool) {
	p.t.Helper()
	sessions := p.Sessions()
	i := slices.IndexFunc(sessions, func(s Session) bool { return s.Peer.Name == peer })
	if i < 0 {
		return Session{}, false
	}
	return sessions[i], true
}

// eventually polls check until it reports true, and fails the test with check's last
// description of the state if that takes longer than pollTimeout.
func eventually(t *testing.T, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		ok, state := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s; last state: %s", what, pollTimeout, state)
		}
		time.Sleep(pollInterval)
	}
}

// waitLearned waits until p's Learned is exactly want (in any order).
func (p *speakerProc) waitLearned(want ...Route) {
	p.t.Helper()
	want = sorted(want)
	eventually(p.t, fmt.Sprintf("speaker %s learns %v", p.name, want), func() (bool, string) {
		got := p.Learned()
		return slices.Equal(got, want), fmt.Sprint(got)
	})
}

// waitSession waits until p's session with peer is in state.
func (p *speakerProc) waitSession(peer, state string) Session {
	p.t.Helper()
	var s Session
	eventually(p.t, fmt.Sprintf("speaker %s: session with %s %s", p.name, peer, state), func() (bool, string) {
		var ok bool
		s, ok = p.session(peer)
		return ok && s.State == state, fmt.Sprintf("%+v (configured: %v)", s, ok)
	})
	return s
}

// lockedBuffer is a bytes.Buffer safe for a child's output and the test's reads.
type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
