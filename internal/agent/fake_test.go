package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/kernel/kerneltest"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/nft/nfttest"
	"github.com/podnet/podnet/internal/portproxy/portproxytest"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/storetest"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The tests in this file run the agent on fake appliers (kerneltest, nfttest,
// portproxytest) and an in-memory store, without root. Every change the agent asks of
// the appliers is a line of a transcript; each scenario compares its transcript with a
// golden file in testdata/transcripts (go test -run Transcript -update rewrites them),
// the way one reads a log of what the agent did to the node.

var updateGolden = flag.Bool("update", false, "rewrite the golden transcripts in testdata/transcripts")

// fakeNow is the clock of the fake agents: records get this creation time.
var fakeNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// transcript collects lines; it can stop the world at its n-th change (a crash).
type transcript struct {
	mu    sync.Mutex
	lines []string
	// changes counts the changes asked of the appliers; at crashAt (when > 0), crash is
	// called with the line, and the caller never returns (the agent froze there).
	changes int
	crashAt int
	crash   func(line string)
	frozen  chan struct{} // closed when the test ends: frozen calls return then
	dead    bool          // crashed: later changes of the same agent are not recorded
}

func (tr *transcript) note(format string, args ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.lines = append(tr.lines, fmt.Sprintf(format, args...))
}

// record is the appliers' Record: one change.
func (tr *transcript) record(line string) {
	tr.mu.Lock()
	if tr.dead {
		tr.mu.Unlock()
		<-tr.frozen
		return
	}
	tr.changes++
	if tr.crashAt > 0 && tr.changes == tr.crashAt {
		tr.dead = true
		tr.lines = append(tr.lines, "  CRASH before: "+line)
		crash := tr.crash
		tr.mu.Unlock()
		crash(line)
		<-tr.frozen
		return
	}
	tr.lines = append(tr.lines, "  "+line)
	tr.mu.Unlock()
}

func (tr *transcript) text() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return strings.Join(tr.lines, "\n") + "\n"
}

// fakeNode is what survives an agent: the store and the kernel's state (nftables
// tables included). Port proxies die with the agent's process.
type fakeNode struct {
	store  *storetest.Memory
	kernel *kerneltest.Fake
	tables *nfttest.Fake
}

func newFakeNode() fakeNode {
	k := kerneltest.New(spec.NodeRoute{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth0"},
		spec.NodeRoute{Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "eth0"})
	k.AddNodePath("/proc/1/ns/net")
	for _, s := range []string{"c1", "c2", "c3", "c4"} {
		k.AddSandbox("/run/netns/" + s)
	}
	return fakeNode{store: storetest.NewMemory(), kernel: k, tables: &nfttest.Fake{}}
}

// clone is the node as a restart after a crash finds it.
func (n fakeNode) clone() fakeNode {
	return fakeNode{store: n.store.Clone(), kernel: n.kernel.Clone(), tables: n.tables.Clone()}
}

// fakeAgent is an agent on a fakeNode.
type fakeAgent struct {
	*Agent
	node  fakeNode
	proxy *portproxytest.Fake
	tr    *transcript
}

// startFake starts an agent on node, recording into tr. The agent is closed when the
// test ends unless it crashed.
func startFake(t *testing.T, node fakeNode, tr *transcript) *fakeAgent {
	t.Helper()
	return startFakeOn(t, node, tr, node.store)
}

// startFakeOn is startFake with the agent on st, a store that wraps the node's.
func startFakeOn(t *testing.T, node fakeNode, tr *transcript, st store.Store) *fakeAgent {
	t.Helper()
	proxy := &portproxytest.Fake{Record: tr.record}
	node.kernel.Record, node.tables.Record = tr.record, tr.record
	a, err := New(Config{Store: st, Kernel: node.kernel, Tables: node.tables, Proxy: proxy,
		Now: func() time.Time { return fakeNow }, ReconcileInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), DNS: DNSConfig{Disable: true}})
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	return &fakeAgent{Agent: a, node: node, proxy: proxy, tr: tr}
}

// newTranscript returns a transcript whose frozen calls return when t ends.
func newTranscript(t *testing.T) *transcript {
	tr := &transcript{frozen: make(chan struct{})}
	t.Cleanup(func() { close(tr.frozen) })
	return tr
}

