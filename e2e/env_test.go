package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/spec"
)

// Generous bounds: the machine running the tests may be small and busy. None of them is
// an assertion on speed; each only keeps a broken run from hanging.
const (
	opTimeout    = 2 * time.Minute  // one CNI verb, one CLI command
	startTimeout = time.Minute      // agent start until its socket answers
	stopTimeout  = time.Minute      // agent exit after SIGTERM
	waitTimeout  = 30 * time.Second // eventual kernel state (a link deleted in the background)
	probeTimeout = 10 * time.Second // one TCP probe
)

// node is a throwaway node namespace (with its uplink to an "outside" namespace) managed
// by a `podnet agent` child process.
type node struct {
	t        *testing.T
	lab      *lab.Lab
	stateDir string
	socket   string
	api      *api.Client

	log lockedBuffer // output of every agent process of this node, in order
	// agentArgs are extra flags for `podnet agent`.
	agentArgs []string

	// The running agent, nil when stopped; only the test goroutine touches these.
	proc   *exec.Cmd
	exited chan struct{}
	starts int
}

// newNode builds a lab and starts an agent managing its node namespace. Everything is
// stopped and removed when the test ends; the agent's output is logged if it failed.
func newNode(t *testing.T) *node {
	t.Helper()
	l := labtest.New(t)
	// A short directory for the socket: sun_path holds 108 bytes, test names are long.
	sockDir, err := os.MkdirTemp("", "pne2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	n := &node{t: t, lab: l, stateDir: t.TempDir(), socket: filepath.Join(sockDir, "podnet.sock")}
	n.api = api.NewClient(n.socket)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output of podnet agent:\n%s", n.log.String())
		}
	})
	n.start()
	t.Cleanup(n.stop)
	return n
}

// nsPath names a namespace this test process holds open, for another process.
func nsPath(ns netns.NsHandle) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}

