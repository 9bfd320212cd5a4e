package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/nftwire"
	"github.com/podnet/podnet/internal/testutil"
)

// The policy section: what network policies cost as the node's pods grow in number.
//
// Three testbeds side by side, each a `podnet agent` on its node namespace (embedded
// store) with the same bridge networks (polPerNetwork endpoints each: see there), the
// routed network pol-routed and namespaces ns-0..ns-9 labelled team=team-<k>: "none"
// and "few" have polFew endpoints on the bridge networks, "many" -policy-endpoints, and
// each has two more on pol-routed; "few" and "many" hold the same 100 policies, "none"
// none. The endpoints are attached before the policies are applied. The first six are
// the probes: on bridge network 0 web (ns-0, app=web, listening on ports 80, 8443 and
// 8081), frontend and admin (ns-1, role=frontend and role=admin) and mover (ns-1,
// role=other); on pol-routed web-r and frontend-r, namespaces and labels as web's and
// frontend's (the same policies select them; web-r listens on port 80). The others are
// the bridge networks' fillers: pod-<j> (j = 4, 5, ...) in ns-<j mod 10>,
// app=app-<j mod 100>, role=role-<j mod 7>.
//
// The 100 policies (polPolicies): web-frontend (web from frontend pods of team-1 on 80),
// web-monitoring (web from monitor pods of team-2 on 9090), web-admin (web from admin
// pods of team-1 on 8444), frontend-egress (frontend pods to web pods of team-0 on 80,
// Egress), and 96 fillers pol-<j> (ns-<j mod 10>: app-<j> from role-<j mod 7> pods of
// team-<j+1 mod 10> on 10000+j). With 5,000 endpoints each filler selects 50 pods and
// admits about 70; each peer is a namespaceSelector and a podSelector.
//
// Measured:
//   - the rules, sets and set elements of podnet's tables in each testbed (nftwire dumps);
//   - TCP connect latency frontend -> web:80 over the bridge and frontend-r -> web-r:80
//     over pol-routed (allowed by web-frontend and frontend-egress) in the three
//     testbeds, one connect of each pair in each testbed in random order per round. The
//     agents run without the eBPF fast path (--fast-path=false), which would carry the
//     connects of "none" around the bridge, the hooks and conntrack. In "none" the
//     bridged connect skips conntrack (podnet leaves traffic within a bridge untracked
//     while no policy isolates either pod), in "few" and "many" it is tracked; the
//     routed one is tracked in every testbed (the node routes it). So the routed ratio
//     to "none" is the policies' own cost, the bridged one the policies' and
//     conntrack's;
//   - how long until traffic follows a change (a prober connects every polInterval, each
//     connect waiting polConnectWait at most: the start of the first connect from which
//     on every outcome is the new one), for three changes made and undone in "few" and
//     "many", the rounds alternating the two: web-admin's port 8444 -> 8443 and back
//     (same rule shape: an element update), policy web-extra (admin to web on 8081)
//     applied and removed (the policy chains' rules and the policy's sets change), and
//     mover relabelled role=other -> frontend and back (set elements).

const (
	polFew        = 10
	polNamespaces = 10
	// polPerNetwork is the endpoints of one bridge network. A broadcast (ARP) is flooded
	// to every port of a bridge from one softirq, each copy queued to the CPU's backlog,
	// and net.core.netdev_max_backlog (1000 by default, for the whole machine) drops the
	// rest: on a bridge of 1,000 ports the pods flooded last (the first attached) never
	// see an ARP request, and nobody can reach them.
	polPerNetwork  = 500
	polMaxNetworks = 60   // 10.100.0.0/22, 10.100.4.0/22, ...
	polFillWorkers = 4    // attaches at once while filling a testbed
	polFillLap     = 1000 // endpoints per progress line of a fill
	// polInterval is the prober's pace, polConnectWait how long a connect waits for an
	// answer before it counts as dropped (less than the first SYN retransmission, 1 s).
	polInterval    = time.Millisecond
	polConnectWait = 200 * time.Millisecond
	polConfirm     = 20               // outcomes in a row that confirm a flip
	polFollowWait  = 15 * time.Second // a change traffic has not followed by then failed
	polSocketBatch = 256              // client sockets made per namespace switch
	polWarmup      = 50               // rounds of connects before the timed ones
	polMaxFailed   = 20               // failed samples of one row that end its rounds
	polFollowTgt   = 1.2              // time until traffic follows, many / few endpoints
	polPacketTgt   = 1.1              // connect median with 100 policies / with none, same driver
)

// Probe pods and ports. The probes are the first endpoints of a testbed: four on bridge
// network 0, then two on the routed network; the routed ones are not counted in the
// testbed's endpoints (polBed.endpoints counts the bridge networks' endpoints).
const (
	polWeb, polFrontend, polAdmin, polMover = 0, 1, 2, 3
	polWebRouted, polFrontendRouted         = 4, 5
	polProbes                               = 6
	polRoutedProbes                         = 2
	polPortWeb                              = 80
	polPortAdmin                            = 8443
	polPortAdminOff                         = 8444
	polPortExtra                            = 8081
)

// polBedNames are the testbeds in creation order.
var polBedNames = []string{"none", "few", "many"}

// polChange is a change made then undone (two rows of the table).
type polChange struct {
	name         string
	path         string // what the agent does: "set elements" or "policy rules and sets"
	client, port int    // the probe that connects, to web on port
	do, undo     string // row labels
	apply        func(c *api.Client, undo bool) func(context.Context) error
}