// idle waits until the detach worker has finished every detach DEL queued, and ADD has
// recorded its endpoints as attached.
func (fa *fakeAgent) idle() error {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		fa.pendingMu.Lock()
		n := len(fa.pending)
		fa.pendingMu.Unlock()
		if n == 0 {
			fa.marking.Wait() // and ADD's off-path marking of endpoints as attached
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d detaches still pending", n)
		}
	}
}

func attachReq(network, id string, ports ...api.PortMapping) api.AttachRequest {
	return api.AttachRequest{EndpointKey: api.EndpointKey{Network: network, ContainerID: id, IfName: "eth0"},
		Netns: "/run/netns/" + id, Name: id, Ports: ports}
}

func key(network, id string) api.EndpointKey {
	return api.EndpointKey{Network: network, ContainerID: id, IfName: "eth0"}
}

// outcome prints a request's result: its addresses, or its error and code.
func outcome(res any, err error) string {
	if err != nil {
		return fmt.Sprintf("< error %d: %v", api.ErrorCode(err), err)
	}
	switch r := res.(type) {
	case api.Result:
		var ips []string
		for _, ip := range r.IPs {
			ips = append(ips, ip.Address.String())
		}
		return "< " + strings.Join(ips, " ")
	case api.Network:
		return "< network " + r.Name
	case api.GCResponse:
		var keys []string
		for _, k := range r.Released {
			keys = append(keys, k.String())
		}
		return "< released [" + strings.Join(keys, " ") + "]"
	}
	return "< ok"
}

// step runs one request and notes it, with its outcome, in the transcript. (It and the
// request helpers below take no *testing.T: a crashed agent's request goroutine may go on
// after its test ended.)
func (fa *fakeAgent) step(what string, fn func() (any, error)) error {
	fa.tr.note("> %s", what)
	res, err := fn()
	fa.tr.note("%s", outcome(res, err))
	return err
}

func (fa *fakeAgent) createNetwork(t *testing.T, s api.NetworkSpec) {
	t.Helper()
	if err := fa.step("create network "+s.Name, func() (any, error) { return fa.CreateNetwork(s) }); err != nil {
		t.Fatal(err)
	}
}

func (fa *fakeAgent) add(req api.AttachRequest) error {
	return fa.step("ADD "+req.EndpointKey.String(), func() (any, error) { return fa.Attach(req, -1) })
}

// del runs a DEL and waits for its detach worker's part: the outcome is noted after
// both, so that the transcript does not depend on which goroutine runs first.
func (fa *fakeAgent) del(k api.EndpointKey) error {
	return fa.step("DEL "+k.String()+", then its detach worker", func() (any, error) {
		return nil, errors.Join(fa.Detach(api.DetachRequest{EndpointKey: k}), fa.idle())
	})
}

func (fa *fakeAgent) reconcile(t *testing.T, what string) {
	t.Helper()
	if err := fa.step("reconcile ("+what+")", func() (any, error) { return nil, fa.Reconcile(false) }); err != nil {
		t.Fatal(err)
	}
}

// checkConsistent asserts what a crash or drift must never leave once the agent has
// reconciled: a host veth without an attached endpoint or the reverse, an address
// without an endpoint, nftables tables other than the store says.
func checkConsistent(t *testing.T, fa *fakeAgent) {
	t.Helper()
	if err := fa.idle(); err != nil {
		t.Fatal(err)
	}
	var eps []api.Endpoint
	allocs := map[string]map[netip.Addr]string{}
	err := fa.node.store.View(func(tx store.Tx) error {
		var err error
		if eps, err = tx.Endpoints(""); err != nil {
			return err
		}
		nets, err := tx.Networks()
		if err != nil {
			return err
		}
		for _, n := range nets {
			if allocs[n.Name], err = tx.Allocations(n.Name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var recorded []string
	owners := map[string]bool{}
	for _, ep := range eps {
		if ep.State != api.StateAttached {
			t.Errorf("endpoint %s is %s after reconcile", ep.EndpointKey, ep.State)
		}
		recorded = append(recorded, ep.HostIf)
		owners[ep.EndpointKey.String()] = true
	}
	slices.Sort(recorded)
	if veths := fa.node.kernel.Veths(); !slices.Equal(veths, recorded) {
		t.Errorf("host veths %v, endpoints' %v", veths, recorded)
	}
	for network, as := range allocs {
		for addr, owner := range as {
			if !owners[owner] {
				t.Errorf("network %s: address %s held by %s, which has no endpoint", network, addr, owner)
			}
		}
	}
	want, err := fa.desiredRuleset()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := fa.node.tables.InSync(want); err != nil || !ok {
		t.Errorf("nftables tables differ from the store (err %v):\n%s", err, fa.node.tables.Dump())
	}
}

// compareGolden compares got with testdata/transcripts/name, or rewrites it with -update.
func compareGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "transcripts", name)
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("transcript differs from %s (go test -run %s -update rewrites it)\n--- got\n%s--- want\n%s", path, t.Name(), got, want)
	}
}

var (
	blueSpec  = api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00:88:1::/64"}}
	greenSpec = api.NetworkSpec{Name: "green", Driver: api.DriverRouted, Subnets: []string{"10.88.2.0/24"}}
	proxySpec = api.NetworkSpec{Name: "px", Subnets: []string{"10.88.3.0/24"}, PortMode: api.PortModeProxy}
	web       = api.PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}
	web2      = api.PortMapping{HostPort: 8081, ContainerPort: 80, Protocol: "tcp"}
	dnsPort   = api.PortMapping{HostPort: 5353, ContainerPort: 53, Protocol: "udp"}
)

