package nft

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nftwire"
)

// changePolicies changes the tables' policies of r to ps with UpdatePolicies, then calls
// it again from ps to ps (which sends nothing), and from ps to ps listed another way
// (which rewrites the policy chains as they were), and checks after each call that the
// tables equal r with ps.
func changePolicies(t *testing.T, tb *Table, r Ruleset, ps ...Policy) Ruleset {
	t.Helper()
	next := withPolicies(r, ps...)
	if err := tb.UpdatePolicies(r.Policies, ps); err != nil {
		t.Fatal(err)
	}
	wantInSync(t, tb, next, true)
	gen, err := tb.Generation()
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.UpdatePolicies(ps, ps); err != nil {
		t.Fatalf("again: %v", err)
	}
	if g, err := tb.Generation(); g != gen || err != nil {
		t.Fatalf("again: Generation = %d, %v; want %d (nothing sent)", g, err, gen)
	}
	relisted := slices.Clone(ps)
	slices.Reverse(relisted)
	for i, p := range relisted {
		p.Selected = slices.Clone(p.Selected)
		slices.Reverse(p.Selected)
		relisted[i] = p
	}
	if err := tb.UpdatePolicies(ps, relisted); err != nil {
		t.Fatalf("relisted: %v", err)
	}
	wantInSync(t, tb, next, true)
	return next
}

