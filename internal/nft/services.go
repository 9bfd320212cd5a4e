package nft

import (
	"bytes"
	"cmp"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Service virtual IPs, in table inet podnet.
//
// Everything a service owns is set and map elements; the rules and chains are the same
// whatever the services. Update changes elements only, so that changing a service's
// backends never adds a rule or a chain (whenever a batch adds a rule, a chain or a jump,
// the kernel validates again every chain and rule reachable from the base chains, which
// would make a backend change cost as much as the number of services if services had
// chains of their own: measured on 6.18, a batch adding one service chain behind a verdict
// map took 0.3 ms next to 10 such chains, 18 ms next to 10,000 of 3 rules). Nor does a
// service own a verdict map element: a batch that adds one (a jump or goto) has the
// kernel walk every element of the verdict maps looked up from the base chains, which
// took a new service's batch from 0.7 ms next to 10 services to 1.6 ms next to 10,000
// (BenchmarkPrivilegedServiceUpdate, add-service); with plain sets it stays flat.
//
// Every rule is one that nft (1.0.6 of Debian 12 and later) lists and parses back: no
// lookup's result feeds another lookup or a set update (nft cannot print that), and the
// maps with an integer field in their key (the backends' index) carry the "typeof" user
// data nft needs.
//
// The dispatch rule of the prerouting and output chains sends a packet whose key
// (VIP . protocol . port) is in set services4/6 to the slot tree service-slots4/6
// (slotTree), which takes it to the chain of the service's slot count: the number of its
// backends rounded up to a power of two, S. The slot code of S (0 for no backends, b+1
// for S = 2^b, slotCode) is in sets slot_bit0_4 to slot_bit3_4 (for IPv6 _6): the key is
// in slot_bit<B> when bit B of the code is 1. The tree tests the bits from the highest
// down, one set lookup and a goto each, and ends in pick-S or no-backends: with the
// membership and the affinity test, up to six lookups for a new connection to a service
// (nat chains see the first packet only) instead of one in a verdict map; other
// connections pay the membership lookup alone, as they paid the map's. Its backends have the indexes 0 to N-1, in backends4/6 (key . index : backend
// address . port), in address order. Chain pick-S draws "numgen random mod S" and DNATs to
// the backend with that index; an index without backend (N <= index < S) is drawn again,
// up to pickAttempts times, then drawn among the first S/2 backends (which all exist). A
// backend's share is 1/N, off by at most 2^-pickAttempts (1.6 %) for N just above a power
// of two. A service without backends goes to chain no-backends: TCP reset, ICMP port
// unreachable (which the kernel rate-limits per client: by default 1/s after a burst of 6,
// shared in IPv6 with the redirects the node sends).
//
// Affinity: the key of a service with affinity is in affinity_services4/6. The root of the
// slot tree first jumps to chain affinity for such a key, which DNATs to the client's
// remembered backend (the dynamic map affinity4/6, client address . key : backend) if it
// has one; else the tree goes on to pick-S. Chain dnatted (entered from postrouting,
// after the DNAT) remembers the backend of each new connection to a service with affinity,
// or refreshes the entry: it stays AffinityTimeout after the client's last new
// connection; when the map is full (affinitySize entries), connections are balanced
// without affinity. Update deletes the entries whose backend is no longer the service's
// (or all of the service's when it loses affinity or goes).
//
// NodePort: a service with a NodePort owns elements keyed by the NodePort as well. Chain
// local-ports (entered by the prerouting and output chains for local destinations only,
// "fib daddr type local") sends a connection whose "meta nfproto . meta l4proto . th
// dport" is in set nodeports to the slot tree nodeport-slots, with sets
// nodeport_slot_bit0 to 3 and affinity_nodeports, which ends in chain nodeport-pick-S or
// no-backends: the same slot count S, the same draws and the same rejection as for the
// VIP. The pick chains of the VIP cannot serve the NodePort: they
// key the backends by the packet's destination, which is the VIP there and any local
// address here, and a packet is DNATed once per hook. So the NodePort has its copy of the
// backends, nodeport_backends4/6 (l4proto . NodePort . index : backend, the same indexes),
// which chain nodeport-pick-S draws from, keyed by the packet's l4proto . th dport. A
// change of the service's backends changes both copies (twice the elements, still no rule
// or chain). service_nodeports4/6 (VIP . l4proto . port : NodePort) records each service's
// NodePort: no rule reads it; Update looks it up by the service's key to find the
// NodePort elements of the service it replaces or removes, so that a Delta still names a
// service by its key alone.
//
// Affinity of NodePort connections uses chain affinity and the maps affinity4/6 as they
// are: the entry's key is the client . the destination it connected to (here the node's
// address) . l4proto . port, so a client keeps its backend per node address it connects
// to (the VIP and each node address have their own entry). The NodePorts of services with
// affinity are in set affinity_nodeports, by which chain dnatted remembers the backends of
// NodePort connections (rememberRule); Update forgets the entries of a NodePort as it does
// those of a VIP (whatever the node address in them).
//
// Masquerade: a NodePort connection is masqueraded whatever its source (as kube-proxy does
// with externalTrafficPolicy Cluster): the backend may be on another node, and its reply
// must come back through this node to be un-DNATed. The backend sees the node's address.
// postrouting jumps to chain dnatted for DNATed connections only (first packets), where two
// rules (TCP, UDP: nft needs the protocol to print "ct original proto-dst") look the
// connection's original nf_proto . l4proto . port up in set nodeports. No packet mark is
// used (marks are shared with other tools and steer routing).
// What the rules match is the connection's original family, protocol and port, not the
// path that DNATed it: a connection to a VIP or a published port whose original port is a
// NodePort of its family and protocol is masqueraded too (its backend then sees a node's
// address; the agent refuses published ports that collide with NodePorts).

// Names of the service sets, maps and chains. The per-family ones end in 4 or 6.
const (
	setServices         = "services"
	setSlotBit          = "slot_bit" // + bit + "_" + family suffix: slot_bit0_4
	setAffinityServices = "affinity_services"
	mapBackends         = "backends"
	mapAffinity         = "affinity"
	// NodePorts: nodeports, nodeport_slot_bit<B> and affinity_nodeports are keyed with
	// the family (nf_proto), the others are per family.
	setNodePorts         = "nodeports"
	setNodePortSlotBit   = "nodeport_slot_bit" // + bit
	setAffinityNodePorts = "affinity_nodeports"
	mapNodePortBackends  = "nodeport_backends"
	mapServiceNodePorts  = "service_nodeports"

	chainNoBackends    = "no-backends"
	chainAffinity      = "affinity"
	chainServiceSlots  = "service-slots"  // + family suffix, then "-" + the bits tested so far
	chainNodePortSlots = "nodeport-slots" // + "-" + the bits tested so far
	chainPick          = "pick-"          // + slot count
	chainNodePortPick  = "nodeport-pick-" // + slot count
)

const (
	// maxSlotBits bounds the slot counts: 1, 2, 4, ..., 1<<maxSlotBits.
	maxSlotBits = 12
	// slotCodeBits is the number of bits of a slot code (slotCode), each a set.
	slotCodeBits = 4
	// pickAttempts is the number of draws among S slots before a draw among S/2.
	pickAttempts = 6
	// affinitySize is the capacity of each affinity map.
	affinitySize = 65535
)

// slotCounts are the slot counts that have a pick chain.
func slotCounts() []uint32 {
	out := make([]uint32, 0, maxSlotBits+1)
	for b := range maxSlotBits + 1 {
		out = append(out, 1<<b)
	}
	return out
}

// slotCode is the code of slot count n in the slot_bit sets: 0 for none (no backends),
// b+1 for 1<<b.
func slotCode(n uint32) uint8 {
	if n == 0 {
		return 0
	}
	return uint8(bits.Len32(n-1)) + 1
}

// codeSlots is the slot count of code c (slotCode's inverse); ok is false for a code no
// slot count has.
func codeSlots(c uint8) (n uint32, ok bool) {
	switch {
	case c == 0:
		return 0, true
	case int(c) > maxSlotBits+1:
		return 0, false
	}
	return 1 << (c - 1), true
}

// slots is the slot count of a service with n backends: n rounded up to a power of two,
// 0 for none.
func slots(n int) uint32 {
	if n == 0 {
		return 0
	}
	return 1 << bits.Len(uint(n-1))
}

// normServices sorts the services by family and key, and leaves out what Validate and
// validateNodePorts reject: the later services of a key listed twice, the NodePort of a
// service whose NodePort an earlier one has. Backends are sorted, without duplicates.
func normServices(in []Service) []Service {
	svcs := slices.Clone(in)
	slices.SortStableFunc(svcs, func(a, b Service) int {
		return cmp.Or(cmpBool(a.VIP.Is4(), b.VIP.Is4()), a.VIP.Compare(b.VIP),
			cmp.Compare(protoNumber(a.Protocol), protoNumber(b.Protocol)), cmp.Compare(a.Port, b.Port))
	})
	seen := map[serviceKey]bool{}
	nodePorts := map[nodePortKey]bool{}
	out := svcs[:0]
	for _, s := range svcs {
		if s.validate() != nil || seen[s.key()] {
			continue
		}
		seen[s.key()] = true
		if s.NodePort != 0 {
			if nodePorts[s.nodePortKey()] {
				s.NodePort = 0
			} else {
				nodePorts[s.nodePortKey()] = true
			}
		}
		s.Backends = sortedBackends(s.Backends)
		out = append(out, s)
	}
	return out
}

// family is the ipFamily of the service's VIP.
func (k serviceKey) family() ipFamily {
	if k.vip.Is4() {
		return ip4
	}
	return ip6
}

// bytes is the key as the kernel sees it: VIP . l4proto . port, fields padded to 4 bytes.
func (k serviceKey) bytes() []byte {
	return slices.Concat(k.vip.AsSlice(), []byte{k.proto, 0, 0, 0, byte(k.port >> 8), byte(k.port), 0, 0})
}

// text is the key in nft syntax.
func (k serviceKey) text() string {
	proto := "tcp"
	if k.proto == protoNumber("udp") {
		proto = "udp"
	}
	return k.vip.String() + " . " + proto + " . " + strconv.Itoa(int(k.port))
}

// addrPortBytes is an address . port concatenation as the kernel stores it.
func addrPortBytes(b netip.AddrPort) []byte {
	return slices.Concat(b.Addr().AsSlice(), []byte{byte(b.Port() >> 8), byte(b.Port()), 0, 0})
}

func addrPortText(b netip.AddrPort) string {
	return b.Addr().String() + " . " + strconv.Itoa(int(b.Port()))
}

// validateNodePorts checks the NodePorts of svcs, which Delta.Validate does not check
// (yet; Table.Sync and Table.Update call it after Validate): a service listed twice (one
// key) has one NodePort, and no two services of one family have the same protocol and
// NodePort (the two Services of a dual-stack service may).
func validateNodePorts(svcs []Service) error {
	byKey := make(map[serviceKey]Service, len(svcs))
	byNodePort := map[nodePortKey]Service{}
	for _, s := range svcs {
		k := s.key()
		if o, ok := byKey[k]; ok && o.NodePort != s.NodePort {
			return fmt.Errorf("service %q (%s): listed twice with NodePorts %d and %d", s.Name, s, o.NodePort, s.NodePort)
		}
		byKey[k] = s
		if s.NodePort == 0 {
			continue
		}
		if o, ok := byNodePort[s.nodePortKey()]; ok && o.key() != k {
			return fmt.Errorf("service %q (%s): NodePort %s already used by service %q (%s)", s.Name, s, s.nodePortKey(), o.Name, o)
		}
		byNodePort[s.nodePortKey()] = s
	}
	return nil
}

// nodePortKey identifies a NodePort: at most one service per key. The NodePorts of the
// two services of a dual-stack service (one per family) are two keys.
type nodePortKey struct {
	nfproto byte // unix.NFPROTO_IPV4 or unix.NFPROTO_IPV6: the family of the service's VIP
	proto   byte
	port    uint16
}

// nodePortKey is the key of s's NodePort (s.NodePort must be set).
func (s Service) nodePortKey() nodePortKey {
	return nodePortKey{nfproto: s.key().family().nfproto, proto: protoNumber(s.Protocol), port: s.NodePort}
}

// family is the ipFamily of the NodePort's service.
func (k nodePortKey) family() ipFamily {
	if k.nfproto == ip6.nfproto {
		return ip6
	}
	return ip4
}

// bytes is the key as the kernel sees it in nodeports, the nodeport_slot_bit sets and
// affinity_nodeports: nf_proto . l4proto . port, fields padded to 4 bytes.
func (k nodePortKey) bytes() []byte {
	return slices.Concat([]byte{k.nfproto, 0, 0, 0}, k.portBytes())
}

// portBytes is l4proto . port: the key of the NodePort's backends without the index, and
// what the affinity entries of the NodePort hold after the client's and the node's address.
func (k nodePortKey) portBytes() []byte {
	return []byte{k.proto, 0, 0, 0, byte(k.port >> 8), byte(k.port), 0, 0}
}

// protoText is the protocol's name.
func (k nodePortKey) protoText() string {
	if k.proto == protoNumber("udp") {
		return "udp"
	}
	return "tcp"
}

// text is the key in nft syntax, as in map nodeports.
func (k nodePortKey) text() string {
	return k.family().nfprotoName() + " . " + k.protoText() + " . " + strconv.Itoa(int(k.port))
}

// String prints the key as "tcp 30080 (ipv4)".
func (k nodePortKey) String() string {
	return k.protoText() + " " + strconv.Itoa(int(k.port)) + " (" + k.family().nfprotoName() + ")"
}

// nfprotoName is nft's name of the family's nf_proto value.
func (f ipFamily) nfprotoName() string {
	if f == ip6 {
		return "ipv6"
	}
	return "ipv4"
}

// serviceElems is what one service owns: elements of the sets and maps of its family, and
// with a NodePort, elements of the NodePort sets and maps.
type serviceElems struct {
	key      serviceKey
	affinity bool      // the key is in affinity_services
	member   elemDef   // the key in services, with the service's name as comment
	slots    uint32    // the slot count (0: no backends), in the slot_bit sets
	backends []elemDef // key . index : backend

	nodePort         *nodePortKey // nil without NodePort
	nodePortAffinity bool         // the NodePort is in affinity_nodeports
	nodePortMember   elemDef      // the NodePort key in nodeports
	nodeBackends     []elemDef    // l4proto . NodePort . index : backend
}

// elems returns the elements of s, which must be valid with sorted backends.
func (s Service) elems() serviceElems {
	k := s.key()
	e := serviceElems{
		key:      k,
		affinity: s.Affinity,
		member:   elemDef{key: k.bytes(), text: k.text(), comment: comment(s.Name)},
		slots:    slots(len(s.Backends)),
	}
	for i, b := range s.Backends {
		e.backends = append(e.backends, backendElem(k, i, b))
	}
	if s.NodePort != 0 {
		np := s.nodePortKey()
		e.nodePort, e.nodePortAffinity = &np, s.Affinity
		e.nodePortMember = nodePortMember(np, s.Name)
		for i, b := range s.Backends {
			e.nodeBackends = append(e.nodeBackends, nodeBackendElem(np, i, b))
		}
	}
	return e
}

// nodePortMember is the element of set nodeports of NodePort k of service name.
func nodePortMember(k nodePortKey, name string) elemDef {
	return elemDef{key: k.bytes(), text: k.text(), comment: comment(name)}
}

// nodeBackendElem is the element of backend b, with index i, of NodePort k.
func nodeBackendElem(k nodePortKey, i int, b netip.AddrPort) elemDef {
	return elemDef{
		key:  nodeBackendKey(k, i),
		data: addrPortBytes(b),
		text: k.protoText() + " . " + strconv.Itoa(int(k.port)) + " . " + strconv.Itoa(i) + " : " + addrPortText(b),
	}
}

// nodeBackendKey is the key of the backend with index i of NodePort k (host-endian index,
// as for the VIP's).
func nodeBackendKey(k nodePortKey, i int) []byte {
	return slices.Concat(k.portBytes(), binaryutil.NativeEndian.PutUint32(uint32(i)))
}

// nodePortRecord is the element of service_nodeports4/6 that records NodePort port of the
// service with key k.
func nodePortRecord(k serviceKey, port uint16) elemDef {
	return elemDef{key: k.bytes(), data: []byte{byte(port >> 8), byte(port)}, text: k.text() + " : " + strconv.Itoa(int(port))}
}

// backendElem is the element of backend b, with index i, of the service with key k.
func backendElem(k serviceKey, i int, b netip.AddrPort) elemDef {
	return elemDef{
		key:  backendKey(k, i),
		data: addrPortBytes(b),
		text: k.text() + " . " + strconv.Itoa(i) + " : " + addrPortText(b),
	}
}

// backendKey is the key of the backend with index i of the service with key k. The index
// is host-endian, as numgen writes it.
func backendKey(k serviceKey, i int) []byte {
	return slices.Concat(k.bytes(), binaryutil.NativeEndian.PutUint32(uint32(i)))
}

// sets returns the elements by set name.
func (e serviceElems) sets() map[string][]elemDef {
	sfx := e.key.family().suffix
	out := map[string][]elemDef{
		setServices + sfx: {e.member},
		mapBackends + sfx: e.backends,
	}
	plain := elemDef{key: e.key.bytes(), text: e.key.text()}
	for _, b := range slotBits(e.slots) {
		out[slotBitSet(b, e.key.family())] = []elemDef{plain}
	}
	if e.affinity {
		out[setAffinityServices+sfx] = []elemDef{plain}
	}
	if np := e.nodePort; np != nil {
		plain := elemDef{key: np.bytes(), text: np.text()}
		out[mapServiceNodePorts+sfx] = []elemDef{nodePortRecord(e.key, np.port)}
		out[setNodePorts] = []elemDef{e.nodePortMember}
		for _, b := range slotBits(e.slots) {
			out[nodePortSlotBitSet(b)] = []elemDef{plain}
		}
		out[mapNodePortBackends+sfx] = e.nodeBackends
		if e.nodePortAffinity {
			out[setAffinityNodePorts] = []elemDef{plain}
		}
	}
	return out
}

// slotBits are the bits set in the slot code of slot count n.
func slotBits(n uint32) []int {
	var out []int
	for b, c := 0, slotCode(n); b < slotCodeBits; b++ {
		if c>>b&1 == 1 {
			out = append(out, b)
		}
	}
	return out
}

// slotBitSet is the set of the services of family f whose slot code has bit b.
func slotBitSet(b int, f ipFamily) string {
	return setSlotBit + strconv.Itoa(b) + "_" + f.suffix
}

// nodePortSlotBitSet is the set of the NodePorts whose service's slot code has bit b.
func nodePortSlotBitSet(b int) string { return setNodePortSlotBit + strconv.Itoa(b) }

// The "typeof" of the backends maps: nft cannot name the type of the index (an integer of
// numgen), so the maps carry the expressions their keys and data come from.
var (
	typeofBackends4 = typeofConcat(typeofIPDaddr, typeofL4Proto, typeofTHDport, typeofNumgen)
	typeofBackends6 = typeofConcat(typeofIP6Daddr, typeofL4Proto, typeofTHDport, typeofNumgen)
	typeofBackend4  = typeofConcat(typeofIPDaddr, typeofTHDport)
	typeofBackend6  = typeofConcat(typeofIP6Daddr, typeofTHDport)
	// The NodePorts' backends: the packet's l4proto . th dport . numgen.
	typeofNodeBackends = typeofConcat(typeofL4Proto, typeofTHDport, typeofNumgen)
)

// serviceSets returns the sets and maps of the services: per family services, the
// slot_bit sets, affinity_services, backends, affinity, nodeport_backends and
// service_nodeports, then nodeports, the nodeport_slot_bit sets and affinity_nodeports.
func serviceSets(svcs []Service) []setDef {
	var out []setDef
	byName := map[string]*setDef{}
	npKey := nftables.MustConcatSetType(nftables.TypeNFProto, nftables.TypeInetProto, nftables.TypeInetService)
	for _, f := range []ipFamily{ip4, ip6} {
		key := nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService)
		backend := nftables.MustConcatSetType(f.addrType, nftables.TypeInetService)
		typeofKey, typeofData := typeofBackends4, typeofBackend4
		if f == ip6 {
			typeofKey, typeofData = typeofBackends6, typeofBackend6
		}
		out = append(out, setDef{name: setServices + f.suffix, keyType: key})
		for b := range slotCodeBits {
			out = append(out, setDef{name: slotBitSet(b, f), keyType: key})
		}
		out = append(out,
			setDef{name: setAffinityServices + f.suffix, keyType: key},
			setDef{name: mapBackends + f.suffix, dataType: backend, typeofKey: &typeofKey, typeofData: &typeofData,
				keyType: nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeInteger)},
			setDef{name: mapAffinity + f.suffix, dataType: backend, dynamic: true, timeout: AffinityTimeout, size: affinitySize,
				keyType: nftables.MustConcatSetType(f.addrType, f.addrType, nftables.TypeInetProto, nftables.TypeInetService)},
			setDef{name: mapNodePortBackends + f.suffix, dataType: backend, typeofKey: &typeofNodeBackends, typeofData: &typeofData,
				keyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeInteger)},
			setDef{name: mapServiceNodePorts + f.suffix, keyType: key, dataType: nftables.TypeInetService,
				comment: "NodePort of each service, for Update (no rule reads it)"},
		)
	}
	out = append(out, setDef{name: setNodePorts, keyType: npKey})
	for b := range slotCodeBits {
		out = append(out, setDef{name: nodePortSlotBitSet(b), keyType: npKey})
	}
	out = append(out, setDef{name: setAffinityNodePorts, keyType: npKey})
	for i := range out {
		byName[out[i].name] = &out[i]
	}
	// Elements in the order of normServices and of the backends' indexes: sorted by key,
	// but for indexes above 255 (host-endian); the NodePorts' by NodePort.
	for _, s := range normServices(svcs) {
		for name, elems := range s.elems().sets() {
			if set := byName[name]; set != nil {
				set.elems = append(set.elems, elems...)
			}
		}
	}
	sortElems(byName[setNodePorts].elems)
	for b := range slotCodeBits {
		sortElems(byName[nodePortSlotBitSet(b)].elems)
	}
	sortElems(byName[setAffinityNodePorts].elems)
	for _, f := range []ipFamily{ip4, ip6} {
		slices.SortStableFunc(byName[mapNodePortBackends+f.suffix].elems, func(a, b elemDef) int {
			return bytes.Compare(a.key[:8], b.key[:8]) // l4proto . NodePort; the indexes stay in order
		})
	}
	return out
}