var polChanges = []polChange{
	{name: "port", path: "set elements", client: polAdmin, port: polPortAdmin,
		do:   fmt.Sprintf("policy apply: web-admin's port %d -> %d (same rule shape)", polPortAdminOff, polPortAdmin),
		undo: fmt.Sprintf("policy apply: web-admin's port %d -> %d", polPortAdmin, polPortAdminOff),
		apply: func(c *api.Client, undo bool) func(context.Context) error {
			var port uint16 = polPortAdmin
			if undo {
				port = polPortAdminOff
			}
			return func(ctx context.Context) error {
				_, err := c.ApplyPolicies(ctx, []api.NetworkPolicy{polWebAdmin(port)})
				return err
			}
		}},
	{name: "policy", path: "policy rules and sets", client: polAdmin, port: polPortExtra,
		do:   "policy apply: one more policy, web-extra",
		undo: "policy rm web-extra",
		apply: func(c *api.Client, undo bool) func(context.Context) error {
			if undo {
				return func(ctx context.Context) error { return c.DeletePolicy(ctx, "ns-0", "web-extra") }
			}
			return func(ctx context.Context) error {
				_, err := c.ApplyPolicies(ctx, []api.NetworkPolicy{testutil.IngressPolicy("ns-0", "web-extra", "web", 1, "admin", polPortExtra)})
				return err
			}
		}},
	{name: "label", path: "set elements", client: polMover, port: polPortWeb,
		do:   "label change: mover role=other -> frontend (into web-frontend's peers)",
		undo: "label change: mover role=frontend -> other",
		apply: func(c *api.Client, undo bool) func(context.Context) error {
			role := "frontend"
			if undo {
				role = "other"
			}
			return func(ctx context.Context) error {
				_, err := c.SetLabels(ctx, api.LabelsRequest{EndpointKey: polKey(polMover, 0), Labels: map[string]string{"role": role}})
				return err
			}
		}},
}

// polNetworksFor is how many bridge networks hold n endpoints; every testbed has as many.
func polNetworksFor(n int) int {
	return (n + polPerNetwork - 1) / polPerNetwork
}

// polRoutedNet is polNetwork's and polPod's index of the routed network, the bridge
// networks being 0, 1, ...
const polRoutedNet = -1

// polNetwork is bridge network k, or the routed network for polRoutedNet.
func polNetwork(k int) api.NetworkSpec {
	if k == polRoutedNet {
		return api.NetworkSpec{Name: "pol-routed", Driver: api.DriverRouted, Subnets: []string{"10.101.0.0/24"}}
	}
	return api.NetworkSpec{Name: fmt.Sprintf("pol-%d", k), Driver: api.DriverBridge,
		Subnets: []string{fmt.Sprintf("10.100.%d.0/22", 4*k)}}
}

// polPod is endpoint i (sandbox i) of a testbed of networks bridge networks: its
// network (polRoutedNet for the routed probes), name, namespace and labels.
func polPod(i, networks int) (network int, name, namespace string, labels map[string]string) {
	switch i {
	case polWeb:
		return 0, "web", "ns-0", map[string]string{"app": "web"}
	case polFrontend:
		return 0, "frontend", "ns-1", map[string]string{"role": "frontend"}
	case polAdmin:
		return 0, "admin", "ns-1", map[string]string{"role": "admin"}
	case polMover:
		return 0, "mover", "ns-1", map[string]string{"role": "other"}
	case polWebRouted:
		return polRoutedNet, "web-r", "ns-0", map[string]string{"app": "web"}
	case polFrontendRouted:
		return polRoutedNet, "frontend-r", "ns-1", map[string]string{"role": "frontend"}
	}
	// The fillers are numbered on from the bridge probes, as if the routed ones were not
	// there: pod-4, pod-5, ... (so a filler policy selects endpoints/100 of them).
	j := i - polRoutedProbes
	return j % networks, fmt.Sprintf("pod-%d", j), fmt.Sprintf("ns-%d", j%polNamespaces),
		map[string]string{"app": fmt.Sprintf("app-%d", j%100), "role": fmt.Sprintf("role-%d", j%7)}
}

// polKey is the attachment of endpoint i (its container ID is its index) to network k.
func polKey(i, k int) api.EndpointKey {
	return api.EndpointKey{Network: polNetwork(k).Name, ContainerID: fmt.Sprintf("pol%08d", i), IfName: "eth0"}
}

// polWebAdmin is policy web-admin allowing admin pods on port.
func polWebAdmin(port uint16) api.NetworkPolicy {
	return testutil.IngressPolicy("ns-0", "web-admin", "web", 1, "admin", port)
}

// polPolicies are the 100 policies of the testbeds "few" and "many".
func polPolicies() []api.NetworkPolicy {
	pols := []api.NetworkPolicy{
		testutil.IngressPolicy("ns-0", "web-frontend", "web", 1, "frontend", polPortWeb),
		testutil.IngressPolicy("ns-0", "web-monitoring", "web", 2, "monitor", 9090),
		polWebAdmin(polPortAdminOff),
		{Namespace: "ns-1", Name: "frontend-egress", Spec: api.NetworkPolicySpec{
			PodSelector: api.LabelSelector{MatchLabels: map[string]string{"role": "frontend"}},
			PolicyTypes: []string{api.PolicyEgress},
			Egress: []api.NetworkPolicyRule{{
				Peers: []api.NetworkPolicyPeer{{
					NamespaceSelector: &api.LabelSelector{MatchLabels: map[string]string{"team": "team-0"}},
					PodSelector:       &api.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				}},
				Ports: []api.NetworkPolicyPort{{Protocol: "TCP", Port: &api.PortValue{Number: polPortWeb}}},
			}},
		}},
	}
	for j := len(pols); j < 100; j++ {
		pols = append(pols, testutil.IngressPolicy(fmt.Sprintf("ns-%d", j%polNamespaces), fmt.Sprintf("pol-%d", j),
			fmt.Sprintf("app-%d", j), (j+1)%polNamespaces, fmt.Sprintf("role-%d", j%7), uint16(10000+j)))
	}
	return pols
}