// kernelAddrs returns the addresses the kernel holds in set name of table inet podnet
// of ns, sorted.
func kernelAddrs(t *testing.T, ns netns.NsHandle, name string) []netip.Addr {
	t.Helper()
	nl, err := nftwire.Dial(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	els, err := nftwire.DumpElems(nl, nftables.TableFamilyINet, TableName, name)
	if err != nil {
		t.Fatalf("list set %s: %v", name, err)
	}
	out := []netip.Addr{}
	for _, e := range els {
		a, _ := netip.AddrFromSlice(e.Key)
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// extraPolicy isolates 10.88.4.7 (ingress) and fd00:88:4::7, which no other policy
// selects, and lets 10.88.4.2 connect to it.
var extraPolicy = Policy{ID: "e7", Name: "shop/extra", Selected: addrs("10.88.4.7", "fd00:88:4::7"), Ingress: true,
	IngressRules: []PolicyRule{{Peers: []AddrRange{rng("10.88.4.2")}, AnyPort: true}}}

// UpdatePolicies adds, removes and lays out anew policies as Sync would write them,
// leaving the rest of the tables alone (InSync compares the endpoints' anti-spoofing
// elements, the port mappings and the services too); it refuses what changes the
// dispatch or chain input, and what the tables do not hold, changing nothing.
func TestPrivilegedUpdatePolicyLayout(t *testing.T) {
	tb, ns := openTable(t)
	r := withPolicies(example, denyPolicy, webPolicy)
	mustSync(t, tb, r)

	// A policy added, then removed: 10.88.4.7, which only it selects, comes into
	// policy_in4 and leaves it.
	r = changePolicies(t, tb, r, denyPolicy, webPolicy, extraPolicy)
	if got := kernelAddrs(t, ns, "policy_in4"); !slices.Contains(got, netip.MustParseAddr("10.88.4.7")) {
		t.Fatalf("policy_in4 = %v after adding %s", got, extraPolicy.Name)
	}
	r = changePolicies(t, tb, r, denyPolicy, webPolicy)
	if got, want := kernelAddrs(t, ns, "policy_in4"), addrs("10.88.4.2", "10.88.4.3"); !slices.Equal(got, want) {
		t.Fatalf("policy_in4 = %v after removing %s, want %v", got, extraPolicy.Name, want)
	}
	if got, want := kernelAddrs(t, ns, "policy_in6"), addrs("fd00:88:4::2", "fd00:88:4::9"); !slices.Equal(got, want) {
		t.Fatalf("policy_in6 = %v after removing %s, want %v", got, extraPolicy.Name, want)
	}

	// A policy with one rule more, then one rule less than it had.
	more := webPolicy
	more.IngressRules = append(slices.Clone(webPolicy.IngressRules),
		PolicyRule{Peers: []AddrRange{rng("10.88.9.1", "10.88.9.7")}, Ports: []PortRange{ports(rng("10.88.4.3"), "sctp", 9)}})
	r = changePolicies(t, tb, r, denyPolicy, more)
	fewer := webPolicy
	fewer.IngressRules = webPolicy.IngressRules[:1]
	r = changePolicies(t, tb, r, denyPolicy, fewer)
	// A rule gains AnyPeer: its peers sets go, the number of rules stays.
	anyPeer := webPolicy
	anyPeer.IngressRules = []PolicyRule{{AnyPeer: true, Ports: webPolicy.IngressRules[0].Ports}, webPolicy.IngressRules[1]}
	r = changePolicies(t, tb, r, denyPolicy, anyPeer)

	// A policy gains type Egress while denyPolicy has it: webPolicy's pods may connect
	// to DNS servers only.
	egressWeb := webPolicy
	egressWeb.Egress = true
	egressWeb.EgressRules = []PolicyRule{{AnyPeer: true, Ports: []PortRange{ports(all4, "udp", 53)}}}
	r = changePolicies(t, tb, r, denyPolicy, egressWeb)
	if got, want := kernelAddrs(t, ns, "policy_out4"), addrs("10.88.4.2", "10.88.4.3"); !slices.Equal(got, want) {
		t.Fatalf("policy_out4 = %v, want %v", got, want)
	}

	// One added and one removed in one call, while the elements of a policy of the same
	// layout change: webPolicy's peers shrink (range elements deleted) and it no longer
	// selects 10.88.4.3, which leaves policy_in4 and policy_out4.
	r = changePolicies(t, tb, r, denyPolicy, webPolicy, dnsPolicy)
	shrunk := webPolicy
	shrunk.Selected = addrs("10.88.4.2", "fd00:88:4::2")
	rule := webPolicy.IngressRules[0]
	rule.Peers = []AddrRange{prefixRange("10.0.0.0/16"), rng("fd00:88:4::10")}
	shrunk.IngressRules = []PolicyRule{rule, webPolicy.IngressRules[1]}
	r = changePolicies(t, tb, r, shrunk, dnsPolicy, extraPolicy)
	if got, want := kernelAddrs(t, ns, "policy_in4"), addrs("10.88.4.2", "10.88.4.7"); !slices.Equal(got, want) {
		t.Fatalf("policy_in4 = %v, want %v", got, want)
	}
	if got, want := kernelAddrs(t, ns, "policy_out4"), addrs("10.88.4.2"); !slices.Equal(got, want) {
		t.Fatalf("policy_out4 = %v, want %v", got, want)
	}
	// Everything at once: one policy goes, one comes, one is laid out anew.
	r = changePolicies(t, tb, r, denyPolicy, more, dnsPolicy)

	// What UpdatePolicies refuses, changing nothing.
	stale := withPolicies(r, denyPolicy, dnsPolicy) // the tables hold more's sets too
	for _, tc := range []struct {
		name      string
		old, next []Policy
		want      error
	}{
		{"no policy left", r.Policies, nil, ErrNoTable},
		{"no policy before", nil, r.Policies, ErrNoTable},
		{"no policy with Egress left", r.Policies, []Policy{more}, ErrNoTable},
		// extraPolicy is not in the tables.
		{"old not held", []Policy{denyPolicy, more, dnsPolicy, extraPolicy}, []Policy{denyPolicy, dnsPolicy}, ErrNoTable},
		// more's sets exist already.
		{"new policy held", stale.Policies, r.Policies, ErrNoTable},
		// The tables' webPolicy has one rule more than old says.
		{"another layout held", []Policy{denyPolicy, webPolicy, dnsPolicy}, []Policy{denyPolicy, dnsPolicy}, ErrNoTable},
		// Likewise, for a policy that stays as it is.
		{"another layout held, unchanged", []Policy{denyPolicy, webPolicy, dnsPolicy}, []Policy{denyPolicy, webPolicy, dnsPolicy, extraPolicy}, ErrNoTable},
		{"invalid policy", r.Policies, []Policy{{ID: "BAD", Ingress: true}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tb.UpdatePolicies(tc.old, tc.next)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("UpdatePolicies = %v, want %v", err, tc.want)
			}
			wantInSync(t, tb, r, true)
		})
	}

	// From no policy with Egress to one: chain input must come, Sync does it.
	r = withPolicies(r, webPolicy)
	mustSync(t, tb, r)
	if err := tb.UpdatePolicies(r.Policies, []Policy{webPolicy, denyPolicy}); !errors.Is(err, ErrNoTable) {
		t.Fatalf("UpdatePolicies to a policy with Egress = %v, want ErrNoTable", err)
	}
	wantInSync(t, tb, r, true)
	// But a policy without Egress comes, and another goes, without it.
	r = changePolicies(t, tb, r, extraPolicy)
}

// The final drop rules of the policy chains count on from where the rules they replace
// were.
func TestPrivilegedUpdatePoliciesKeepsDrops(t *testing.T) {
	tb, ns := openTable(t)
	r := withPolicies(example, denyPolicy, webPolicy, dnsPolicy)
	mustSync(t, tb, r)
	// A new connection from 10.88.4.2 (dnsPolicy: DNS only) to port 9 of the node itself
	// goes through chain input to policy-egress, which drops it. (An IPv4 address: the
	// kernel adds its local route at once, an IPv6 address's a little later.)
	h := handleAt(t, ns)
	lo := linkByName(t, h, "lo")
	must(t, h.LinkSetUp(lo), "set lo up")
	src := netip.MustParseAddr("10.88.4.2")
	must(t, h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: src.AsSlice(), Mask: net.CIDRMask(32, 32)}}), "add address")
	err := inNetNS(ns, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: src.AsSlice(), Port: 9})
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range 3 {
			if _, err := c.Write([]byte("x")); err != nil {
				return fmt.Errorf("datagram %d: %w", i, err)
			}
		}
		return nil
	})
	must(t, err, "send")
	// The loopback device delivers the datagrams to the input hook later, in a softirq.
	var in, out uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if in, out = policyDrops(t, tb); out == 3 {
			break
		}
	}
	if in != 0 || out != 3 {
		t.Fatalf("drops = %d, %d; want 0, 3", in, out)
	}
	r = changePolicies(t, tb, r, denyPolicy, webPolicy, dnsPolicy, extraPolicy)
	if in2, out2 := policyDrops(t, tb); in2 != in || out2 != out {
		t.Fatalf("drops after UpdatePolicies = %d, %d; want %d, %d", in2, out2, in, out)
	}
	mustSync(t, tb, r)
	if in, out := policyDrops(t, tb); in != 0 || out != 0 {
		t.Fatalf("drops after Sync = %d, %d; want 0, 0", in, out)
	}
}

