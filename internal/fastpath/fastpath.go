// Package fastpath carries the traffic between two pods of one node around the bridge
// and netfilter: a tcx program (eBPF, at the ingress of each endpoint's host veth)
// redirects a pod's packet straight to the destination pod's host veth when podnet's
// own rules would let it through, and leaves everything else to the kernel's path,
// where the nftables tables stay the authority.
//
// Why. A frame between two pods of a bridge crosses seven netfilter hooks (the bridge
// family's anti-spoofing, br_netfilter's inet prerouting and forward, conntrack's and
// NAT's), each an indirect call of a few percent of a small packet's cost, where a
// plain bridge crosses none; a packet between two routed pods crosses podnet's chains,
// conntrack and NAT where plain forwarding crosses none (README, throughput).
// Flowtables, which skip the hooks for established flows, are not in every kernel
// (CONFIG_NF_FLOW_TABLE).
//
// What is redirected:
//   - within a bridge, what podnet's rules pass without conntrack (internal/nft: chain
//     from-bridge's notrack rule, the forward chain's untracked rule): a frame from a
//     bridged endpoint's port with the endpoint's MAC and one of its addresses (the
//     bridge table's anti-spoofing), to another endpoint's address and MAC on the same
//     bridge;
//   - between two routed pods of one network, what the node would forward from one
//     host veth to the other: a packet from a routed endpoint's host veth with one of
//     its addresses (chain endpoint-src), sent to the host veth's MAC, to another
//     endpoint of the same network, with its TTL above 1. The program takes one off
//     the TTL and addresses the frame as the node would, from the destination's host
//     veth to the pod's MAC (the node's neighbour entry of a routed pod is permanent,
//     made from the same MAC by the routed driver). The kernel's path tracks
//     these connections (conntrack), the fast path does not: when a policy comes to
//     isolate either pod, conntrack picks its open TCP connections up mid-way, which
//     the policies' pickup rule lets through (internal/nft, chain policies), as it does
//     within a bridge;
//   - in both cases, neither address isolated by a policy: the agent keeps an isolated
//     address out of the maps.
//
// The routed case trusts the node's routes and neighbour entries of its own pods
// (POD/32 dev HOSTVETH, POD lladdr MAC permanent, which the agent keeps) and does not
// read the FIB or the neighbour table: pods of one routed network of the node
// still reach each other with forwarding turned off by hand (the doctor's
// ip-forward-disabled) or a policy-routing rule that would send them elsewhere.
// bpf_fib_lookup would follow both, at the price of a route lookup per packet, as
// bpf_redirect_neigh did, which the routed case used at first: its route and neighbour
// lookups cost 1.07 per byte and per packet of writing the MACs (README, throughput).
//
// The program checks the source and the destination with two hash lookups (maps src
// and dst). The rest (ARP, neighbour discovery, traffic to the node or through it to
// elsewhere, isolated pods, spoofed sources) takes the kernel's path as before.
//
// How it follows the tables. Applier wraps the agent's nft.Applier: it reads the same
// Ruleset, Deltas and policy lists, and changes the maps around each commit of the
// tables. Entries that a change takes away (an address becomes isolated, an endpoint
// goes) leave the maps before the tables change, entries it brings come after, so the
// fast path never passes what the tables, before or after, would not. The host veths
// and bridges come from a netlink subscription in the node namespace: an endpoint's
// entries exist while its host veth is up (bridged: and a port of its network's
// bridge), and the program is attached to the host veth when it appears (a bpf link
// owned by the agent's process: when the agent exits, the links and maps go with it and
// traffic takes the kernel's path).
//
// Traces. A flow that `podnet trace` follows must cross the hooks to be seen: Bypass
// puts it in map slow, which the program checks last, and takes it out afterwards.
package fastpath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/nft"
)

// Applier is an nft.Applier that keeps the fast path of the node namespace in step with
// the tables it applies (package doc).
type Applier struct {
	nft.Applier
	ns   netns.NsHandle
	objs *objects
	logf func(format string, args ...any)

	mu sync.Mutex
	// m is the model of the tables; nil until InSync finds them equal to a Ruleset or
	// Sync writes one, and after a change of the tables failed (the fast path is then
	// off: the tables may hold either state).
	m        *model
	links    map[string]linkState // the namespace's links by name
	names    map[int]string       // and their names by ifindex
	attached map[string]attachment
	srcAt    map[netip.Addr]entry // entries of maps src and dst, by address
	dstAt    map[netip.Addr]entry
	broken   bool // an entry could not be removed: the program stays detached
	// domains number the routed networks for the keys of map dst, from firstDomain on,
	// never reused while the Applier lives (bridges are keyed by their ifindex).
	domains map[string]uint32

	done chan struct{}
	wg   sync.WaitGroup
}

