package fastpath

import (
	"net"
	"net/netip"
	"slices"

	"github.com/podnet/podnet/internal/nft"
)

// model is what the fast path needs of podnet's tables: the bridges of the networks,
// the bridged endpoints, and the addresses that policies isolate. It follows the
// Ruleset, Deltas and policy lists the tables are given, with the same meaning
// (nft.Applier), and says which addresses each change touches.
type model struct {
	bridges map[string]bool           // the bridge networks' bridges
	routed  map[string][]netip.Prefix // the routed networks' subnets, by name
	eps     map[string]*endpoint      // endpoints by host veth
	owners  map[netip.Addr][]string
	pols    map[string]selection // policies by ID
	// isoIn and isoOut count, per address, the policies with Ingress (Egress) that
	// select it: the isolation sets' elements are the addresses counted here.
	isoIn, isoOut map[netip.Addr]int
	// extraIn and extraOut are the addresses that the isolation sets hold although no
	// policy selects them: Update takes an address out of a set only when remove lists
	// it (IngressIsolated, EgressIsolated), so a Delta that forgets one leaves it
	// isolated in the tables, and so here. Sync and UpdatePolicies make the sets the
	// union of the policies' again.
	extraIn, extraOut map[netip.Addr]bool
}

// endpoint is a pod's attachment: bridged (bridge set, with the pod's MAC) or routed
// (no bridge: the node routes to its addresses through hostIf).
type endpoint struct {
	hostIf, bridge string
	mac            net.HardwareAddr
	addrs          []netip.Addr
}

type selection struct {
	in, out bool
	sel     []netip.Addr
}

func newModel() *model {
	return &model{
		bridges: map[string]bool{}, routed: map[string][]netip.Prefix{}, eps: map[string]*endpoint{}, owners: map[netip.Addr][]string{},
		pols: map[string]selection{}, isoIn: map[netip.Addr]int{}, isoOut: map[netip.Addr]int{},
		extraIn: map[netip.Addr]bool{}, extraOut: map[netip.Addr]bool{},
	}
}

// routedNetwork is the name of the routed network whose subnets hold a ("" if none).
func (m *model) routedNetwork(a netip.Addr) string {
	for name, subnets := range m.routed {
		for _, p := range subnets {
			if p.Contains(a) {
				return name
			}
		}
	}
	return ""
}

// touched collects what a change of the model touches: addresses whose entries may
// change, and host veths whose program may have to be attached or detached.
type touched struct {
	addrs   map[netip.Addr]bool
	hostIfs map[string]bool
	bridges map[string]bool
}

func newTouched() touched {
	return touched{addrs: map[netip.Addr]bool{}, hostIfs: map[string]bool{}, bridges: map[string]bool{}}
}

// modelOf is the model of a whole Ruleset.
func modelOf(r nft.Ruleset) *model {
	m := newModel()
	t := newTouched()
	m.apply(nft.Delta{Networks: r.Networks, Endpoints: r.Endpoints}, nft.Delta{}, t)
	m.setPolicies(r.Policies, t)
	return m
}

// addrs are every address the model knows of: the endpoints'.
func (m *model) addrs(t touched) {
	for a := range m.owners {
		t.addrs[a] = true
	}
	for h := range m.eps {
		t.hostIfs[h] = true
	}
}