// When the kernel refuses the batch, nothing changes and Sync repairs the tables: here
// another tool's rule uses a set that the batch deletes (EBUSY).
func TestPrivilegedUpdatePoliciesRefusedBatch(t *testing.T) {
	tb, ns := openTable(t)
	r := withPolicies(example, denyPolicy, webPolicy, extraPolicy)
	mustSync(t, tb, r)
	c := otherConn(t, ns)
	inet := podnetTable(nftables.TableFamilyINet)
	c.AddRule(&nftables.Rule{Table: inet, Chain: &nftables.Chain{Name: chainForward, Table: inet},
		Exprs: []expr.Any{loadAddr(ip4, ip4.saddr, reg1), lookup(reg1, selSet(extraPolicy.ID, ip4.suffix), false), accept()}})
	must(t, c.Flush(), "add a rule")
	before := kernelRules(t, ns, r)
	err := tb.UpdatePolicies(r.Policies, []Policy{denyPolicy, webPolicy})
	if !errors.Is(err, ErrNoTable) || !errors.Is(err, unix.EBUSY) {
		t.Fatalf("UpdatePolicies = %v, want ErrNoTable (EBUSY)", err)
	}
	compareChainRules(t, "after the refused batch", before, kernelRules(t, ns, r))
	if got := kernelAddrs(t, ns, "policy_in4"); !slices.Contains(got, netip.MustParseAddr("10.88.4.7")) {
		t.Fatalf("policy_in4 = %v after the refused batch", got)
	}
	mustSync(t, tb, withPolicies(r, denyPolicy, webPolicy))
}