// TestTranscriptLifecycle: what the agent asks of the kernel, nftables and the proxies for
// networks of each driver and port mode, ADD, CHECK, DEL and GC, and refusals that
// change nothing.
func TestTranscriptLifecycle(t *testing.T) {
	tr := newTranscript(t)
	fa := startFake(t, newFakeNode(), tr)
	defer fa.Close()

	fa.createNetwork(t, blueSpec)
	fa.createNetwork(t, greenSpec)
	fa.createNetwork(t, proxySpec)
	for _, req := range []api.AttachRequest{attachReq("blue", "c1"), attachReq("blue", "c2", web, dnsPort),
		attachReq("green", "c3"), attachReq("px", "c4", web2)} {
		if err := fa.add(req); err != nil {
			t.Fatal(err)
		}
	}
	checkConsistent(t, fa)
	fa.step("CHECK blue/c2/eth0", func() (any, error) {
		return nil, fa.Check(api.CheckRequest{EndpointKey: key("blue", "c2"), Netns: "/run/netns/c2"}, -1)
	})

	// Refusals: nothing is asked of the appliers.
	busy := attachReq("blue", "c3", web)
	busy.EndpointKey.IfName = "eth1"
	fa.add(busy) // port taken by c2
	node := attachReq("blue", "c1")
	node.Netns, node.EndpointKey.IfName = "/proc/1/ns/net", "eth1"
	fa.add(node)
	fa.node.kernel.Hold("tcp", 9090, kernel.Holder{PID: 4242, Command: "sshd", Local: netip.MustParseAddrPort("0.0.0.0:9090")})
	fa.add(api.AttachRequest{EndpointKey: api.EndpointKey{Network: "blue", ContainerID: "c3", IfName: "eth2"},
		Netns: "/run/netns/c3", Ports: []api.PortMapping{{HostPort: 9090, ContainerPort: 90, Protocol: "tcp"}}})
	fa.step("create network overlapping", func() (any, error) {
		return fa.CreateNetwork(api.NetworkSpec{Name: "wide", Subnets: []string{"10.88.0.0/16"}})
	})
	fa.step("delete network blue (busy)", func() (any, error) { return nil, fa.DeleteNetwork("blue") })
	checkConsistent(t, fa)

	for _, k := range []api.EndpointKey{key("blue", "c1"), key("blue", "c2"), key("px", "c4")} {
		if err := fa.del(k); err != nil {
			t.Fatal(err)
		}
	}
	fa.step("GC green, none valid", func() (any, error) { return fa.GC(api.GCRequest{Network: "green"}) })
	for _, n := range []string{"blue", "green", "px"} {
		if err := fa.step("delete network "+n, func() (any, error) { return nil, fa.DeleteNetwork(n) }); err != nil {
			t.Fatal(err)
		}
	}
	checkConsistent(t, fa)
	if s := fa.node.kernel.State(); s != "" {
		t.Errorf("kernel state left:\n%s", s)
	}
	compareGolden(t, "lifecycle.txt", tr.text())
}