// apply changes m as nft.Applier.Update changes the tables: remove's elements go, then
// add's come. A policy in remove only keeps its types and selects nothing; one in add
// replaces the policy of its ID.
func (m *model) apply(add, remove nft.Delta, t touched) {
	routedChanged := false
	for _, n := range remove.Networks {
		if n.Bridge != "" {
			delete(m.bridges, n.Bridge)
			t.bridges[n.Bridge] = true
		} else {
			delete(m.routed, n.Name)
			routedChanged = true
		}
	}
	for _, e := range remove.Endpoints {
		m.removeEndpoint(e.HostIf, t)
	}
	for _, n := range add.Networks {
		if n.Bridge != "" {
			m.bridges[n.Bridge] = true
			t.bridges[n.Bridge] = true
		} else {
			m.routed[n.Name] = slices.Clone(n.Subnets)
			routedChanged = true
		}
	}
	if routedChanged { // the routed pods' networks may have changed: all of them
		for h, e := range m.eps {
			if e.bridge == "" {
				t.hostIfs[h] = true
			}
		}
	}
	for _, e := range add.Endpoints {
		if e.Bridge != "" && len(e.MAC) != 6 {
			continue // a bridge port without its MAC: the bridge table checks no MAC
		}
		old := m.eps[e.HostIf]
		addrs := slices.Clone(e.Addrs)
		if old != nil { // listed twice: the union of the addresses
			for _, a := range old.addrs {
				if !slices.Contains(addrs, a) {
					addrs = append(addrs, a)
				}
			}
			m.removeEndpoint(e.HostIf, t)
		}
		m.eps[e.HostIf] = &endpoint{hostIf: e.HostIf, bridge: e.Bridge, mac: slices.Clone(e.MAC), addrs: addrs}
		for _, a := range addrs {
			m.owners[a] = append(slices.Clone(m.owners[a]), e.HostIf)
			t.addrs[a] = true
		}
		t.hostIfs[e.HostIf] = true
	}
	type state struct{ in, out bool }
	before := map[netip.Addr]state{}
	for _, p := range append(slices.Clone(remove.Policies), add.Policies...) {
		for _, a := range append(slices.Clone(m.pols[p.ID].sel), p.Selected...) {
			before[a] = state{m.isoIn[a] > 0, m.isoOut[a] > 0}
		}
	}
	for _, p := range remove.Policies {
		if old, ok := m.pols[p.ID]; ok {
			m.setPolicy(p.ID, selection{in: old.in, out: old.out}, t)
		}
	}
	for _, p := range add.Policies {
		m.setPolicy(p.ID, selectionOf(p), t)
	}
	for a, b := range before { // no longer selected: in the sets until listed
		if b.in && m.isoIn[a] == 0 {
			m.extraIn[a] = true
		}
		if b.out && m.isoOut[a] == 0 {
			m.extraOut[a] = true
		}
	}
	listed := func(extra map[netip.Addr]bool, count map[netip.Addr]int, addrs []netip.Addr, in bool) {
		for _, a := range addrs {
			if in && count[a] == 0 {
				extra[a] = true
			} else if !in {
				delete(extra, a)
			}
			t.addrs[a] = true
		}
	}
	listed(m.extraIn, m.isoIn, remove.IngressIsolated, false)
	listed(m.extraOut, m.isoOut, remove.EgressIsolated, false)
	listed(m.extraIn, m.isoIn, add.IngressIsolated, true)
	listed(m.extraOut, m.isoOut, add.EgressIsolated, true)
}

// isolated reports whether a policy isolates a, in either direction.
func (m *model) isolated(a netip.Addr) bool {
	return m.isoIn[a] > 0 || m.isoOut[a] > 0 || m.extraIn[a] || m.extraOut[a]
}

func (m *model) removeEndpoint(hostIf string, t touched) {
	e := m.eps[hostIf]
	if e == nil {
		return
	}
	delete(m.eps, hostIf)
	for _, a := range e.addrs {
		owners := slices.DeleteFunc(slices.Clone(m.owners[a]), func(h string) bool { return h == hostIf })
		if len(owners) == 0 {
			delete(m.owners, a)
		} else {
			m.owners[a] = owners
		}
		t.addrs[a] = true
	}
	t.hostIfs[hostIf] = true
}

func selectionOf(p nft.Policy) selection {
	return selection{in: p.Ingress, out: p.Egress, sel: p.Selected}
}

// setPolicies makes the policies those of ps (nft.Applier.Sync, UpdatePolicies), and
// the isolation sets their union. Only the policies that differ are touched.
func (m *model) setPolicies(ps []nft.Policy, t touched) {
	next := make(map[string]bool, len(ps))
	for _, p := range ps {
		next[p.ID] = true
		m.setPolicy(p.ID, selectionOf(p), t)
	}
	for id := range m.pols {
		if !next[id] {
			m.setPolicy(id, selection{}, t)
			delete(m.pols, id)
		}
	}
	for _, extra := range []map[netip.Addr]bool{m.extraIn, m.extraOut} {
		for a := range extra {
			t.addrs[a] = true
		}
		clear(extra)
	}
}

// setPolicy replaces the selection of policy id, counting its addresses out of the
// isolation counts and the new ones in.
func (m *model) setPolicy(id string, s selection, t touched) {
	old := m.pols[id]
	if old.in == s.in && old.out == s.out && slices.Equal(old.sel, s.sel) {
		m.pols[id] = s
		return
	}
	count := func(s selection, d int) {
		for _, a := range s.sel {
			if s.in {
				bump(m.isoIn, a, d)
			}
			if s.out {
				bump(m.isoOut, a, d)
			}
			t.addrs[a] = true
		}
	}
	count(old, -1)
	count(s, 1)
	m.pols[id] = s
}

func bump(m map[netip.Addr]int, a netip.Addr, d int) {
	if n := m[a] + d; n > 0 {
		m[a] = n
	} else {
		delete(m, a)
	}
}