// serviceChains returns the regular chains of the services: no-backends, affinity, the
// slot trees of the VIPs (per family) and of the NodePorts, then the pick chains of every
// slot count, for VIPs and for NodePorts.
func serviceChains() []chainDef {
	chains := []chainDef{
		{name: chainNoBackends, rules: []ruleDef{
			{exprs: append(isL4(unix.IPPROTO_TCP), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})},
			{exprs: []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}},
		}},
		{name: chainAffinity, rules: []ruleDef{stickyRule(ip4), stickyRule(ip6)}},
	}
	for _, f := range []ipFamily{ip4, ip6} {
		key := func() []expr.Any {
			return slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{loadAddr(f, f.daddr, reg1)}, loadL4(f.addrLen))
		}
		chains = append(chains, slotTree(chainServiceSlots+f.suffix, key, setAffinityServices+f.suffix,
			func(b int) string { return slotBitSet(b, f) }, chainPick)...)
	}
	chains = append(chains, slotTree(chainNodePortSlots, nodePortKeyExprs, setAffinityNodePorts, nodePortSlotBitSet, chainNodePortPick)...)
	chains = append(chains, pickChains(chainPick, pickRule)...)
	return append(chains, pickChains(chainNodePortPick, nodePortPickRule)...)
}

// slotTree returns the chains that send a packet whose key (what key loads into reg1)
// is a service's to the pick chain of the service's slot count (pick + S), or to chain
// no-backends: chain root first jumps to chain affinity when the key is in set
// affinity (which DNATs to the client's remembered backend if there is one), then tests
// the bits of the slot code from the highest down, one set lookup each (bitSet(b) holds
// the keys whose code has bit b), each test going to the chain of the bits so far
// (root-1, root-10, ...), the last one to the pick chain. The kernel validates what a
// batch adds by walking the chains reachable from the base chains and the elements of
// their verdict maps: with every service a few plain set elements instead of a verdict
// map element, that walk does not grow with the number of services.
func slotTree(root string, key func() []expr.Any, affinity string, bitSet func(int) string, pick string) []chainDef {
	test := func(set string, verdict expr.VerdictKind, chain string) ruleDef {
		var exprs []expr.Any // unconditional without set
		if set != "" {
			exprs = append(key(), lookup(reg1, set, false))
		}
		return ruleDef{exprs: append(exprs, &expr.Verdict{Kind: verdict, Chain: chain})}
	}
	// node returns where the codes that start with prefix (of n bits) go, and adds the
	// chain that tests the next bit when both values of it lead somewhere (else the test
	// would decide nothing and the one way left is taken at once); "" when no slot count
	// has such a code.
	var chains []chainDef
	var node func(prefix uint8, n int) string
	node = func(prefix uint8, n int) string {
		if n == slotCodeBits {
			switch c, ok := codeSlots(prefix); {
			case !ok:
				return ""
			case c == 0:
				return chainNoBackends
			default:
				return pick + strconv.Itoa(int(c))
			}
		}
		start := len(chains)
		one, zero := node(prefix<<1|1, n+1), node(prefix<<1, n+1)
		if n > 0 && (one == "" || zero == "") {
			return one + zero
		}
		c := chainDef{name: root}
		if n > 0 {
			c.name += "-" + fmt.Sprintf("%0*b", n, prefix)
		} else {
			c.rules = append(c.rules, test(affinity, expr.VerdictJump, chainAffinity))
		}
		if one != "" {
			c.rules = append(c.rules, test(bitSet(slotCodeBits-1-n), expr.VerdictGoto, one))
		}
		if zero != "" {
			c.rules = append(c.rules, test("", expr.VerdictGoto, zero))
		}
		chains = slices.Insert(chains, start, c) // before the chains it goes to
		return c.name
	}
	node(0, 0)
	return chains
}