// polBed is one testbed of the section.
type polBed struct {
	name      string
	tb        *testbed
	agent     *agentproc.Proc
	c         *api.Client
	probes    []*polClient   // the probe pods' namespaces, with their sockets
	web       netip.Addr     // web's address
	webRouted netip.Addr     // web-r's
	listeners []net.Listener // web's and web-r's
	built     time.Duration  // building the testbed (namespaces, agent, attaches)
	applied   time.Duration  // the call that applied the 100 policies
	endpoints int            // on the bridge networks; the routed probes come on top
	// released are the endpoints that the agent released during the fill although
	// their attach had succeeded (their veth deleted); they were attached again.
	released []string
	fillLaps []time.Duration // the fill's wall time per polFillLap endpoints
	notes    string          // what the agent logged of repairs, warnings and errors
}

// polRules is what podnet's tables of a testbed hold.
type polRules struct {
	inet, bridge, sets, elems int
	err                       error
}

// polFlips is the samples of one row in one testbed.
type polFlips struct {
	call, follow []time.Duration // the API call; until traffic followed
	failed       int
	firstErr     string
	probeErrs    int // connects that neither succeeded nor timed out (refused, unreachable)
}

// polPath is a row of the per-packet table: the probe pair of a driver in a testbed.
type polPath struct{ driver, bed string }

// polDrivers are the drivers of the per-packet rows.
var polDrivers = []string{api.DriverBridge, api.DriverRouted}

// polResult is the policy section's outcome.
type polResult struct {
	many, networks int
	beds           map[string]*polBed
	flips          map[string]*polFlips // by change name, "do"|"undo" and testbed: "port/do/few"
	packet         map[polPath][]time.Duration
	packetFailed   map[polPath]int
	packetErr      map[polPath]string
	rules          map[string]polRules
	brnf           map[string]string // bridge-nf-call-iptables in each node
	took           time.Duration     // the whole section, teardown included
	err            error
}

func polFlipKey(change, dir, bed string) string { return change + "/" + dir + "/" + bed }

// measurePolicy runs the policy section.
func measurePolicy(ctx context.Context, prefix, binDir string, many, rounds, conns int) (res polResult) {
	start := time.Now()
	res = polResult{many: many, networks: polNetworksFor(many), beds: map[string]*polBed{},
		flips: map[string]*polFlips{}, packet: map[polPath][]time.Duration{}, packetFailed: map[polPath]int{},
		packetErr: map[polPath]string{}, rules: map[string]polRules{}, brnf: map[string]string{}}
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "podnet-bench: policy: %s\n", fmt.Sprintf(format, args...))
	}
	defer func() {
		progress("removing the testbeds")
		for _, name := range polBedNames {
			res.err = errors.Join(res.err, res.beds[name].close())
		}
		res.took = time.Since(start)
	}()
	for _, name := range polBedNames {
		n, pols := polFew, name != "none"
		if name == "many" {
			n = many
		}
		b, err := newPolBed(ctx, prefix+"-"+name, binDir, name, n, res.networks, pols, progress)
		res.beds[name] = b
		if err != nil {
			res.err = fmt.Errorf("testbed %s: %w", name, err)
			return res
		}
	}
	for _, name := range polBedNames {
		res.rules[name] = countRules(res.beds[name].tb.node)
		res.brnf[name] = readSysctlIn(res.beds[name].tb.node, "net/bridge/bridge-nf-call-iptables")
	}

	settle(ctx)
	progress("%d rounds: connect frontend -> web:%d and frontend-r -> web-r:%d in each testbed", conns, polPortWeb, polPortWeb)
	res.measurePacket(ctx, conns)

	progress("%d rounds: %d changes made and undone in testbeds few and many", rounds, len(polChanges))
	res.measureFlips(ctx, rounds, progress)
	return res
}

// newPolBed builds a testbed: agent, networks, namespace labels, endpoints (the routed
// probes on top of endpoints), web's and web-r's listeners, and with pols the 100
// policies.
func newPolBed(ctx context.Context, prefix, binDir, name string, endpoints, networks int, pols bool, progress func(string, ...any)) (b *polBed, err error) {
	start := time.Now()
	b = &polBed{name: name, endpoints: endpoints}
	progress("testbed %s: creating %d sandbox namespaces", name, b.pods())
	if b.tb, err = newTestbed(prefix, b.pods()); err != nil {
		return b, err
	}
	// The policies' cost is on the kernel's path, which isolated pods take: the eBPF
	// fast path (between pods no policy isolates) would make "none" a path without
	// bridge, hooks or conntrack.
	if b.agent, err = startAgent(binDir, b.tb, "--fast-path=false"); err != nil {
		return b, err
	}
	b.c = b.agent.Client()
	for k := range networks {
		if _, err := b.c.CreateNetwork(ctx, polNetwork(k)); err != nil {
			return b, fmt.Errorf("create network %d: %w", k, err)
		}
	}
	if _, err := b.c.CreateNetwork(ctx, polNetwork(polRoutedNet)); err != nil {
		return b, fmt.Errorf("create the routed network: %w", err)
	}
	for k := range polNamespaces {
		req := api.NamespaceLabelRequest{Name: fmt.Sprintf("ns-%d", k), Labels: map[string]string{"team": fmt.Sprintf("team-%d", k)}}
		if _, err := b.c.LabelNamespace(ctx, req); err != nil {
			return b, fmt.Errorf("label namespace: %w", err)
		}
	}
	for i := range polProbes {
		h, err := netns.GetFromPath(b.tb.sandboxes[i])
		if err != nil {
			return b, fmt.Errorf("open %s: %w", b.tb.sandboxes[i], err)
		}
		b.probes = append(b.probes, &polClient{ns: h})
	}
	progress("testbed %s: attaching %d endpoints to %d bridge networks and %d to the routed one", name, endpoints, networks, polRoutedProbes)
	if err := b.fill(ctx, networks, progress); err != nil {
		return b, err
	}
	if err := b.attachReleased(ctx, networks); err != nil {
		return b, err
	}
	if err := b.listen(); err != nil {
		return b, err
	}
	if pols {
		t := time.Now()
		if _, err := b.c.ApplyPolicies(ctx, polPolicies()); err != nil {
			return b, fmt.Errorf("apply the policies: %w", err)
		}
		b.applied = time.Since(t)
	}
	b.built = time.Since(start)
	progress("testbed %s: built in %.1f s", name, b.built.Seconds())
	return b, nil
}