// TestTranscriptReconcile: each kind of drift and what reconcile asks of the appliers to
// repair it; without drift, nothing.
func TestTranscriptReconcile(t *testing.T) {
	tr := newTranscript(t)
	fa := startFake(t, newFakeNode(), tr)
	defer fa.Close()
	fa.createNetwork(t, blueSpec)
	fa.createNetwork(t, greenSpec)
	for _, req := range []api.AttachRequest{attachReq("blue", "c1"), attachReq("blue", "c2"), attachReq("green", "c3")} {
		if err := fa.add(req); err != nil {
			t.Fatal(err)
		}
	}
	checkConsistent(t, fa)
	k := fa.node.kernel

	fa.reconcile(t, "no drift")
	k.DeleteLinkBehind("pn-blue")
	fa.reconcile(t, "bridge pn-blue deleted by hand")
	k.Drift(spec.HostVethName(key("green", "c3")), "node route 10.88.2.2/32", "proxy_arp")
	fa.reconcile(t, "routed host veth lost its route and proxy_arp")
	k.RemoveSandbox("/run/netns/c2")
	fa.reconcile(t, "sandbox c2 gone with its veth")
	k.AddVethBehind("pnv00000000000")
	fa.reconcile(t, "orphan veth")
	fa.node.tables.Break()
	fa.reconcile(t, "nftables tables changed by hand")
	fa.reconcile(t, "no drift")
	checkConsistent(t, fa)
	compareGolden(t, "reconcile.txt", tr.text())
}

// crashRun runs scenario on a fresh node and crashes the agent at its n-th change to
// the appliers (counting from the start of scenario), then restarts it on what the crash
// left; it returns the restarted agent, or nil when scenario made fewer than n changes.
func crashRun(t *testing.T, tr *transcript, setup, scenario func(*fakeAgent) error, n int) *fakeAgent {
	t.Helper()
	node := newFakeNode()
	fa := startFake(t, node, tr)
	if err := errors.Join(setup(fa), fa.idle()); err != nil {
		t.Fatal(err)
	}
	crashed := make(chan fakeNode, 1)
	tr.mu.Lock()
	tr.crashAt, tr.crash = tr.changes+n, func(string) { crashed <- node.clone() }
	tr.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- errors.Join(scenario(fa), fa.idle()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("scenario without a crash: %v", err)
		}
		fa.Close()
		return nil
	case left := <-crashed:
		// The crashed agent stays frozen; a new one starts on what it left.
		next := &transcript{frozen: tr.frozen, lines: tr.lines}
		tr.mu.Lock()
		next.lines = slices.Clone(tr.lines)
		tr.mu.Unlock()
		next.note("> restart")
		return startFake(t, left, next)
	}
}

// testCrashes crashes the agent at every change scenario makes, restarts it, checks that
// the restart left the node consistent and that the scenario's request works when asked
// again, and compares the whole transcript with golden.
func testCrashes(t *testing.T, golden string, setup, scenario, retry func(*fakeAgent) error) {
	var all strings.Builder
	for n := 1; ; n++ {
		tr := newTranscript(t)
		fa := crashRun(t, tr, setup, func(fa *fakeAgent) error {
			tr.note("> crash at change %d", n)
			return scenario(fa)
		}, n)
		if fa == nil {
			if n == 1 {
				t.Fatal("the scenario changes nothing")
			}
			break
		}
		checkConsistent(t, fa)
		if err := errors.Join(retry(fa), fa.idle()); err != nil {
			t.Errorf("crash at change %d: retry after restart: %v", n, err)
		}
		checkConsistent(t, fa)
		fa.Close()
		text := fa.tr.text()
		all.WriteString(text[strings.Index(text, "> crash at"):] + "\n")
	}
	compareGolden(t, golden, all.String())
}

func setupBlue(fa *fakeAgent) error {
	if _, err := fa.CreateNetwork(blueSpec); err != nil {
		return err
	}
	_, err := fa.Attach(attachReq("blue", "c1"), -1)
	return err
}

// TestTranscriptCrashDuringAttach: an agent killed at any step of an ADD (with a
// published port) leaves nothing a restart does not clean up, and the ADD works again.
func TestTranscriptCrashDuringAttach(t *testing.T) {
	req := attachReq("blue", "c2", web)
	testCrashes(t, "crash-attach.txt", setupBlue,
		func(fa *fakeAgent) error { return fa.add(req) },
		func(fa *fakeAgent) error {
			// The runtime saw the ADD fail (or never answered): it sends DEL, then ADD.
			if err := fa.del(req.EndpointKey); err != nil {
				return err
			}
			return fa.add(req)
		})
}