// pickChains are, per slot count n, the chain pick<n> that draws a backend with rule
// for both families.
func pickChains(pickName string, rule func(ipFamily, uint32) ruleDef) []chainDef {
	var chains []chainDef
	for _, n := range slotCounts() {
		pick := chainDef{name: pickName + strconv.Itoa(int(n))}
		for _, f := range []ipFamily{ip4, ip6} {
			for _, mod := range drawModuli(n) {
				pick.rules = append(pick.rules, rule(f, mod))
			}
		}
		chains = append(chains, pick)
	}
	return chains
}

// rememberRules remember the backends of the clients of services with affinity, through
// their VIPs and their NodePorts. They open chain dnatted (postrouting, for DNATed
// connections): after the DNAT, before the masquerade rewrites the client's address; and a
// nat chain sees only the first packet of a connection, so the packets of established
// flows do not pay for them.
func rememberRules() []ruleDef {
	var out []ruleDef
	for _, nodePort := range []bool{false, true} {
		for _, f := range []ipFamily{ip4, ip6} {
			for _, proto := range []string{"tcp", "udp"} {
				out = append(out, rememberRule(f, proto, nodePort))
			}
		}
	}
	return out
}

// drawModuli is the moduli of the successive draws among n slots: n, pickAttempts times,
// then n/2 (every index below n/2 has a backend); one draw when every slot has a backend.
func drawModuli(n uint32) []uint32 {
	if n <= 2 {
		return []uint32{n}
	}
	out := make([]uint32, 0, pickAttempts+1)
	for range pickAttempts {
		out = append(out, n)
	}
	return append(out, n/2)
}