// attach attaches endpoint i, and notes web's and web-r's addresses.
func (b *polBed) attach(ctx context.Context, i, networks int) error {
	k, name, ns, labels := polPod(i, networks)
	fd, err := unix.Open(b.tb.sandboxes[i], unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open sandbox netns: %w", err)
	}
	defer unix.Close(fd)
	r, err := b.c.Attach(ctx, api.AttachRequest{EndpointKey: polKey(i, k), Netns: b.tb.sandboxes[i], Name: name, Namespace: ns, Labels: labels}, fd)
	if err != nil {
		return fmt.Errorf("attach %s/%s: %w", ns, name, err)
	}
	if i == polWeb || i == polWebRouted {
		if len(r.IPs) == 0 {
			return fmt.Errorf("attach %s: result without an address", name)
		}
		if i == polWeb {
			b.web = r.IPs[0].Address.Addr()
		} else {
			b.webRouted = r.IPs[0].Address.Addr()
		}
	}
	return nil
}

// pods is how many endpoints (and sandboxes) the testbed has: its endpoints, and the
// routed probes.
func (b *polBed) pods() int {
	return b.endpoints + polRoutedProbes
}

// fill attaches every endpoint, the probes first and one at a time, then the others
// polFillWorkers at a time.
func (b *polBed) fill(ctx context.Context, networks int, progress func(string, ...any)) error {
	start, lap := time.Now(), time.Now()
	for i := range polProbes {
		if err := b.attach(ctx, i, networks); err != nil {
			return err
		}
	}
	next := make(chan int)
	errs := make([]error, polFillWorkers)
	var wg sync.WaitGroup
	for w := range polFillWorkers {
		wg.Go(func() {
			for i := range next {
				if errs[w] == nil {
					errs[w] = b.attach(ctx, i, networks)
				}
			}
		})
	}
	for i := polProbes; i < b.pods() && ctx.Err() == nil && errors.Join(errs...) == nil; i++ {
		// Laps of polFillLap endpoints (the routed probes are not among them).
		if n := i - polRoutedProbes; n%polFillLap == 0 {
			b.fillLaps = append(b.fillLaps, time.Since(lap))
			lap = time.Now()
			progress("testbed %s: endpoint %d after %.0f s", b.name, n, time.Since(start).Seconds())
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if b.endpoints > polFillLap {
		b.fillLaps = append(b.fillLaps, time.Since(lap))
	}
	return errors.Join(append(errs, ctx.Err())...)
}

// attachReleased attaches again the endpoints that the agent no longer holds (see
// released) and checks that it then holds them all.
func (b *polBed) attachReleased(ctx context.Context, networks int) error {
	missing := func() ([]int, error) {
		eps, err := b.c.Endpoints(ctx, "")
		if err != nil {
			return nil, fmt.Errorf("list endpoints: %w", err)
		}
		have := map[string]bool{}
		for _, ep := range eps {
			if ep.State != api.StateDetaching { // attaching: the reply comes before the mark
				have[ep.EndpointKey.String()] = true
			}
		}
		var out []int
		for i := range b.pods() {
			k, _, _, _ := polPod(i, networks)
			if !have[polKey(i, k).String()] {
				out = append(out, i)
			}
		}
		return out, nil
	}
	gone, err := missing()
	if err != nil {
		return err
	}
	for _, i := range gone {
		k, name, ns, _ := polPod(i, networks)
		b.released = append(b.released, ns+"/"+name)
		// DEL first, as a runtime would: the record may still be there, detaching.
		if err := b.c.Detach(ctx, api.DetachRequest{EndpointKey: polKey(i, k), Netns: b.tb.sandboxes[i]}, -1); err != nil {
			return fmt.Errorf("detach %s/%s: %w", ns, name, err)
		}
		if err := b.attach(ctx, i, networks); err != nil {
			return err
		}
	}
	if gone, err = missing(); err != nil || len(gone) > 0 {
		return errors.Join(err, fmt.Errorf("%d endpoints missing after they were attached again, the first: endpoint %v", len(gone), gone[:min(1, len(gone))]))
	}
	return nil
}

// listen makes web accept (and close at once) connections on its ports, and web-r on
// port 80.
func (b *polBed) listen() error {
	for _, on := range []struct{ probe, port int }{
		{polWeb, polPortWeb}, {polWeb, polPortAdmin}, {polWeb, polPortExtra}, {polWebRouted, polPortWeb},
	} {
		if err := b.listenOn(on.probe, on.port); err != nil {
			return err
		}
	}
	return nil
}

// listenOn makes probe accept (and close at once) connections on port.
func (b *polBed) listenOn(probe, port int) error {
	var l net.Listener
	err := inNetns(b.probes[probe].ns, func() (err error) {
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		_, name, _, _ := polPod(probe, 1)
		return fmt.Errorf("%s: listen on %d: %w", name, port, err)
	}
	b.listeners = append(b.listeners, l)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			c.Close()
		}
	}()
	return nil
}

// close stops the listeners and the agent and removes the testbed; calling it on nil or
// on a partial testbed is harmless.
func (b *polBed) close() error {
	if b == nil {
		return nil
	}
	for _, l := range b.listeners {
		l.Close()
	}
	if b.agent != nil {
		b.notes = agentNotes(b.agent)
	}
	err := b.agent.Stop()
	for _, p := range b.probes {
		p.close()
	}
	if b.tb != nil {
		err = errors.Join(err, b.tb.remove())
	}
	return err
}

// measurePacket times conns rounds of one connect in each testbed for each driver,
// frontend -> web:80 (bridge) and frontend-r -> web-r:80 (routed), in random order.
func (res *polResult) measurePacket(ctx context.Context, conns int) {
	r := rand.New(rand.NewPCG(uint64(conns), 11))
	var order []polPath
	for _, driver := range polDrivers {
		for _, name := range polBedNames {
			order = append(order, polPath{driver, name})
		}
	}
	for round := range polWarmup + conns {
		if ctx.Err() != nil {
			return
		}
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, p := range order {
			if res.packetFailed[p] >= polMaxFailed {
				continue
			}
			client, web := res.beds[p.bed].packetPair(p.driver)
			out, took, err := client.connect(netip.AddrPortFrom(web, polPortWeb), polConnectWait)
			if round < polWarmup {
				continue
			}
			if out != outAllowed {
				if res.packetFailed[p] == 0 {
					res.packetErr[p] = fmt.Sprintf("round %d: %s (%v)", round, out, err)
				}
				res.packetFailed[p]++
				continue
			}
			res.packet[p] = append(res.packet[p], took)
		}
	}
}

// packetPair is the probe pair of driver's network: the client (frontend or
// frontend-r) and the server's address (web's or web-r's).
func (b *polBed) packetPair(driver string) (*polClient, netip.Addr) {
	if driver == api.DriverRouted {
		return b.probes[polFrontendRouted], b.webRouted
	}
	return b.probes[polFrontend], b.web
}

// measureFlips makes and undoes each change rounds times in "few" and "many", the
// testbeds' order alternating by round, and times until traffic follows each.
func (res *polResult) measureFlips(ctx context.Context, rounds int, progress func(string, ...any)) {
	beds := []string{"few", "many"}
	for round := range rounds {
		progress("round %d of %d", round+1, rounds)
		for _, ch := range polChanges {
			for k := range beds {
				name := beds[(k+round)%len(beds)]
				b := res.beds[name]
				for _, undo := range []bool{false, true} {
					if ctx.Err() != nil {
						return
					}
					dir, want := "do", outAllowed
					if undo {
						dir, want = "undo", outDropped
					}
					key := polFlipKey(ch.name, dir, name)
					f := res.flips[key]
					if f == nil {
						f = &polFlips{}
						res.flips[key] = f
					}
					if f.failed >= polMaxFailed {
						continue
					}
					call, follow, probeErrs, err := b.follow(ctx, ch.client, ch.port, want, ch.apply(b.c, undo))
					f.probeErrs += probeErrs
					if err != nil {
						if f.failed == 0 {
							f.firstErr = fmt.Sprintf("round %d: %v; agent log: %s", round, err, agentNotes(b.agent))
						}
						f.failed++
						continue
					}
					f.call = append(f.call, call)
					f.follow = append(f.follow, follow)
				}
			}
		}
	}
	for key, f := range res.flips {
		if f.failed > 0 {
			res.err = errors.Join(res.err, fmt.Errorf("%s: %d changes failed, the first: %s", key, f.failed, f.firstErr))
		}
	}
}

// follow checks that probe client's connections to web:port have the outcome opposite
// to want, then makes the change while a prober connects every polInterval, and
// returns how long the change's call took and how long until the connections had the
// outcome want (the start of the first connect from which on all had it).
func (b *polBed) follow(ctx context.Context, client, port int, want outcome, change func(context.Context) error) (call, follow time.Duration, probeErrs int, err error) {
	c, dst := b.probes[client], netip.AddrPortFrom(b.web, uint16(port))
	old := outAllowed
	if want == outAllowed {
		old = outDropped
	}
	if out, _, err := c.connect(dst, polConnectWait); out != old {
		return 0, 0, 0, fmt.Errorf("before the change: connect to %s %s (%v), want %s", dst, out, err, old)
	}
	type done struct {
		took time.Duration
		err  error
	}
	called := make(chan done, 1)
	start := time.Now()
	go func() {
		err := change(ctx)
		called <- done{time.Since(start), err}
	}()
	var callRes *done
	attempts, probeErrs, err := c.probe(dst, start, func(outs []outcome) bool {
		if callRes == nil {
			select {
			case d := <-called:
				callRes = &d
			default:
			}
		}
		_, ok := flipAt(outs, want, polConfirm)
		return callRes != nil && ok
	})
	if callRes == nil {
		d := <-called
		callRes = &d
	}
	if callRes.err != nil {
		return 0, 0, probeErrs, fmt.Errorf("the change: %w", callRes.err)
	}
	if err != nil {
		return 0, 0, probeErrs, err
	}
	outs := make([]outcome, len(attempts))
	for i, a := range attempts {
		outs[i] = a.out
	}
	k, _ := flipAt(outs, want, polConfirm)
	return callRes.took, attempts[k].start.Sub(start), probeErrs, nil
}

// outcome is what became of one connect.
type outcome int

const (
	outPending outcome = iota
	outAllowed         // established
	outDropped         // no answer within the wait
	outFailed          // refused, unreachable, or another error
)

func (o outcome) String() string {
	return [...]string{"pending", "allowed", "dropped", "failed"}[o]
}

// flipAt finds, in the outcomes of the connects in their order so far (pending ones
// last), where the last run of want starts: the connect from which on every outcome
// is want; ok when that run holds at least confirm connects that are not pending.
func flipAt(outs []outcome, want outcome, confirm int) (k int, ok bool) {
	n := slices.Index(outs, outPending) // the outcomes known, in order
	if n < 0 {
		n = len(outs)
	}
	k = n
	for k > 0 && outs[k-1] == want {
		k--
	}
	return k, n-k >= confirm && n-k > 0
}

// polClient is a probe pod's namespace with a pool of sockets made in it.
type polClient struct {
	ns   netns.NsHandle
	pool []int
}

// socket takes a TCP/IPv4 socket of the client's namespace from the pool, making
// polSocketBatch more at once when it is empty (one namespace switch for them all).
// The socket does not block, and closing it resets the connection (SO_LINGER 0): no
// TIME_WAIT, nothing left to the server.
func (c *polClient) socket() (int, error) {
	if len(c.pool) == 0 {
		err := inNetns(c.ns, func() error {
			for range polSocketBatch {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				c.pool = append(c.pool, fd)
				if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return -1, fmt.Errorf("socket in the client's namespace: %w", err)
		}
	}
	fd := c.pool[len(c.pool)-1]
	c.pool = c.pool[:len(c.pool)-1]
	return fd, nil
}

// close closes the pool's sockets and the namespace handle.
func (c *polClient) close() {
	for _, fd := range c.pool {
		unix.Close(fd)
	}
	c.pool = nil
	c.ns.Close()
}

// startConnect sends the SYN of a non-blocking socket; nil means it is on its way.
func startConnect(fd int, dst netip.AddrPort) error {
	err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()})
	if errors.Is(err, unix.EINPROGRESS) {
		return nil
	}
	if err == nil {
		return errors.New("connected at once")
	}
	return err
}

// connected tells, once poll reported a connecting socket ready, how it ended.
func connected(fd int) (outcome, error) {
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return outFailed, err
	case soErr != 0:
		return outFailed, unix.Errno(soErr)
	}
	return outAllowed, nil
}