// TestTranscriptCrashDuringDetach: an agent killed at any step of a DEL (its reply, or
// the detach worker's part after it) finishes the detach at restart; the DEL answers
// again, and the address is free.
func TestTranscriptCrashDuringDetach(t *testing.T) {
	setup := func(fa *fakeAgent) error {
		if err := setupBlue(fa); err != nil {
			return err
		}
		_, err := fa.Attach(attachReq("blue", "c2", web), -1)
		return err
	}
	testCrashes(t, "crash-detach.txt", setup,
		func(fa *fakeAgent) error { return fa.del(key("blue", "c2")) },
		func(fa *fakeAgent) error {
			if err := fa.del(key("blue", "c2")); err != nil {
				return err
			}
			return fa.add(attachReq("blue", "c2", web))
		})
}

// TestTranscriptCrashDuringNetworkCreate: a network cut off mid-creation is completed at
// restart (its record was committed first) and can be deleted.
func TestTranscriptCrashDuringNetworkCreate(t *testing.T) {
	testCrashes(t, "crash-network.txt", func(*fakeAgent) error { return nil },
		func(fa *fakeAgent) error {
			return fa.step("create network blue", func() (any, error) { return fa.CreateNetwork(blueSpec) })
		},
		func(fa *fakeAgent) error {
			if _, err := fa.Network("blue"); err != nil {
				_, err = fa.CreateNetwork(blueSpec)
				return err
			}
			return fa.add(attachReq("blue", "c1"))
		})
}

// TestReconcileKeepsEndpointAttachedMeanwhile: an attach that completes after reconcile
// listed the veths, and before it read the records, leaves an attached record whose
// veth the list lacks; reconcile must not take it for an endpoint whose interface is gone.
func TestReconcileKeepsEndpointAttachedMeanwhile(t *testing.T) {
	fa := startFake(t, newFakeNode(), newTranscript(t))
	defer fa.Close()
	fa.createNetwork(t, blueSpec)
	var addErr error
	fa.node.kernel.AfterLinksOnce(func() {
		addErr = fa.add(attachReq("blue", "c1"))
		fa.marking.Wait() // recorded as attached too
	})
	if err := fa.Reconcile(false); err != nil {
		t.Fatal(err)
	}
	if addErr != nil {
		t.Fatal(addErr)
	}
	eps, err := fa.Endpoints("blue")
	if err != nil || len(eps) != 1 {
		t.Fatalf("endpoints after reconcile: %v, %v; want c1's", eps, err)
	}
	if links, _ := fa.node.kernel.LinksWithPrefix(eps[0].HostIf); links[eps[0].HostIf] == 0 {
		t.Errorf("reconcile removed c1's veth %s", eps[0].HostIf)
	}
	checkConsistent(t, fa)
}

// TestReconcileSkipsUnchangedTables: once a reconcile found the tables equal to the
// store (or rewrote them, and nothing else committed), later reconciles compare nothing
// until a change is committed; a change by hand, or an update that failed, makes the
// next reconcile compare (and repair) again.
func TestReconcileSkipsUnchangedTables(t *testing.T) {
	tr := newTranscript(t)
	fa := startFake(t, newFakeNode(), tr)
	defer fa.Close()
	fa.createNetwork(t, blueSpec)
	if err := fa.add(attachReq("blue", "c1")); err != nil {
		t.Fatal(err)
	}
	tables := fa.node.tables
	compares := func(what string, want int) {
		t.Helper()
		before := tables.InSyncs()
		if err := fa.Reconcile(false); err != nil {
			t.Fatal(err)
		}
		if got := tables.InSyncs() - before; got != want {
			t.Errorf("%s: reconcile compared the tables %d times, want %d", what, got, want)
		}
	}
	compares("after ADD", 1)
	compares("nothing changed", 0)
	compares("nothing changed, again", 0)
	if err := fa.add(attachReq("blue", "c2")); err != nil {
		t.Fatal(err)
	}
	compares("after an update", 1)
	compares("nothing changed", 0)

	tables.Break()
	compares("tables changed by hand", 2) // the comparison, and again under dpMu before the rewrite
	if ok, _ := tables.InSync(mustDesired(t, fa)); !ok {
		t.Fatal("reconcile did not restore the tables")
	}
	compares("after the repair", 0) // the rewrite was the only commit: the tables are what it wrote
	compares("nothing changed", 0)

	tables.SetErr(kerneltest.ErrInjected)
	fa.add(attachReq("blue", "c3")) // fails in nftables, rolled back
	tables.SetErr(nil)
	compares("after a failed update", 1)
	checkConsistent(t, fa)
}