func jumpRule(kind expr.VerdictKind, chain string) ruleDef {
	return ruleDef{exprs: []expr.Any{&expr.Verdict{Kind: kind, Chain: chain}}}
}

// dispatchRule sends a packet to a service of family f (set services4/6) to the root
// of the slot tree of f.
func dispatchRule(f ipFamily) ruleDef {
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			[]expr.Any{loadAddr(f, f.daddr, reg1)},
			loadL4(f.addrLen),
			[]expr.Any{lookup(reg1, setServices+f.suffix, false), &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainServiceSlots + f.suffix}}),
	}
}

// nodePortKeyExprs loads "meta nfproto . meta l4proto . th dport", a NodePort key, into
// reg1.
func nodePortKeyExprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(4)},
		&expr.Payload{DestRegister: reg(8), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// nodePortsRule sends a connection to a local address whose key is in set nodeports to
// the root of the NodePorts' slot tree.
func nodePortsRule() ruleDef {
	return ruleDef{exprs: append(nodePortKeyExprs(),
		lookup(reg1, setNodePorts, false), &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainNodePortSlots})}
}

// nodePortMasqRule masquerades a DNATed connection of protocol proto whose original
// destination port is a NodePort (of the connection's family and protocol: set
// nodeports): whatever the client, the backend's reply must come back through this
// node. (The "meta l4proto" match is for nft, which needs the protocol to print "ct
// original proto-dst"; the key holds it.)
func nodePortMasqRule(proto string) ruleDef {
	return ruleDef{exprs: slices.Concat(
		isL4(protoNumber(proto)),
		originalNodePort(),
		[]expr.Any{lookup(reg1, setNodePorts, false), &expr.Masq{}},
	)}
}