// connect makes one connection to dst and times it from the SYN until it is
// established (taking a socket from the pool is not timed); a connect without an
// answer within wait is dropped.
func (c *polClient) connect(dst netip.AddrPort, wait time.Duration) (outcome, time.Duration, error) {
	fd, err := c.socket()
	if err != nil {
		return outFailed, 0, err
	}
	defer unix.Close(fd)
	start := time.Now()
	if err := startConnect(fd, dst); err != nil {
		return outFailed, 0, err
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		left := wait - time.Since(start)
		if left <= 0 {
			return outDropped, 0, nil
		}
		ts := unix.NsecToTimespec(int64(left))
		n, err := unix.Ppoll(pfd, &ts, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return outFailed, 0, err
		}
		if n > 0 {
			took := time.Since(start)
			out, err := connected(fd)
			return out, took, err
		}
	}
}

// attempt is one connect of the prober.
type attempt struct {
	start time.Time
	fd    int
	out   outcome
}

// probe connects to dst every polInterval from start on, each connect waiting
// polConnectWait at most, until enough(outcomes so far, in the order of the connects)
// or polFollowWait after start. It returns the connects, and how many failed otherwise
// than by a drop.
func (c *polClient) probe(dst netip.AddrPort, start time.Time, enough func([]outcome) bool) ([]attempt, int, error) {
	var attempts []attempt
	var outs []outcome
	failed := 0
	inFlight := map[int32]int{} // fd -> attempt
	defer func() {
		for fd := range inFlight {
			unix.Close(int(fd))
		}
	}()
	end := func(i int, out outcome) {
		attempts[i].out, outs[i] = out, out
		if out == outFailed {
			failed++
		}
		delete(inFlight, int32(attempts[i].fd))
		unix.Close(attempts[i].fd)
	}
	next := start
	pfds := make([]unix.PollFd, 0, 512)
	for {
		now := time.Now()
		if now.Sub(start) > polFollowWait {
			return attempts, failed, fmt.Errorf("traffic did not follow within %v (%d connects, the last outcomes %v)", polFollowWait, len(outs), outs[max(0, len(outs)-5):])
		}
		if !now.Before(next) {
			fd, err := c.socket()
			if err != nil {
				return attempts, failed, err
			}
			attempts = append(attempts, attempt{start: time.Now(), fd: fd})
			outs = append(outs, outPending)
			inFlight[int32(fd)] = len(attempts) - 1
			if err := startConnect(fd, dst); err != nil {
				end(len(attempts)-1, outFailed)
			}
			next = next.Add(polInterval)
			if next.Before(now) {
				next = now.Add(polInterval)
			}
		}
		pfds = pfds[:0]
		for fd, i := range inFlight {
			if now.Sub(attempts[i].start) >= polConnectWait {
				end(i, outDropped)
				continue
			}
			pfds = append(pfds, unix.PollFd{Fd: fd, Events: unix.POLLOUT})
		}
		ts := unix.NsecToTimespec(int64(max(time.Until(next), 0)))
		_, err := unix.Ppoll(pfds, &ts, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return attempts, failed, fmt.Errorf("poll: %w", err)
		}
		for _, p := range pfds {
			if p.Revents == 0 {
				continue
			}
			out, _ := connected(int(p.Fd))
			end(inFlight[p.Fd], out)
		}
		if enough(outs) {
			return attempts, failed, nil
		}
	}
}