type linkState struct {
	index, master int
	up            bool
	mac           [6]byte
}

type attachment struct {
	ifindex int
	l       link.Link
}

type entry struct {
	key portKey
	val port
}

// New loads the program and its maps, and starts following the links of ns (a handle
// the Applier duplicates). logf reports what fails on the way (an attach refused): the
// traffic concerned takes the kernel's path.
func New(ns netns.NsHandle, inner nft.Applier, logf func(format string, args ...any)) (*Applier, error) {
	objs, err := load()
	if err != nil {
		return nil, err
	}
	// A kernel without tcx (before 6.6) says so here, once, rather than at every veth.
	l, err := attachTCX(ns, 1, objs.prog) // lo
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("attach a tcx program: %w", err)
	}
	l.Close()
	fd, err := unix.Dup(int(ns))
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("fast path: %w", err)
	}
	f := &Applier{
		Applier: inner, ns: netns.NsHandle(fd), objs: objs, logf: logf,
		links: map[string]linkState{}, names: map[int]string{}, attached: map[string]attachment{},
		srcAt: map[netip.Addr]entry{}, dstAt: map[netip.Addr]entry{}, domains: map[string]uint32{},
		done: make(chan struct{}),
	}
	f.wg.Add(1)
	go f.watch()
	return f, nil
}

// Sync replaces the tables with r: the entries r no longer allows go first, those it
// brings come after.
func (f *Applier) Sync(r nft.Ruleset) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.m
	t := newTouched()
	f.all(t)
	next := modelOf(r)
	next.addrs(t)
	f.m = next
	f.install(t, true)
	if err := f.Applier.Sync(r); err != nil {
		f.m = prev // Sync changed nothing
		f.install(t, false)
		return err
	}
	f.install(t, false)
	return nil
}

// Update changes the tables by add and remove (nft.Applier), and the fast path with
// them.
func (f *Applier) Update(add, remove nft.Delta) error {
	return f.change(func(m *model, t touched) { m.apply(add, remove, t) }, func() error { return f.Applier.Update(add, remove) })
}

// UpdatePolicies makes the tables' policies go from old to next (nft.Applier), and the
// isolated addresses with them.
func (f *Applier) UpdatePolicies(old, next []nft.Policy) error {
	return f.change(func(m *model, t touched) { m.setPolicies(next, t) }, func() error { return f.Applier.UpdatePolicies(old, next) })
}

// change applies an incremental change to the model, then to the tables; when the
// tables refuse it, the fast path is off until they are found in sync or synced.
func (f *Applier) change(model func(*model, touched), tables func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		return tables()
	}
	t := newTouched()
	model(f.m, t)
	f.install(t, true)
	if err := tables(); err != nil {
		f.off()
		return err
	}
	f.install(t, false)
	return nil
}

// InSync reports whether the tables equal r; when they do, the fast path follows r
// (at the agent's start, after a failed change, after a repair).
func (f *Applier) InSync(r nft.Ruleset) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ok, err := f.Applier.InSync(r)
	if err != nil || !ok {
		return ok, err
	}
	t := newTouched()
	f.all(t)
	f.m = modelOf(r)
	f.m.addrs(t)
	f.install(t, false)
	return true, nil
}

// Delete removes the tables, and empties the fast path first.
func (f *Applier) Delete() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.off()
	return f.Applier.Delete()
}

// Close detaches the program and releases the maps, then closes the tables' applier.
func (f *Applier) Close() error {
	close(f.done)
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detachAll()
	return errors.Join(f.objs.Close(), unix.Close(int(f.ns)), f.Applier.Close())
}

// detachAll detaches the program from every host veth.
func (f *Applier) detachAll() {
	for h := range f.attached {
		f.detach(h)
	}
}

func (f *Applier) detach(h string) {
	if err := f.attached[h].l.Close(); err != nil {
		f.logf("fast path: detach from %s: %v", h, err)
	}
	delete(f.attached, h)
}