// layoutBatchLen is the number of messages of the batch that takes the policies from
// old to next (every range element to delete taken as held).
func layoutBatchLen(t *testing.T, old, next []Policy) int {
	t.Helper()
	pl, err := planPolicyLayout(old, next)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string][]chainRule{} // the chains as Sync writes them for old
	handle := uint64(0)
	for _, c := range append(policyChains(pl.old), inputChain(pl.old)) {
		for _, rd := range c.rules {
			handle++
			held[c.name] = append(held[c.name], chainRule{handle: handle, first: firstSet(rd.exprs)})
		}
	}
	b, err := pl.batch(held, func(_ setDef, want []elemDef) ([]elemDef, error) { return want, nil })
	if err != nil {
		t.Fatal(err)
	}
	return b.Len()
}

// podsPolicy selects every endpoint address of r.
func podsPolicy(r Ruleset) Policy {
	p := Policy{ID: "pods", Name: "ns/pods", Ingress: true, IngressRules: []PolicyRule{{AnyPeer: true, AnyPort: true}}}
	for _, e := range r.Endpoints {
		p.Selected = append(p.Selected, e.Addrs...)
	}
	return p
}

// The batch of UpdatePolicies does not grow with the endpoints or services of the
// tables, nor with the elements of a policy that does not change (one that selects every
// pod).
func TestUpdatePoliciesBatchSize(t *testing.T) {
	more := webPolicy
	more.IngressRules = append(slices.Clone(webPolicy.IngressRules), PolicyRule{AnyPeer: true, AnyPort: true})
	sizes := map[int]int{}
	for _, n := range []int{10, 1000} {
		r := bigRuleset(2, n, n)
		r.Services = manyServices(n)
		pods := podsPolicy(r)
		sizes[n] = layoutBatchLen(t, []Policy{denyPolicy, webPolicy, pods, extraPolicy}, []Policy{denyPolicy, more, pods, dnsPolicy})
	}
	if sizes[10] != sizes[1000] {
		t.Fatalf("batch of %d messages with 10 endpoints and services, %d with 1000", sizes[10], sizes[1000])
	}
	t.Logf("%d messages", sizes[10])
}

// The same on the kernel: what UpdatePolicies reads and sends does not depend on the
// endpoints and services that the tables hold.
func TestPrivilegedUpdatePoliciesBatchSize(t *testing.T) {
	more := webPolicy
	more.IngressRules = append(slices.Clone(webPolicy.IngressRules), PolicyRule{AnyPeer: true, AnyPort: true})
	sizes := map[int]int{}
	for _, n := range []int{10, 1000} {
		tb, _ := openTable(t)
		r := bigRuleset(2, n, n)
		r.Services = manyServices(n)
		pods := podsPolicy(r)
		r.Policies = []Policy{denyPolicy, webPolicy, pods, extraPolicy}
		mustSync(t, tb, r)
		next := []Policy{denyPolicy, more, pods, dnsPolicy}
		pl, err := planPolicyLayout(r.Policies, next)
		if err != nil {
			t.Fatal(err)
		}
		tb.mu.Lock()
		b, err := tb.policyLayoutBatchLocked(pl)
		tb.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		sizes[n] = b.Len()
		if err := tb.UpdatePolicies(r.Policies, next); err != nil {
			t.Fatal(err)
		}
		wantInSync(t, tb, withPolicies(r, next...), true)
	}
	if sizes[10] != sizes[1000] {
		t.Fatalf("batch of %d messages with 10 endpoints and services, %d with 1000", sizes[10], sizes[1000])
	}
}