// countRules counts the rules of podnet's tables (inet and bridge) in node, their sets,
// and the elements of the sets as the kernel lists them.
func countRules(node netns.NsHandle) (r polRules) {
	c, err := nftwire.Dial(int(node))
	if err != nil {
		return polRules{err: err}
	}
	defer c.Close()
	for _, f := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge} {
		rules, err := nftwire.DumpRules(c, f, nft.TableName, "")
		if err != nil {
			return polRules{err: fmt.Errorf("rules: %w", err)}
		}
		if f == nftables.TableFamilyINet {
			r.inet = len(rules)
		} else {
			r.bridge = len(rules)
		}
		sets, err := nftwire.DumpSets(c, f, nft.TableName)
		if err != nil {
			return polRules{err: fmt.Errorf("sets: %w", err)}
		}
		for name, s := range sets {
			if s.Anonymous() {
				r.elems += len(s.Elems)
				continue
			}
			r.sets++
			els, err := nftwire.DumpElems(c, f, nft.TableName, name)
			if err != nil {
				return polRules{err: fmt.Errorf("elements of %s: %w", name, err)}
			}
			r.elems += len(els)
		}
	}
	return r
}

// polCommand is the command line that runs the section as it ran.
func polCommand(many, rounds, conns int) string {
	return fmt.Sprintf("bash bench/bench.sh -only policy -policy-endpoints %d -policy-rounds %d -policy-connections %d", many, rounds, conns)
}