// all adds everything the fast path holds now to t.
func (f *Applier) all(t touched) {
	if f.m != nil {
		f.m.addrs(t)
	}
	for a := range f.srcAt {
		t.addrs[a] = true
	}
	for a := range f.dstAt {
		t.addrs[a] = true
	}
	for h := range f.attached {
		t.hostIfs[h] = true
	}
}

// off empties maps src and dst: everything takes the kernel's path.
func (f *Applier) off() {
	f.m = nil
	for a, e := range f.srcAt {
		f.remove(f.objs.src, e)
		delete(f.srcAt, a)
	}
	for a, e := range f.dstAt {
		f.remove(f.objs.dst, e)
		delete(f.dstAt, a)
	}
}

// install makes the entries of the addresses t touched (and those of its host veths and
// bridges' endpoints) what the model and the links say. With withdraw, it only removes
// the entries that differ: what a change takes away, before the tables change.
// Without, it also adds, and attaches or detaches the program of t's host veths.
func (f *Applier) install(t touched, withdraw bool) {
	if f.m != nil {
		for b := range t.bridges {
			for h, e := range f.m.eps {
				if e.bridge == b {
					t.hostIfs[h] = true
				}
			}
		}
		for h := range t.hostIfs {
			if e := f.m.eps[h]; e != nil {
				for _, a := range e.addrs {
					t.addrs[a] = true
				}
			}
		}
	}
	if !withdraw {
		for h := range t.hostIfs {
			f.attach(h)
		}
	}
	for a := range t.addrs {
		src, dst := f.want(a)
		f.set(f.objs.src, f.srcAt, a, src, withdraw)
		f.set(f.objs.dst, f.dstAt, a, dst, withdraw)
	}
}

// set makes at[a] (and map m) hold want, or nothing when want is nil; with withdraw
// it only removes.
func (f *Applier) set(m *ebpf.Map, at map[netip.Addr]entry, a netip.Addr, want *entry, withdraw bool) {
	cur, ok := at[a]
	if ok && want != nil && cur == *want {
		return
	}
	if ok {
		f.remove(m, cur)
		delete(at, a)
	}
	if want == nil || withdraw {
		return
	}
	if err := m.Put(want.key, want.val); err != nil {
		f.logf("fast path: add %s to %s: %v", a, mapName(m), err)
		return
	}
	at[a] = *want
}

// remove deletes e from m. Should the kernel refuse, the entry might let through what
// the tables no longer would: the program is then detached everywhere, for good (until
// the agent restarts).
func (f *Applier) remove(m *ebpf.Map, e entry) {
	err := m.Delete(e.key)
	if err == nil || errors.Is(err, ebpf.ErrKeyNotExist) {
		return
	}
	f.logf("fast path: remove from %s: %v; the fast path stops", mapName(m), err)
	f.broken = true
	f.detachAll()
}

func mapName(m *ebpf.Map) string {
	if info, err := m.Info(); err == nil {
		return info.Name
	}
	return "map"
}

// want is what maps src and dst must hold for address a (nil: nothing). An address of
// two endpoints, of an endpoint whose host veth is not up (and, bridged, a port of its
// network's up bridge; routed, no port), or isolated by a policy in either direction
// (whose connections conntrack follows both ways) has no entry.
func (f *Applier) want(a netip.Addr) (src, dst *entry) {
	if f.m == nil {
		return nil, nil
	}
	owners := f.m.owners[a]
	if len(owners) != 1 || f.m.isolated(a) {
		return nil, nil
	}
	e := f.m.eps[owners[0]]
	h, ok := f.links[e.hostIf]
	if !ok || !h.up {
		return nil, nil
	}
	addr := addrBytes(a)
	if e.bridge == "" { // routed: the frame is sent to the host veth's MAC
		network := f.m.routedNetwork(a)
		if network == "" || h.master != 0 {
			return nil, nil
		}
		if len(e.mac) != 6 {
			return nil, nil // the tables were given no MAC of the pod: no frame to make
		}
		domain := f.domain(network)
		src = &entry{portKey{uint32(h.index), addr}, port{MAC: h.mac, Flags: flagRouted, Ifindex: domain}}
		dst = &entry{portKey{domain, addr}, port{MAC: [6]byte(e.mac), Flags: flagRouted, Ifindex: uint32(h.index), HostMAC: h.mac}}
		return src, dst
	}
	b, ok := f.links[e.bridge]
	if !ok || !b.up || h.master != b.index || !f.m.bridges[e.bridge] {
		return nil, nil
	}
	mac := [6]byte(e.mac)
	src = &entry{portKey{uint32(h.index), addr}, port{MAC: mac, Ifindex: uint32(b.index)}}
	dst = &entry{portKey{uint32(b.index), addr}, port{MAC: mac, Ifindex: uint32(h.index)}}
	return src, dst
}