// Random subsets of policies one after the other: each call inserts the rules of the
// policies that come where Sync writes them (before, between and after those that stay,
// in ID order), and the tables equal a Sync of the new policies each time.
func TestPrivilegedUpdatePoliciesPlaces(t *testing.T) {
	tb, _ := openTable(t)
	var pool []Policy
	for i, id := range []string{"10", "20", "30", "40", "50", "60"} {
		p := webPolicy
		if i%2 == 1 {
			p = dnsPolicy
		}
		p.ID, p.Name = id+p.ID[2:], fmt.Sprintf("%s-%s", p.Name, id)
		pool = append(pool, p)
	}
	r := withPolicies(policyExample, denyPolicy, pool[2])
	mustSync(t, tb, r)
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 40 {
		next := []Policy{denyPolicy} // deny has Egress: chain input stays
		for _, p := range pool {
			if rng.IntN(2) == 0 {
				next = append(next, p)
			}
		}
		if err := tb.UpdatePolicies(r.Policies, next); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		r = withPolicies(r, next...)
		wantInSync(t, tb, r, true)
	}
}

// Random subsets of policies of three groups one after the other: groups come and go
// (their isolation sets, chains and dispatch rules, placed where Sync writes them),
// addresses move from one group to another, and the tables equal a Sync of the new
// policies each time.
func TestPrivilegedUpdatePoliciesGroups(t *testing.T) {
	tb, _ := openTable(t)
	groupNames := []string{"", "ga", "gb"}
	var pool []Policy
	for i := range 9 {
		p := []Policy{webPolicy, dnsPolicy, denyPolicy}[i%3] // Ingress; Egress; both
		p.ID, p.Name, p.Group = fmt.Sprintf("p%d", i), fmt.Sprintf("g/p%d", i), groupNames[(i+i/3)%3]
		p.Selected = addrs(fmt.Sprintf("10.88.4.%d", 20+i%4), fmt.Sprintf("fd00:88:4::%x", 0x20+i%4))
		pool = append(pool, p)
	}
	r := withPolicies(policyExample, denyPolicy) // deny has Egress: chain input stays
	mustSync(t, tb, r)
	rng := rand.New(rand.NewPCG(3, 4))
	came, went := map[string]int{}, map[string]int{}
	moved := 0
	was := map[netip.Addr]string{}
	for step := range 60 {
		next := []Policy{denyPolicy}
		owner := map[netip.Addr]string{}
		for _, p := range pool {
			if rng.IntN(2) == 1 || slices.ContainsFunc(p.Selected, func(a netip.Addr) bool { g, ok := owner[a]; return ok && g != p.Group }) {
				continue // policies of two groups must not select the same address
			}
			next = append(next, p)
			for _, a := range p.Selected {
				owner[a] = p.Group
			}
		}
		for _, d := range directions {
			before, after := groupSet(r.Policies, d), groupSet(next, d)
			for g := range after {
				if !before[g] {
					came[g]++
				}
			}
			for g := range before {
				if !after[g] {
					went[g]++
				}
			}
		}
		for a, g := range owner {
			if o, ok := was[a]; ok && o != g {
				moved++
			}
		}
		was = owner
		if err := tb.UpdatePolicies(r.Policies, next); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		r = withPolicies(r, next...)
		wantInSync(t, tb, r, true)
	}
	for _, g := range groupNames[1:] {
		if came[g] == 0 || went[g] == 0 {
			t.Errorf("group %q came %d times and went %d times; want both", g, came[g], went[g])
		}
	}
	if moved == 0 {
		t.Error("no address moved from one group to another")
	}
}