// printPolicy prints the policy tables and the ratios.
func printPolicy(w io.Writer, rounds, conns int, res polResult) {
	fmt.Fprintf(w, "### Network policy\n\n")
	fmt.Fprintf(w, "`%s`: %.1f min in all (building the %d-endpoint testbed %s), on three testbeds side by side, an agent each (embedded store), "+
		"with the same %d bridge networks, a routed network holding two more probe pods (web-r, frontend-r: not counted in the endpoints below) "+
		"and namespaces ns-0..ns-9 (team=team-<k>): none (%d endpoints, no policy), few (%d endpoints) and many (%d endpoints) "+
		"with the same 100 policies (each selects app=app-<j> pods of one namespace and admits pods by a namespaceSelector and a podSelector on one TCP port; "+
		"with %d endpoints a filler policy selects about %d pods and admits about %d)\n\n",
		polCommand(res.many, rounds, conns), res.took.Minutes(), res.many, polBuilt(res.beds["many"]), res.networks, polFew, polFew, res.many,
		res.many, res.many/100, res.many/70)

	fmt.Fprintf(w, "Time until traffic follows a change: from the start of the API call until the first of the connects (a new one every %v from the probe pod to web, each waiting %v) "+
		"from which on all had the new outcome; each change made and undone %d times in both testbeds, the rounds alternating them; median (p90)\n\n",
		polInterval, polConnectWait, rounds)
	fmt.Fprintf(w, "| change | agent | now | API call, %d endpoints | traffic follows, %d endpoints | API call, %d endpoints | traffic follows, %d endpoints | ratio (traffic, medians) | target |\n",
		polFew, polFew, res.many, res.many)
	fmt.Fprintf(w, "|---|---|---|---:|---:|---:|---:|---:|---|\n")
	var failures []string
	for _, ch := range polChanges {
		for _, dir := range []string{"do", "undo"} {
			label, now := ch.do, "allowed"
			if dir == "undo" {
				label, now = ch.undo, "dropped"
			}
			cells := []string{}
			var meds []time.Duration
			for _, bed := range []string{"few", "many"} {
				f := res.flips[polFlipKey(ch.name, dir, bed)]
				if f == nil || len(f.follow) == 0 {
					cells = append(cells, "n/a", "n/a")
					meds = append(meds, 0)
				} else {
					c, t := summarize(f.call), summarize(f.follow)
					cells = append(cells, fmt.Sprintf("%s (%s)", ms(c.median), ms(c.p90)), fmt.Sprintf("%s (%s)", ms(t.median), ms(t.p90)))
					meds = append(meds, t.median)
				}
				if f != nil && f.failed > 0 {
					failures = append(failures, fmt.Sprintf("%s, %s endpoints: %d of %d failed, the first: %s", label, bed, f.failed, f.failed+len(f.follow), longCell(f.firstErr)))
				}
				if f != nil && f.probeErrs > 0 {
					failures = append(failures, fmt.Sprintf("%s, %s endpoints: %d probe connects neither established nor dropped (refused or unreachable)", label, bed, f.probeErrs))
				}
			}
			ratio, target := "n/a", fmt.Sprintf("<= %g", polFollowTgt)
			if meds[0] > 0 && meds[1] > 0 {
				r := float64(meds[1]) / float64(meds[0])
				ratio = fmt.Sprintf("%.2f", r)
				target += verdict(r <= polFollowTgt)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", label, ch.path, now, strings.Join(cells, " | "), ratio, target)
		}
	}
	fmt.Fprintln(w)
	for _, f := range failures {
		fmt.Fprintf(w, "- %s\n", f)
	}
	if len(failures) > 0 {
		fmt.Fprintln(w)
	}

	fmt.Fprintf(w, "Per-packet cost: TCP connect frontend -> web:%d over a bridge network and frontend-r -> web-r:%d over a routed network "+
		"(from the SYN until established; in few and many both pods of each pair selected by policies, the connection allowed), "+
		"%d rounds of one connect per testbed and driver in random order; the agents without the eBPF fast path (--fast-path=false). In testbed none the bridged connect skips conntrack (no policy isolates the pods), "+
		"while the routed one is tracked in every testbed (the node routes it): the routed ratio is the policies' own cost, the bridged one the policies' and conntrack's\n\n",
		polPortWeb, polPortWeb, conns)
	fmt.Fprintf(w, "| driver | testbed | policies | endpoints | connect median | p90 | / none, same driver (medians) | target | failed |\n|---|---|---:|---:|---:|---:|---:|---|---:|\n")
	for _, driver := range polDrivers {
		none := summarize(res.packet[polPath{driver, "none"}])
		for _, name := range polBedNames {
			p := polPath{driver, name}
			s := summarize(res.packet[p])
			b := res.beds[name]
			pols, eps := 100, polFew
			if name == "none" {
				pols = 0
			}
			if b != nil {
				eps = b.endpoints
			}
			target := ""
			if name != "none" {
				target = fmt.Sprintf("<= %g", polPacketTgt)
			}
			if s.n == 0 {
				fmt.Fprintf(w, "| %s | %s | %d | %d | n/a | | | %s | %d |\n", driver, name, pols, eps, target, res.packetFailed[p])
				continue
			}
			ratio := ""
			if none.n > 0 {
				r := float64(s.median) / float64(none.median)
				ratio = fmt.Sprintf("%.2f", r)
				if name != "none" {
					target += verdict(r <= polPacketTgt)
				}
			}
			fmt.Fprintf(w, "| %s | %s | %d | %d | %s | %s | %s | %s | %d |\n", driver, name, pols, eps, us(s.median), us(s.p90), ratio, target, res.packetFailed[p])
		}
	}
	fmt.Fprintln(w)
	for _, driver := range polDrivers {
		for _, name := range polBedNames {
			if p := (polPath{driver, name}); res.packetFailed[p] > 0 {
				fmt.Fprintf(w, "- %s, %s: %d connects failed, the first: %s\n", driver, name, res.packetFailed[p], cell(res.packetErr[p]))
			}
		}
	}
	var brnf []string
	for _, name := range polBedNames {
		brnf = append(brnf, name+" "+res.brnf[name])
	}
	fmt.Fprintf(w, "- bridge-nf-call-iptables in the node namespaces (bridged packets cross the inet hooks and conntrack when 1): %s\n\n", strings.Join(brnf, ", "))

	fmt.Fprintf(w, "podnet's tables (inet and bridge podnet) after the testbeds were built\n\n")
	fmt.Fprintf(w, "| testbed | policies | endpoints | rules inet | rules bridge | named sets | set elements | target |\n|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, name := range polBedNames {
		r, b := res.rules[name], res.beds[name]
		pols, eps := 100, 0
		if name == "none" {
			pols = 0
		}
		if b != nil {
			eps = b.endpoints
		}
		target := ""
		if name == "many" {
			few := res.rules["few"]
			target = "rules equal to few's" + verdict(few.err == nil && r.err == nil && few.inet == r.inet && few.bridge == r.bridge)
		}
		if r.err != nil {
			fmt.Fprintf(w, "| %s | %d | %d | failed: %s | | | | %s |\n", name, pols, eps, cell(r.err.Error()), target)
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d | %s |\n", name, pols, eps, r.inet, r.bridge, r.sets, r.elems, target)
	}
	fmt.Fprintln(w)
	for _, name := range []string{"few", "many"} {
		if b := res.beds[name]; b != nil && b.applied > 0 {
			fmt.Fprintf(w, "- applying the 100 policies in one call with %d endpoints attached: %s\n", b.endpoints, ms(b.applied))
		}
	}
	if b := res.beds["many"]; b != nil && len(b.fillLaps) > 1 {
		var laps []string
		for _, d := range b.fillLaps {
			laps = append(laps, fmt.Sprintf("%.0f s", d.Seconds()))
		}
		fmt.Fprintf(w, "- attaching the %d endpoints of many, %d at a time, took per %d endpoints: %s\n", b.endpoints, polFillWorkers, polFillLap, strings.Join(laps, ", "))
	}
	for _, name := range polBedNames {
		if b := res.beds[name]; b != nil && b.notes != "" {
			fmt.Fprintf(w, "- agent of %s, its last repairs, warnings and errors: %s\n", name, longCell(b.notes))
		}
	}
	for _, name := range polBedNames {
		if b := res.beds[name]; b != nil && len(b.released) > 0 {
			fmt.Fprintf(w, "- testbed %s: the agent released %d endpoints during the fill (%d attaches at once) although their attach had succeeded, and deleted their veths; attached again: %s\n",
				name, len(b.released), polFillWorkers, cell(strings.Join(b.released[:min(10, len(b.released))], " ")))
		}
	}
	fmt.Fprintln(w)
}

// polBuilt is how long a testbed took to build, for the header.
func polBuilt(b *polBed) string {
	if b == nil || b.built == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f min", b.built.Minutes())
}

// verdict is ", meets target" or ", MISSES target".
func verdict(ok bool) string {
	if ok {
		return ", meets target"
	}
	return ", MISSES target"
}