func mustDesired(t *testing.T, fa *fakeAgent) nft.Ruleset {
	t.Helper()
	r, err := fa.desiredRuleset()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestMetrics: requests through the API are counted by verb and code, the store's
// contents and reconcile's repairs show in a scrape, in the Prometheus text format.
func TestMetrics(t *testing.T) {
	tr := newTranscript(t)
	fa := startFake(t, newFakeNode(), tr)
	defer fa.Close()
	h := fa.Handler()
	post := func(path string, body any) int {
		t.Helper()
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", path, bytes.NewReader(b)))
		return rec.Code
	}
	if code := post(api.PathNetworks, blueSpec); code != 200 {
		t.Fatalf("create network: HTTP %d", code)
	}
	if code := post(api.PathEndpoints, attachReq("blue", "c1", web)); code != 200 {
		t.Fatalf("ADD: HTTP %d", code)
	}
	node := attachReq("blue", "c2")
	node.Netns = "/proc/1/ns/net"
	if code := post(api.PathEndpoints, node); code != 400 {
		t.Fatalf("ADD in the node's namespace: HTTP %d, want 400", code)
	}
	fa.node.kernel.AddVethBehind("pnv00000000000")
	if err := fa.Reconcile(false); err != nil {
		t.Fatal(err)
	}

	if err := fa.idle(); err != nil { // the ADD's record is marked attached off the reply path
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	fa.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f, ok := families[name]
		if !ok {
			t.Fatalf("metric %s missing", name)
		}
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("metric %s%v missing", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"podnet_requests_total", map[string]string{"verb": "add", "code": "0"}, 1},
		{"podnet_requests_total", map[string]string{"verb": "add", "code": "4"}, 1},
		{"podnet_requests_total", map[string]string{"verb": "network_create", "code": "0"}, 1},
		{"podnet_request_duration_seconds", map[string]string{"verb": "add"}, 2},
		{"podnet_endpoints", map[string]string{"network": "blue", "state": "attached"}, 1},
		{"podnet_endpoints", map[string]string{"network": "blue", "state": "detaching"}, 0},
		{"podnet_pool_addresses", map[string]string{"subnet": "10.88.1.0/24"}, 253},
		{"podnet_pool_allocated_addresses", map[string]string{"subnet": "10.88.1.0/24"}, 1},
		{"podnet_repairs_total", map[string]string{"kind": "orphan-veth"}, 1},
		{"podnet_reconcile_runs_total", map[string]string{"result": "ok"}, 2}, // at start, and the one above
		{"podnet_nftables_duration_seconds", map[string]string{"op": "update"}, 2},
		{"podnet_conntrack_entries_limit", nil, 65536},
	} {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestAttachKernelFailureRollsBack: an ADD whose kernel work fails at either step of the
// endpoint answers with the error and leaves nothing: no veth, no record, no address, no
// nftables element; the same ADD then works.
func TestAttachKernelFailureRollsBack(t *testing.T) {
	for _, step := range []string{"AddEndpoint", "AddEndpoint.up"} {
		t.Run(step, func(t *testing.T) {
			tr := newTranscript(t)
			fa := startFake(t, newFakeNode(), tr)
			defer fa.Close()
			fa.createNetwork(t, blueSpec)
			req := attachReq("blue", "c1", web)
			fa.node.kernel.FailNext(step, kerneltest.ErrInjected)
			err := fa.add(req)
			if !errors.Is(err, kerneltest.ErrInjected) || api.ErrorCode(err) != api.CodeInternal {
				t.Fatalf("ADD with %s failing = %v (code %d), want the injected error, code %d", step, err, api.ErrorCode(err), api.CodeInternal)
			}
			if s := fa.node.kernel.State(); strings.Contains(s, "veth") {
				t.Errorf("kernel after the failed ADD:\n%s", s)
			}
			if eps, err := fa.Endpoints("blue"); err != nil || len(eps) != 0 {
				t.Errorf("endpoints after the failed ADD: %v, %v", eps, err)
			}
			checkConsistent(t, fa)
			if err := fa.add(req); err != nil {
				t.Fatalf("ADD again: %v", err)
			}
			checkConsistent(t, fa)
		})
	}
}