// domain is the number of routed network name in the keys of map dst.
func (f *Applier) domain(name string) uint32 {
	d, ok := f.domains[name]
	if !ok {
		d = firstDomain + uint32(len(f.domains))
		f.domains[name] = d
	}
	return d
}

// attach attaches the program to host veth h when h is an endpoint's and exists, and
// detaches it otherwise.
func (f *Applier) attach(h string) {
	cur, has := f.attached[h]
	ls, exists := f.links[h]
	want := f.m != nil && f.m.eps[h] != nil && exists && !f.broken
	if has && (!want || cur.ifindex != ls.index) {
		f.detach(h)
		has = false
	}
	if !want || has {
		return
	}
	l, err := attachTCX(f.ns, ls.index, f.objs.prog)
	if err != nil {
		if !errors.Is(err, unix.ENODEV) { // gone meanwhile: its removal follows
			f.logf("fast path: attach to %s: %v", h, err)
		}
		return
	}
	f.attached[h] = attachment{ifindex: ls.index, l: l}
}

// attachTCX attaches prog at the tcx ingress of interface ifindex of namespace ns (the
// kernel resolves the ifindex in the caller's namespace).
func attachTCX(ns netns.NsHandle, ifindex int, prog *ebpf.Program) (l link.Link, err error) {
	err = kernel.Do(ns, func() (err error) {
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
		return err
	})
	return l, err
}

// watch follows the links of the namespace until Close.
func (f *Applier) watch() {
	defer f.wg.Done()
	for {
		ch := make(chan netlink.LinkUpdate, 1024)
		stop := make(chan struct{})
		err := netlink.LinkSubscribeWithOptions(ch, stop, netlink.LinkSubscribeOptions{
			Namespace: &f.ns, ListExisting: true,
			ErrorCallback: func(err error) {
				select {
				case <-stop: // closed by us
				default:
					f.logf("fast path: link updates: %v", err)
				}
			},
		})
		if err != nil {
			f.logf("fast path: follow links: %v", err)
			select {
			case <-time.After(time.Second):
				continue
			case <-f.done:
				return
			}
		}
		f.forgetLinks()
		if !f.follow(ch) {
			close(stop)
			return
		}
		close(stop) // the subscription failed (ENOBUFS): list again
	}
}

// follow applies the updates of ch until it closes (true) or Close (false).
func (f *Applier) follow(ch <-chan netlink.LinkUpdate) bool {
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				return true
			}
			f.linkEvent(u)
		case <-f.done:
			return false
		}
	}
}

// forgetLinks clears what is known of the links before they are listed again: the
// entries wait for them.
func (f *Applier) forgetLinks() {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := newTouched()
	for name := range f.links {
		f.mark(name, t)
	}
	clear(f.links)
	clear(f.names)
	f.install(t, false)
}

func (f *Applier) linkEvent(u netlink.LinkUpdate) {
	attrs := u.Link.Attrs()
	f.mu.Lock()
	defer f.mu.Unlock()
	t := newTouched()
	if old, ok := f.names[attrs.Index]; ok && old != attrs.Name { // renamed
		delete(f.links, old)
		f.mark(old, t)
	}
	if u.Header.Type == unix.RTM_DELLINK {
		if f.links[attrs.Name].index == attrs.Index {
			delete(f.links, attrs.Name)
		}
		delete(f.names, attrs.Index)
	} else {
		up := attrs.Flags&net.FlagUp != 0 && (attrs.OperState == netlink.OperUp || attrs.OperState == netlink.OperUnknown)
		ls := linkState{index: attrs.Index, master: attrs.MasterIndex, up: up}
		copy(ls.mac[:], attrs.HardwareAddr)
		f.links[attrs.Name] = ls
		f.names[attrs.Index] = attrs.Name
	}
	f.mark(attrs.Name, t)
	f.install(t, false)
}

// mark adds link name to t when the fast path uses it.
func (f *Applier) mark(name string, t touched) {
	if f.m == nil {
		return
	}
	if f.m.eps[name] != nil {
		t.hostIfs[name] = true
	}
	if f.m.bridges[name] {
		t.bridges[name] = true
	}
}