// originalNodePort loads "meta nfproto . meta l4proto . ct original proto-dst", the
// NodePort key of the connection's original direction, from reg1.
func originalNodePort() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(4)},
		&expr.Ct{Key: expr.CtKeyPROTODST, Register: reg(8), Direction: 0},
	}
}

// draw is "numgen random mod mod" into the register that starts at byte off.
func draw(mod, off uint32) expr.Any {
	return &expr.Numgen{Register: reg(off), Modulus: mod, Type: unix.NFT_NG_RANDOM}
}

// pickRule DNATs to the backend of a random index below mod. Registers: the service key
// from byte 0, the index after it; the backend replaces the key.
func pickRule(f ipFamily, mod uint32) ruleDef {
	a := f.addrLen
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			[]expr.Any{loadAddr(f, f.daddr, reg1)},
			loadL4(a),
			[]expr.Any{draw(mod, a+8)},
			dnatTo(f, mapBackends+f.suffix)),
	}
}

// nodePortPickRule DNATs to the backend of a random index below mod of the NodePort.
// Registers: l4proto . th dport from byte 0, the index after it; the backend replaces them.
func nodePortPickRule(f ipFamily, mod uint32) ruleDef {
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			loadL4(0),
			[]expr.Any{draw(mod, 8)},
			dnatTo(f, mapNodePortBackends+f.suffix)),
	}
}