// start runs `podnet agent` on the node's state dir and socket and waits until it answers.
func (n *node) start() {
	n.t.Helper()
	if n.proc != nil {
		n.t.Fatal("start: agent already running")
	}
	n.starts++
	fmt.Fprintf(&n.log, "===== podnet agent, start #%d =====\n", n.starts)
	cmd := exec.Command(bin.podnet, "agent", "--netns", nsPath(n.lab.Node), "--state-dir", n.stateDir,
		"--socket", n.socket, "--log-level", "debug")
	cmd.Args = append(cmd.Args, n.agentArgs...)
	cmd.Stdout, cmd.Stderr = &n.log, &n.log
	// The agent must not outlive the test process (it would keep the node alive).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start agent: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	n.proc, n.exited = cmd, exited

	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := n.api.Status(ctx)
		cancel()
		if err == nil && st.Ready {
			return
		}
		select {
		case <-exited:
			n.proc = nil
			n.t.Fatalf("agent exited while starting (%v); output:\n%s", cmd.ProcessState, n.log.String())
		default:
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("agent not ready after %s: status %+v, %v", startTimeout, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit. Stopping a stopped agent does nothing.
func (n *node) stop() {
	n.t.Helper()
	if n.proc == nil {
		return
	}
	proc, exited := n.proc, n.exited
	n.proc = nil
	proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		proc.Process.Kill()
		<-exited
		n.t.Errorf("agent (pid %d) still running %s after SIGTERM: killed", proc.Process.Pid, stopTimeout)
		return
	}
	if !proc.ProcessState.Success() {
		n.t.Errorf("agent (pid %d) exited with %v after SIGTERM, want status 0", proc.Process.Pid, proc.ProcessState)
	}
}

// kill sends SIGKILL (a crash) and waits until the process is gone.
func (n *node) kill() {
	n.t.Helper()
	if n.proc == nil {
		n.t.Fatal("kill: agent not running")
	}
	proc, exited := n.proc, n.exited
	n.proc = nil
	proc.Process.Kill()
	<-exited
	fmt.Fprintf(&n.log, "===== SIGKILL =====\n")
}

// links lists the node's interfaces whose name starts with prefix, sorted.
func (n *node) links(t testing.TB, prefix string) []string {
	t.Helper()
	return linkNames(t, n.lab.Node, prefix)
}

// veths lists the host ends of podnet's veth pairs.
func (n *node) veths(t testing.TB) []string {
	t.Helper()
	return n.links(t, spec.VethPrefix)
}

func linkNames(t testing.TB, ns netns.NsHandle, prefix string) []string {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	defer h.Close()
	var links []netlink.Link
	for range 10 {
		if links, err = h.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	var names []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			names = append(names, l.Attrs().Name)
		}
	}
	slices.Sort(names)
	return names
}

// endpoints lists the agent's endpoints of network through the API.
func (n *node) endpoints(t testing.TB, network string) []api.Endpoint {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	eps, err := n.api.Endpoints(ctx, network)
	if err != nil {
		t.Fatalf("list endpoints: %v", err)
	}
	return eps
}

// cliResult is what one run of the podnet CLI produced.
type cliResult struct {
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit status %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// podnet runs the CLI against the node's agent with extra environment variables.
func (n *node) podnet(t testing.TB, env []string, args ...string) cliResult {
	t.Helper()
	return runPodnet(t, n.socket, env, args...)
}

// runPodnet runs the CLI against the agent on socket with extra environment variables.
func runPodnet(t testing.TB, socket string, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.podnet, append([]string{"--socket", socket}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := cliResult{stdout: o.String(), stderr: e.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("podnet %s: %v\n%s", strings.Join(args, " "), err, r)
	}
	return r
}

// mustPodnet runs the CLI and fails the test unless it exits 0.
func (n *node) mustPodnet(t testing.TB, args ...string) cliResult {
	t.Helper()
	r := n.podnet(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("podnet %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// confList renders the network config list a runtime would read from its config dir.
// extra is spliced into the plugin's object (",\"mtu\":1400").
func confList(cniVersion, name, socket string, subnets []string, extra string) []byte {
	q := make([]string, len(subnets))
	for i, s := range subnets {
		q[i] = fmt.Sprintf("%q", s)
	}
	return fmt.Appendf(nil, `{"cniVersion":%q,"name":%q,"plugins":[{"type":"podnet-cni","socket":%q,"subnets":[%s],"capabilities":{"ips":true,"mac":true}%s}]}`,
		cniVersion, name, socket, strings.Join(q, ","), extra)
}

// cniRuntime drives podnet-cni through libcni exactly as podman and containerd do.
type cniRuntime struct {
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

// newRuntime parses conf and makes a libcni runtime with its own result cache that
// finds the plugin in the directory TestMain built it into.
func newRuntime(t *testing.T, conf []byte) *cniRuntime {
	t.Helper()
	return newRuntimeExec(t, conf, nil)
}

// newRuntimeExec is newRuntime with a plugin executor (nil: libcni's default).
func newRuntimeExec(t *testing.T, conf []byte, exec invoke.Exec) *cniRuntime {
	t.Helper()
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		t.Fatalf("libcni cannot parse %s: %v", conf, err)
	}
	r := &cniRuntime{list: list}
	r.cni = libcni.NewCNIConfigWithCacheDir([]string{bin.dir}, t.TempDir(), exec)
	// libcni sets its default executor lazily, unsynchronized: make that happen now,
	// before tests use the runtime from several goroutines.
	if _, err := r.cni.ValidateNetworkList(context.Background(), list); err != nil {
		t.Fatalf("libcni validate: %v", err)
	}
	return r
}

// pod is one sandbox as a runtime sees it.
type pod struct {
	id   string
	ns   netns.NsHandle
	path string
	rt   *libcni.RuntimeConf
	res  *types100.Result // of the last successful ADD
}

// key is the endpoint key the agent files the pod's attachment under.
func (p *pod) key(network string) api.EndpointKey {
	return api.EndpointKey{Network: network, ContainerID: p.id, IfName: p.rt.IfName}
}

// newPod makes a sandbox namespace (removed with the lab) for container id.
func (n *node) newPod(t testing.TB, id string) *pod {
	t.Helper()
	ns, err := n.lab.Sandbox()
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	return podIn(id, ns)
}

// newDoomedPod makes a sandbox the test destroys itself (destroy), as a runtime does
// when a container dies before its network is torn down.
func newDoomedPod(t testing.TB, id string) (*pod, func()) {
	t.Helper()
	ns, err := kernel.NewNS()
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	var once sync.Once
	destroy := func() { once.Do(func() { ns.Close() }) }
	t.Cleanup(destroy)
	return podIn(id, ns), destroy
}

func podIn(id string, ns netns.NsHandle) *pod {
	path := nsPath(ns)
	return &pod{id: id, ns: ns, path: path, rt: &libcni.RuntimeConf{ContainerID: id, NetNS: path, IfName: "eth0"}}
}

// ip returns the pod's address of family 4 or 6 from its last result.
func (p *pod) ip(family int) netip.Addr {
	for _, pr := range resultIPs(p.res) {
		if pr.Addr().Is4() == (family == 4) {
			return pr.Addr()
		}
	}
	return netip.Addr{}
}

func resultIPs(r *types100.Result) []netip.Prefix {
	if r == nil {
		return nil
	}
	var out []netip.Prefix
	for _, ipc := range r.IPs {
		out = append(out, prefixOf(ipc.Address))
	}
	return out
}

func prefixOf(n net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func ctxOp() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// add runs ADD; on success p.res holds the result (converted to CNI 1.1 types).
func (r *cniRuntime) add(p *pod) error {
	res, err := r.addRaw(p)
	if err != nil {
		return err
	}
	if p.res, err = types100.NewResultFromResult(res); err != nil {
		return fmt.Errorf("convert result %v: %w", res, err)
	}
	return nil
}

func (r *cniRuntime) addRaw(p *pod) (types.Result, error) {
	ctx, cancel := ctxOp()
	defer cancel()
	return r.cni.AddNetworkList(ctx, r.list, p.rt)
}

func (r *cniRuntime) mustAdd(t testing.TB, p *pod) {
	t.Helper()
	if err := r.add(p); err != nil {
		t.Fatalf("ADD %s: %v", p.id, err)
	}
}

func (r *cniRuntime) del(p *pod) error {
	ctx, cancel := ctxOp()
	defer cancel()
	return r.cni.DelNetworkList(ctx, r.list, p.rt)
}

func (r *cniRuntime) mustDel(t testing.TB, p *pod) {
	t.Helper()
	if err := r.del(p); err != nil {
		t.Fatalf("DEL %s: %v", p.id, err)
	}
}

func (r *cniRuntime) check(p *pod) error {
	ctx, cancel := ctxOp()
	defer cancel()
	return r.cni.CheckNetworkList(ctx, r.list, p.rt)
}

// gc runs GC keeping the attachments of valid.
func (r *cniRuntime) gc(valid ...*pod) error {
	ctx, cancel := ctxOp()
	defer cancel()
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
	for _, p := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.id, IfName: p.rt.IfName})
	}
	return r.cni.GCNetworkList(ctx, r.list, args)
}

func (r *cniRuntime) status() error {
	ctx, cancel := ctxOp()
	defer cancel()
	return r.cni.GetStatusNetworkList(ctx, r.list)
}

// cniCode is the code of the CNI error err carries, or -1.
func cniCode(err error) int {
	var te *types.Error
	if errors.As(err, &te) {
		return int(te.Code)
	}
	return -1
}

// wantCode fails unless err is a CNI error with code.
func wantCode(t testing.TB, what string, err error, code int) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: success, want CNI error code %d", what, code)
	}
	if got := cniCode(err); got != code {
		t.Fatalf("%s: %v (code %d), want CNI error code %d", what, err, got, code)
	}
}

// eventually polls cond until it returns nil, and fails with its last error after
// waitTimeout.
func eventually(t testing.TB, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", waitTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantVeths waits until the node's podnet veths are exactly the host ends of pods.
func (n *node) wantVeths(t testing.TB, network string, pods ...*pod) {
	t.Helper()
	var want []string
	for _, p := range pods {
		want = append(want, spec.HostVethName(p.key(network)))
	}
	slices.Sort(want)
	eventually(t, func() error {
		if got := n.veths(t); !slices.Equal(got, want) {
			return fmt.Errorf("node veths %q, want %q", got, want)
		}
		return nil
	})
}

// wantEndpoints waits until the agent lists exactly the attachments of pods, attached,
// with the addresses their ADD returned. (DEL answers before the agent has finished
// detaching: a deleted endpoint may be listed as detaching for a moment.)
func (n *node) wantEndpoints(t testing.TB, network string, pods ...*pod) {
	t.Helper()
	eventually(t, func() error { return diffEndpoints(n.endpoints(t, network), network, pods...) })
}

// diffEndpoints describes how eps differs from the attachments of pods (nil: it does not).
func diffEndpoints(eps []api.Endpoint, network string, pods ...*pod) error {
	got := map[string]api.Endpoint{}
	for _, ep := range eps {
		got[ep.ContainerID] = ep
	}
	var problems []string
	for _, p := range pods {
		ep, ok := got[p.id]
		delete(got, p.id)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: not listed", p.id))
		case ep.State != api.StateAttached:
			problems = append(problems, fmt.Sprintf("%s: state %q", p.id, ep.State))
		case p.res != nil && !slices.Equal(ep.IPs, resultIPs(p.res)):
			problems = append(problems, fmt.Sprintf("%s: ips %v, ADD returned %v", p.id, ep.IPs, resultIPs(p.res)))
		case ep.Network != network || ep.IfName != p.rt.IfName:
			problems = append(problems, fmt.Sprintf("%s: listed as %s", p.id, ep.EndpointKey))
		}
	}
	for id, ep := range got {
		problems = append(problems, fmt.Sprintf("%s: listed (%s, %v, %s) but not expected", id, ep.EndpointKey, ep.IPs, ep.State))
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("endpoints of %q:\n  %s", network, strings.Join(problems, "\n  "))
	}
	return nil
}

// sandboxLinks lists the interfaces of a pod's namespace.
func sandboxLinks(t testing.TB, p *pod) []string {
	t.Helper()
	return linkNames(t, p.ns, "")
}

// wantBare waits until a sandbox holds nothing but lo (its veth end is gone).
func wantBare(t testing.TB, p *pod) {
	t.Helper()
	eventually(t, func() error {
		if got := sandboxLinks(t, p); !slices.Equal(got, []string{"lo"}) {
			return fmt.Errorf("sandbox %s has interfaces %q, want only lo", p.id, got)
		}
		return nil
	})
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