// stickyRule DNATs to the backend of the client's entry in the affinity map. Registers:
// the client address from byte 0, the service key after it; the backend replaces them.
func stickyRule(f ipFamily) ruleDef {
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			[]expr.Any{loadAddr(f, f.saddr, reg1), loadAddr(f, f.daddr, reg(f.addrLen))},
			loadL4(2*f.addrLen),
			dnatTo(f, mapAffinity+f.suffix)),
	}
}

// rememberRule adds or refreshes the client's entry in the affinity map when a new
// connection of protocol proto to a service with affinity was DNATed (it runs in chain
// dnatted): the key from the connection's original direction, the backend from the
// packet. With nodePort, for a connection to a NodePort of affinity_nodeports, else to a
// VIP . port of affinity_services. Registers: the client address from byte 0, the original
// destination (VIP or node address) . l4proto . port after it, the backend after that.
//
//	IPv4: client 0, VIP 4, l4proto 8, port 12, backend 16-23
//	IPv6: client 0, VIP 16, l4proto 32, port 36, backend 40-59
//
// The rule starts with "tcp dport != 0" (or udp): nft needs to know the protocol to
// print and parse "ct original proto-dst", and it would leave a bare "meta l4proto tcp"
// out of its listing as implied by the "tcp dport" of the data.
func rememberRule(f ipFamily, proto string, nodePort bool) ruleDef {
	a := f.addrLen
	ctAddr := uint32(unix.NFT_CT_DST_IP)
	if f == ip6 {
		ctAddr = unix.NFT_CT_DST_IP6
	}
	backend := 2*a + 8
	var member []expr.Any // the membership test, after the key's registers are loaded
	if nodePort {
		member = append(originalNodePort(), lookup(reg1, setAffinityNodePorts, false))
	}
	exprs := slices.Concat(isFamily(nftables.TableFamilyINet, f),
		isL4(protoNumber(proto)),
		[]expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0, 0}},
		},
		ctStateNew(),
		member,
		[]expr.Any{
			loadAddr(f, f.saddr, reg1),
			&expr.Ct{Key: expr.CtKey(ctAddr), Register: reg(a), Direction: 0},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(2 * a)},
			&expr.Ct{Key: expr.CtKeyPROTODST, Register: reg(2*a + 4), Direction: 0},
		})
	if !nodePort {
		exprs = append(exprs, lookup(reg(a), setAffinityServices+f.suffix, false))
	}
	return ruleDef{exprs: append(exprs,
		loadAddr(f, f.daddr, reg(backend)),
		&expr.Payload{DestRegister: reg(backend + a), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Dynset{SrcRegKey: reg1, SrcRegData: reg(backend), SetName: mapAffinity + f.suffix, Operation: unix.NFT_DYNSET_OP_UPDATE},
	)}
}
