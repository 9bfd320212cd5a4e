package nft

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The model below, with the services' part in services.go, is the one description of
// podnet's tables: Render prints it, Table.Sync writes it, Table.Update writes some of its
// elements and Table.InSync compares the kernel with it. A rule is its expressions only:
// its nft syntax is printed from them (internal/nftwire's printer).

// Names of the sets and maps. The endpoint sets exist in both tables: in inet podnet they
// hold routed endpoints, in bridge podnet bridged ones.
const (
	setPods4            = "pods4"
	setPods6            = "pods6"
	setMasq4            = "masq4"
	setMasq6            = "masq6"
	setSameNetwork4     = "same_network4"
	setSameNetwork6     = "same_network6"
	setEndpoints        = "endpoints"
	setEndpointSrc4     = "endpoint_src4"
	mapInterfaces       = "interfaces"
	setEndpointAddrs4   = "endpoint_addrs4"
	setEndpointAddrs6   = "endpoint_addrs6"
	setEndpointMACs     = "endpoint_macs"
	setEndpointTargets6 = "endpoint_targets6"
	setBridgeSubnets4   = "bridge_subnets4"
	setBridgeSubnets6   = "bridge_subnets6"
	setBridgePods4      = "bridge_pods4"
	setBridgePods6      = "bridge_pods6"
	setBridgeSelf       = "bridge_self"
	mapPorts4           = "ports4"
	mapPorts6           = "ports6"
	mapHostPorts4       = "hostports4"
	mapHostPorts6       = "hostports6"
)

// Names of the chains.
const (
	chainAntispoof   = "antispoof"
	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainForward     = "forward"
	chainPostrouting = "postrouting"
	chainEndpointSrc = "endpoint-src"
	chainFromBridge  = "from-bridge"
	chainLocalPorts  = "local-ports"
	chainDNATted     = "dnatted"
)

// maxComment is the longest comment put on a set element (the kernel allows 256 bytes
// of user data per element).
const maxComment = 128

// rulesetDef is the desired content of both tables: inet podnet, then bridge podnet.
type rulesetDef struct {
	tables []tableDef
}

// tableDef is the desired content of one table: sets first, then chains, in this order.
type tableDef struct {
	family nftables.TableFamily
	sets   []setDef
	chains []chainDef
}

// familyName is the nft name of a table family.
func familyName(f nftables.TableFamily) string {
	if f == nftables.TableFamilyBridge {
		return "bridge"
	}
	return "inet"
}

// set returns the named set of t, or nil.
func (t tableDef) set(name string) *setDef {
	for i := range t.sets {
		if t.sets[i].name == name {
			return &t.sets[i]
		}
	}
	return nil
}

// setDef is one named set, or map when dataType is set.
type setDef struct {
	name     string
	keyType  nftables.SetDatatype
	dataType nftables.SetDatatype // zero for a set; nftables.TypeVerdict for a verdict map
	interval bool
	// dynamic: the packet path adds the elements (flags dynamic, timeout); InSync does
	// not compare them.
	dynamic bool
	timeout time.Duration // of the elements of a dynamic set
	size    uint32        // largest number of elements, 0 for no limit
	elems   []elemDef     // as rendered: sorted by key (service sets: see serviceSets)
	// typeofKey and typeofData, when set, declare the key and data by the expressions
	// they come from (nft's "typeof"), for a key with a field nft has no type name for.
	typeofKey, typeofData *typeofExpr
	// fieldLens are the lengths of the key's fields, when one of them is not of its
	// type's usual length (an integer).
	fieldLens []uint32
	comment   string // of the set (nft lists it; InSync does not compare it)
}

// integer128 is a 16-byte integer.
var integer128 = func() nftables.SetDatatype {
	t := nftables.TypeInteger
	t.Bytes = 16
	return t
}()

// concat reports whether the set's key is a concatenation.
func (s setDef) concat() bool { return strings.Contains(s.keyType.Name, " . ") }

// isMap reports whether s is a map.
func (s setDef) isMap() bool { return s.dataType != nftables.SetDatatype{} }

// isVerdictMap reports whether s maps its keys to verdicts.
func (s setDef) isVerdictMap() bool {
	return s.dataType.GetNFTMagic() == nftables.TypeVerdict.GetNFTMagic()
}

// elemDef is one element of a set or map.
//
// In an interval set whose key is a single field (the kernel's rbtree) an element is a
// range [key, keyEnd): the kernel receives key and an "interval end" element keyEnd, or no
// end element when the range runs to the end of the key space (keyEnd nil). In an
// interval set with a concatenated key (the kernel's pipapo) an element is the range
// [key, keyEnd] per field, keyEnd inclusive, sent as one element with a key end.
type elemDef struct {
	key     []byte
	keyEnd  []byte
	data    []byte // maps only
	jump    string // verdict maps only: the chain the element goes to
	text    string // nft syntax, without the comment
	comment string
}

// chainDef is one chain: a base chain (hookName set), whose policy is accept, or a
// regular chain, entered by jumps only.
type chainDef struct {
	name     string
	typ      nftables.ChainType
	hook     nftables.ChainHook
	hookName string
	priority nftables.ChainPriority
	prioName string
	rules    []ruleDef
}

// base reports whether c is a base chain.
func (c chainDef) base() bool { return c.hookName != "" }

// ruleDef is one rule: its expressions, which tableDef.printRule prints in nft syntax.
// Lookups name their set; the set ID is filled in when the batch is built.
type ruleDef struct {
	exprs []expr.Any
}

// Registers. The kernel has 16 registers of 4 bytes, also addressed as 4 registers of 16
// bytes (NFT_REG_1 is NFT_REG32_00 to NFT_REG32_03). A concatenation is loaded into
// consecutive 4-byte registers, each field padded to 4 bytes. The kernel dumps a register
// that starts a 16-byte one under its 16-byte number (NFT_REG32_04 is dumped as NFT_REG_2),
// so reg gives that form, and rules read back compare equal.
const reg1 = unix.NFT_REG_1

// reg is the register that starts word bytes/4 of the register area that begins with reg1.
func reg(bytes uint32) uint32 {
	w := bytes / 4
	if w%4 == 0 {
		return unix.NFT_REG_1 + w/4
	}
	return unix.NFT_REG32_00 + w
}

// ipFamily describes what the rules need of IPv4 or IPv6.
type ipFamily struct {
	name      string // nft payload name: "ip" | "ip6"
	nfproto   byte
	etherType uint16
	saddr     uint32 // offset of the source address in the network header
	daddr     uint32
	addrLen   uint32
	addrType  nftables.SetDatatype
	suffix    string // of the names of the family's sets: "4" | "6"
}

var (
	ip4 = ipFamily{"ip", unix.NFPROTO_IPV4, unix.ETH_P_IP, 12, 16, 4, nftables.TypeIPAddr, "4"}
	ip6 = ipFamily{"ip6", unix.NFPROTO_IPV6, unix.ETH_P_IPV6, 8, 24, 16, nftables.TypeIP6Addr, "6"}
)

// build turns r into the tables' content. It does not validate r: entries that Validate
// rejects are left out (invalid names, prefixes or addresses, the later of two networks
// with the same bridge, a subnet overlapping an earlier network's, a port mapping whose
// host side was mapped to another target by an earlier one in sort order, a service whose
// key an earlier one in sort order has, the NodePort of a service whose NodePort an earlier
// one has (validateNodePorts rejects that), an invalid policy or the later of two with one
// ID).
func build(r Ruleset) rulesetDef {
	inet := tableDef{family: nftables.TableFamilyINet}
	brt := tableDef{family: nftables.TableFamilyBridge}

	netSets := networkSets(networkRanges(r.Networks))
	routed, bridged := endpointSets(r.Endpoints)
	inet.sets = mergeSets(slices.Concat(netSets, routed))
	brt.sets = bridged
	inet.sets = append(inet.sets, portMaps(r.Ports)...)
	inet.sets = append(inet.sets, serviceSets(r.Services)...)
	policies := normPolicies(r.Policies)
	if len(policies) > 0 {
		inet.sets = append(inet.sets, policySetsAll(policies)...)
	}

	forward := []ruleDef{
		// Packets of flows already let through skip the lookups below (which a
		// bridged flow would otherwise pay on every frame, br_netfilter).
		{exprs: append(ctStateEstablished(), accept())},
		// Untracked traffic within a bridge.
		untrackedRule(),
	}
	if len(policies) > 0 {
		forward = append(forward, jumpRule(expr.VerdictJump, chainPolicy))
	}
	forward = append(forward,
		ruleDef{exprs: append(ctStatusDNAT(), accept())},
		isolationRule(ip4),
		isolationRule(ip6),
	)
	inet.chains = []chainDef{
		{
			name: chainAntispoof, typ: nftables.ChainTypeFilter,
			hook: *nftables.ChainHookPrerouting, hookName: "prerouting",
			priority: *nftables.ChainPriorityRaw, prioName: "raw",
			rules: inetAntispoofRules(),
		},
		{name: chainEndpointSrc, rules: endpointSourceRules(nftables.TableFamilyINet)},
		{name: chainFromBridge, rules: append(notrackRules(len(policies) > 0), fromBridgeRules()...)},
		{
			name: chainPrerouting, typ: nftables.ChainTypeNAT,
			hook: *nftables.ChainHookPrerouting, hookName: "prerouting",
			priority: *nftables.ChainPriorityNATDest, prioName: "dstnat",
			rules: dnatRules(),
		},
		{name: chainLocalPorts, rules: localPortsRules()},
		{
			name: chainOutput, typ: nftables.ChainTypeNAT,
			hook: *nftables.ChainHookOutput, hookName: "output",
			// nft names priority -100 dstnat on prerouting only; it lists (and parses)
			// the output hook's as the number.
			priority: *nftables.ChainPriorityNATDest, prioName: "-100",
			rules: dnatRules(),
		},
		{
			name: chainForward, typ: nftables.ChainTypeFilter,
			hook: *nftables.ChainHookForward, hookName: "forward",
			priority: *nftables.ChainPriorityFilter, prioName: "filter",
			rules: forward,
		},
	}
	if hasEgress(policies) {
		inet.chains = append(inet.chains, inputChain(policies))
	}
	inet.chains = append(inet.chains, []chainDef{
		{
			name: chainPostrouting, typ: nftables.ChainTypeNAT,
			hook: *nftables.ChainHookPostrouting, hookName: "postrouting",
			priority: *nftables.ChainPriorityNATSource, prioName: "srcnat",
			// A nat chain sees the first packet of each connection. Those of DNATed
			// connections go through chain dnatted first (all that is about DNATed
			// connections, so that the others pass 3 rules).
			rules: []ruleDef{
				{exprs: append(ctStatusDNAT(), &expr.Verdict{Kind: expr.VerdictJump, Chain: chainDNATted})},
				egressMasqRule(ip4),
				egressMasqRule(ip6),
			},
		},
		{name: chainDNATted, rules: slices.Concat(rememberRules(), []ruleDef{
			dnatMasqRule(ip4),
			dnatMasqRule(ip6),
			tunnelMasqRule(ip4),
			tunnelMasqRule(ip6),
			localhostMasqRule(),
			nodePortMasqRule("tcp"),
			nodePortMasqRule("udp"),
		})},
	}...)
	inet.chains = append(inet.chains, serviceChains()...)
	if len(policies) > 0 {
		inet.chains = append(inet.chains, policyChains(policies)...)
	}
	brt.chains = []chainDef{{
		name: chainAntispoof, typ: nftables.ChainTypeFilter,
		hook: *nftables.ChainHookPrerouting, hookName: "prerouting",
		priority: nftables.ChainPriority(-200), prioName: "filter", // NF_BR_PRI_FILTER_BRIDGED
		rules: bridgeAntispoofRules(),
	}}
	return rulesetDef{tables: []tableDef{inet, brt}}
}

// netRanges is one network's address ranges, per family suffix, merged.
type netRanges struct {
	name       string
	bridge     string // "" for a routed network
	ingress    []string
	masquerade bool
	// ranges leaves out the subnets that overlap an earlier network's (Validate rejects
	// them; the kernel would refuse the elements).
	ranges map[string][]namedRange
}

// networkRanges sorts the networks and returns their merged ranges, leaving out what
// Validate rejects.
func networkRanges(in []Network) []netRanges {
	nets := slices.Clone(in)
	slices.SortStableFunc(nets, func(a, b Network) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Bridge, b.Bridge))
	})
	bridges := map[string]bool{}
	var out []netRanges
	for _, n := range nets {
		if n.Bridge != "" {
			if validIfName(n.Bridge) != nil || bridges[n.Bridge] {
				continue
			}
			bridges[n.Bridge] = true
		}
		nr := netRanges{name: n.Name, bridge: n.Bridge, masquerade: n.Masquerade, ranges: map[string][]namedRange{}}
		for _, in := range n.Ingress {
			if validIfName(in) == nil && in != n.Bridge && !slices.Contains(nr.ingress, in) {
				nr.ingress = append(nr.ingress, in)
			}
		}
		for _, p := range n.Subnets {
			if !p.IsValid() || p.Addr().Is4In6() {
				continue
			}
			sfx := ip6.suffix
			if p.Addr().Is4() {
				sfx = ip4.suffix
			}
			rg := namedRange{start: p.Masked().Addr(), last: lastAddr(p), names: []string{n.Name}}
			if !overlapsAny(rg, out, sfx) {
				nr.ranges[sfx] = append(nr.ranges[sfx], rg)
			}
		}
		for sfx := range nr.ranges {
			nr.ranges[sfx] = mergeRanges(nr.ranges[sfx])
		}
		out = append(out, nr)
	}
	return out
}

func overlapsAny(r namedRange, nets []netRanges, sfx string) bool {
	for _, n := range nets {
		for _, o := range n.ranges[sfx] {
			if r.start.Compare(o.last) <= 0 && o.start.Compare(r.last) <= 0 {
				return true
			}
		}
	}
	return false
}

// networkSets returns the sets that hold the networks' subnets. Each element belongs to
// one network (ranges of two networks are never merged, even where they touch), so that
// Update can add and remove a network's elements alone and get what Sync writes.
func networkSets(nets []netRanges) []setDef {
	var pods, masq, same, bridgeSubnets []setDef
	for _, f := range []ipFamily{ip4, ip6} {
		var all, masqed []elemDef
		for _, n := range nets {
			elems := rangeElems(n.ranges[f.suffix])
			all = append(all, elems...)
			if n.masquerade {
				masqed = append(masqed, elems...)
			}
		}
		sortElems(all)
		sortElems(masqed)
		pods = append(pods, setDef{name: "pods" + f.suffix, keyType: f.addrType, interval: true, elems: all})
		masq = append(masq, setDef{name: "masq" + f.suffix, keyType: f.addrType, interval: true, elems: masqed})
		same = append(same, setDef{name: "same_network" + f.suffix, keyType: nftables.MustConcatSetType(f.addrType, f.addrType),
			interval: true, elems: sameNetworkElems(nets, f.suffix)})
		bridgeSubnets = append(bridgeSubnets, setDef{name: "bridge_subnets" + f.suffix,
			keyType: nftables.MustConcatSetType(nftables.TypeIFName, f.addrType), interval: true, elems: bridgeSubnetElems(nets, f.suffix)})
	}
	ifaces := interfacesMap()
	// bridge . bridge: what is forwarded from a bridge to itself (untrackedRule).
	self := setDef{name: setBridgeSelf, keyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIFName)}
	for _, n := range nets {
		if n.bridge != "" {
			ifaces.elems = append(ifaces.elems, interfaceElem(n.bridge, chainFromBridge))
			k := ifnameKey(n.bridge)
			self.elems = append(self.elems, elemDef{key: slices.Concat(k, k), text: quote(n.bridge) + " . " + quote(n.bridge)})
		}
	}
	sortElems(ifaces.elems)
	sortElems(self.elems)
	return slices.Concat(pods, masq, same, bridgeSubnets, []setDef{ifaces, self})
}

// sameNetworkElems pairs every range of a network with every range of the same network:
// the traffic between two pod addresses that the isolation rule lets through. The set
// grows with the number of networks, not with its square.
func sameNetworkElems(nets []netRanges, sfx string) []elemDef {
	var elems []elemDef
	for _, n := range nets {
		for _, ra := range n.ranges[sfx] {
			for _, rb := range n.ranges[sfx] {
				elems = append(elems, elemDef{
					key:     slices.Concat(ra.start.AsSlice(), rb.start.AsSlice()),
					keyEnd:  slices.Concat(ra.last.AsSlice(), rb.last.AsSlice()),
					text:    rangeText(ra.start, ra.last) + " . " + rangeText(rb.start, rb.last),
					comment: comment(n.name),
				})
			}
		}
	}
	sortElems(elems)
	return elems
}

// bridgeSubnetElems pairs each bridge with the subnets of its network: where packets from
// bridged sandboxes enter the inet hooks (br_netfilter shows the bridge as the input
// interface); and the network's Ingress interfaces, where its pods on other nodes enter.
func bridgeSubnetElems(nets []netRanges, sfx string) []elemDef {
	var elems []elemDef
	for _, n := range nets {
		ifs := n.ingress
		if n.bridge != "" {
			ifs = append([]string{n.bridge}, ifs...)
		}
		for _, name := range ifs {
			k := ifnameKey(name)
			for _, r := range n.ranges[sfx] {
				elems = append(elems, elemDef{
					key:    slices.Concat(k, r.start.AsSlice()),
					keyEnd: slices.Concat(k, r.last.AsSlice()),
					text:   quote(name) + " . " + rangeText(r.start, r.last),
				})
			}
		}
	}
	sortElems(elems)
	return elems
}

// endpointSets returns the endpoint sets of table inet podnet (routed endpoints: their
// entries of map interfaces, and their addresses) and of table bridge podnet (bridged
// endpoints: their ports, MACs and addresses).
func endpointSets(eps []Endpoint) (routed, bridged []setDef) {
	addrSets := func() []setDef {
		return []setDef{
			{name: setEndpointAddrs4, keyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)},
			{name: setEndpointAddrs6, keyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)},
			// The IPv6 addresses again, for the target of neighbour advertisements, which
			// nft 1.0.6 only knows as a raw field of the transport header.
			{name: setEndpointTargets6, keyType: nftables.MustConcatSetType(nftables.TypeIFName, integer128),
				fieldLens: []uint32{nftables.TypeIFName.Bytes, integer128.Bytes}, typeofKey: &typeofTargets6},
		}
	}
	const addrs4, addrs6, targets6 = 0, 1, 2
	// bridge_pods4/6 (inet): bridge . address of every bridged endpoint, for the
	// notrack rules.
	routed = append(addrSets(), interfacesMap(),
		setDef{name: setBridgePods4, keyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)},
		setDef{name: setBridgePods6, keyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)})
	const ifaces, bridgePods4, bridgePods6 = 3, 4, 5
	bridged = append(addrSets(),
		setDef{name: setEndpoints, keyType: nftables.TypeIFName},
		setDef{name: setEndpointMACs, keyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)},
		// IPv4 source, MAC and port in one lookup: what nearly every frame of a bridged
		// sandbox is checked with.
		setDef{name: setEndpointSrc4, keyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIPAddr)},
	)
	const ports, macs, src4 = 3, 4, 5
	type ifKey struct {
		name    string
		bridged bool
	}
	seen := map[ifKey]bool{}
	// What is already an element: (port, MAC), (bridge, address), (port, address, bridged).
	type portAddr struct {
		port    string
		addr    netip.Addr
		bridged bool
	}
	seenMAC, seenBridgePod, seenAddr := map[string]bool{}, map[string]bool{}, map[portAddr]bool{}
	for _, e := range eps {
		if validIfName(e.HostIf) != nil {
			continue
		}
		if e.bridged() && validIfName(e.Bridge) != nil {
			continue
		}
		sets := routed
		if e.bridged() {
			sets = bridged
		}
		key := ifnameKey(e.HostIf)
		if k := (ifKey{e.HostIf, e.bridged()}); !seen[k] {
			seen[k] = true
			if e.bridged() {
				sets[ports].elems = append(sets[ports].elems, elemDef{key: key, text: quote(e.HostIf)})
			} else {
				sets[ifaces].elems = append(sets[ifaces].elems, interfaceElem(e.HostIf, chainEndpointSrc))
			}
		}
		// ether_addr is 6 bytes, padded to 8 in a concatenation.
		var mac []byte
		if e.bridged() && len(e.MAC) == 6 {
			mac = slices.Concat(e.MAC, []byte{0, 0})
			if k := e.HostIf + " " + e.MAC.String(); !seenMAC[k] {
				seenMAC[k] = true
				sets[macs].elems = append(sets[macs].elems, elemDef{key: slices.Concat(key, mac), text: quote(e.HostIf) + " . " + e.MAC.String()})
			}
		}
		for _, a := range e.Addrs {
			if !a.IsValid() || a.IsUnspecified() || a.Is4In6() || a.Zone() != "" {
				continue
			}
			s := &sets[addrs4]
			if !a.Is4() {
				s = &sets[addrs6]
			}
			if k := e.Bridge + " " + a.String(); e.bridged() && !seenBridgePod[k] {
				seenBridgePod[k] = true
				i := bridgePods4
				if !a.Is4() {
					i = bridgePods6
				}
				routed[i].elems = append(routed[i].elems, elemDef{key: slices.Concat(ifnameKey(e.Bridge), a.AsSlice()), text: quote(e.Bridge) + " . " + a.String()})
			}
			k := portAddr{e.HostIf, a, e.bridged()}
			if seenAddr[k] {
				continue
			}
			seenAddr[k] = true
			s.elems = append(s.elems, elemDef{key: slices.Concat(key, a.AsSlice()), text: quote(e.HostIf) + " . " + a.String()})
			if !a.Is4() {
				sets[targets6].elems = append(sets[targets6].elems, elemDef{key: slices.Concat(key, a.AsSlice()),
					text: quote(e.HostIf) + " . 0x" + hex.EncodeToString(a.AsSlice())})
			}
			if a.Is4() && mac != nil {
				sets[src4].elems = append(sets[src4].elems, elemDef{key: slices.Concat(key, mac, a.AsSlice()),
					text: quote(e.HostIf) + " . " + e.MAC.String() + " . " + a.String()})
			}
		}
	}
	for _, sets := range [][]setDef{routed, bridged} {
		for i := range sets {
			sortElems(sets[i].elems)
		}
	}
	return routed, bridged
}

// interfacesMap is the verdict map by input interface that the anti-spoofing chain of
// table inet podnet dispatches with: a routed endpoint's host veth goes to its address
// check (chain endpoint-src), a bridge to its subnets' (chain from-bridge).
func interfacesMap() setDef {
	return setDef{name: mapInterfaces, keyType: nftables.TypeIFName, dataType: nftables.TypeVerdict}
}

func interfaceElem(name, chain string) elemDef {
	return elemDef{key: ifnameKey(name), jump: chain, text: quote(name) + " : goto " + chain}
}

// mergeSets merges the elements of sets with the same name (map interfaces is filled
// from the networks and from the endpoints) into the first of them.
func mergeSets(sets []setDef) []setDef {
	var out []setDef
	at := map[string]int{}
	for _, s := range sets {
		if i, ok := at[s.name]; ok {
			out[i].elems = append(out[i].elems, s.elems...)
			sortElems(out[i].elems)
			continue
		}
		at[s.name] = len(out)
		out = append(out, s)
	}
	return out
}

// portMaps returns the maps of published ports.
func portMaps(ports []PortMapping) []setDef {
	proto := nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	maps := map[string]*setDef{}
	target := func(f ipFamily) nftables.SetDatatype {
		return nftables.MustConcatSetType(f.addrType, nftables.TypeInetService)
	}
	hostKey := func(f ipFamily) nftables.SetDatatype {
		return nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService)
	}
	out := []setDef{
		{name: mapPorts4, keyType: proto, dataType: target(ip4)},
		{name: mapPorts6, keyType: proto, dataType: target(ip6)},
		{name: mapHostPorts4, keyType: hostKey(ip4), dataType: target(ip4)},
		{name: mapHostPorts6, keyType: hostKey(ip6), dataType: target(ip6)},
	}
	for i := range out {
		maps[out[i].name] = &out[i]
	}

	ps := slices.Clone(ports)
	slices.SortFunc(ps, func(a, b PortMapping) int {
		return cmp.Or(
			cmpBool(a.Addr.Is4(), b.Addr.Is4()), a.hostIP().Compare(b.hostIP()),
			cmp.Compare(protoNumber(a.Protocol), protoNumber(b.Protocol)), cmp.Compare(a.HostPort, b.HostPort),
			a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	})
	seen := map[portKey]bool{}
	for _, p := range ps {
		if p.validate() != nil || seen[p.key()] {
			continue
		}
		seen[p.key()] = true
		sfx := "6"
		if p.Addr.Is4() {
			sfx = "4"
		}
		// l4proto . port: each field padded to 4 bytes.
		key := []byte{protoNumber(p.Protocol), 0, 0, 0, byte(p.HostPort >> 8), byte(p.HostPort), 0, 0}
		text := p.Protocol + " . " + strconv.Itoa(int(p.HostPort))
		m := maps["ports"+sfx]
		if h := p.hostIP(); h.IsValid() {
			key = slices.Concat(h.AsSlice(), key)
			text = h.String() + " . " + text
			m = maps["hostports"+sfx]
		}
		m.elems = append(m.elems, elemDef{
			key:  key,
			data: slices.Concat(p.Addr.AsSlice(), []byte{byte(p.Port >> 8), byte(p.Port), 0, 0}),
			text: text + " : " + p.Addr.String() + " . " + strconv.Itoa(int(p.Port)),
		})
	}
	for i := range out {
		sortElems(out[i].elems)
	}
	return out
}

func sortElems(es []elemDef) {
	slices.SortFunc(es, func(a, b elemDef) int { return bytes.Compare(a.key, b.key) })
}

// Expressions shared by the rules.

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() expr.Any   { return &expr.Verdict{Kind: expr.VerdictDrop} }

// isFamily matches packets of family f: in family inet by meta nfproto, in family bridge
// by ether type. nft adds this check itself before a field of the network header, and
// leaves it out of its listing when such a field follows.
func isFamily(tf nftables.TableFamily, f ipFamily) []expr.Any {
	if tf == nftables.TableFamilyBridge {
		return isEtherType(f.etherType)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f.nfproto}},
	}
}

func isEtherType(t uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(t)},
	}
}

// ipsDstNAT is IPS_DST_NAT of enum ip_conntrack_status (linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 1 << 5

// ctStatusDNAT matches connections whose destination was NATed (ct status dnat). The
// status is a host-endian 32-bit word.
func ctStatusDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// ctStateNew matches the first packets of connections.
func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// ctStateEstablished matches packets of established or related connections.
func ctStateEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

func loadAddr(f ipFamily, off uint32, r uint32) expr.Any {
	return &expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen}
}

func lookup(r uint32, set string, invert bool) expr.Any {
	return &expr.Lookup{SourceRegister: r, SetName: set, Invert: invert}
}

// isolationRule drops what is forwarded from one network's subnet to another's: from a
// pod address to a pod address, unless both are of the same network.
func isolationRule(f ipFamily) ruleDef {
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{
			loadAddr(f, f.saddr, reg1),
			lookup(reg1, "pods"+f.suffix, false),
			loadAddr(f, f.daddr, reg1),
			lookup(reg1, "pods"+f.suffix, false),
			loadAddr(f, f.saddr, reg1),
			loadAddr(f, f.daddr, reg(f.addrLen)),
			lookup(reg1, "same_network"+f.suffix, true),
			drop(),
		}),
	}
}

// notrackRules exempt from conntrack, and accept, what a bridged pod sends to another
// pod of its bridge when no policy isolates either (withPolicies: the isolated_* sets
// exist): two lookups of bridge . address (set bridge_pods4/6), which also prove the
// source is of the bridge's subnet. Such traffic needs no state: no NAT rewrites it (a
// pod's connection to a VIP or published port is addressed elsewhere, and masqueraded to
// the node, so its replies are too), and without a policy every packet of it is accepted.
// The check of both addresses makes it symmetric: both directions of a flow are tracked,
// or neither. Routed pods' traffic stays tracked: a check that two of them are of one
// network would take a concatenated interval set (pipapo), whose lookup costs more per
// packet than conntrack saves.
//
// When a policy comes to isolate a pod, conntrack picks up its open flows at their next
// packet as new ones: a TCP segment without SYN passes the policy chains (chain
// policies), so that open connections are not cut (as for flows that were tracked); a
// UDP datagram is judged like the first of a new flow.
func notrackRules(withPolicies bool) []ruleDef {
	var rules []ruleDef
	for _, f := range []ipFamily{ip4, ip6} {
		exprs := slices.Concat(isFamily(nftables.TableFamilyINet, f), bridgePod(f, f.daddr), bridgePod(f, f.saddr))
		if withPolicies {
			for _, off := range []uint32{f.saddr, f.daddr} {
				for _, d := range directions {
					exprs = append(exprs, loadAddr(f, off, reg1), lookup(reg1, isolatedAll(d, f), true))
				}
			}
		}
		rules = append(rules, ruleDef{exprs: append(exprs, &expr.Notrack{}, accept())})
	}
	return rules
}

// bridgePod matches a packet whose address at off is of a pod of the bridge it came in
// by (set bridge_pods4/6).
func bridgePod(f ipFamily, off uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		loadAddr(f, off, reg(16)),
		lookup(reg1, "bridge_pods"+f.suffix, false),
	}
}

// untrackedRule accepts in chain forward the untracked packets that a bridge forwards to
// itself: what notrackRules exempted, and what the rules after it accept too (chain
// policies returns untracked packets, and the isolation rule passes what stays in one
// network), in one lookup.
func untrackedRule() ruleDef {
	return ruleDef{exprs: slices.Concat(ctState(expr.CtStateBitUNTRACKED), withinBridge(), []expr.Any{accept()})}
}

// withinBridge matches what a bridge forwards to itself (set bridge_self).
func withinBridge() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg(16)},
		lookup(reg1, setBridgeSelf, false),
	}
}

// egressMasqRule masquerades what a masquerading network sends outside of every podnet
// subnet.
func egressMasqRule(f ipFamily) ruleDef {
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{
			loadAddr(f, f.saddr, reg1),
			lookup(reg1, "masq"+f.suffix, false),
			loadAddr(f, f.daddr, reg1),
			lookup(reg1, "pods"+f.suffix, true),
			&expr.Masq{},
		}),
	}
}

// dnatMasqRule masquerades connections to a published port or a service that come from
// a sandbox (in chain dnatted: DNATed connections only): the reply must come back through
// the node to be un-DNATed (hairpin, and sandboxes of other networks). Not when they leave
// through a VXLAN device of podnet (pnx*, a pod of another node): the reply comes back
// through the tunnel anyway, and the backend sees the client's address (but a connection
// to a NodePort is masqueraded all the same, by nodePortMasqRule).
func dnatMasqRule(f ipFamily) ruleDef {
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{
			loadAddr(f, f.saddr, reg1),
			lookup(reg1, "pods"+f.suffix, false),
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte(VXLANPrefix)},
			&expr.Masq{},
		}),
	}
}

// tunnelMasqRule masquerades connections to a service that come from outside the pod
// networks (the node itself, another host) and leave through a VXLAN device of podnet
// (in chain dnatted: DNATed connections only): the device's address is the node's
// tunnel address, from the node's own block, so the backend's reply comes back through
// the tunnel to be un-DNATed, where a reply to the node's underlay address would take
// the underlay and be dropped as spoofed.
func tunnelMasqRule(f ipFamily) ruleDef {
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte(VXLANPrefix)},
			loadAddr(f, f.saddr, reg1),
			lookup(reg1, "pods"+f.suffix, true),
			&expr.Masq{},
		}),
	}
}

// VXLANPrefix starts the names of podnet's VXLAN devices (spec.VXLANName).
const VXLANPrefix = "pnx"

// localhostMasqRule masquerades connections of the node to 127.0.0.1:published port or
// NodePort (in chain dnatted: DNATed connections only): a backend cannot answer 127.0.0.1.
func localhostMasqRule() ruleDef {
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, ip4), []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ip4.saddr, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{127}},
			&expr.Masq{},
		}),
	}
}

// dnatRules DNAT service VIPs, then published ports of one host address, then what goes
// to a local address of the node (chain local-ports), in this order of precedence: a VIP
// wins over everything, even when it is a local address of the node.
func dnatRules() []ruleDef {
	return []ruleDef{
		dispatchRule(ip4), dispatchRule(ip6),
		hostPortsRule(ip4), hostPortsRule(ip6),
		{exprs: []expr.Any{
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			&expr.Verdict{Kind: expr.VerdictGoto, Chain: chainLocalPorts},
		}},
	}
}

// localPortsRules are chain local-ports, which the dnat chains go to for connections to a
// local address of the node (one fib lookup for both): published ports of every local
// address, then the services' NodePorts. A published port wins over a NodePort of the same
// family, protocol and port (on every address; a published port of one host address wins
// there only): the port was published by a pod of this node, and a NodePort added later
// must not take it over. The agent refuses such collisions.
func localPortsRules() []ruleDef {
	return []ruleDef{portsRule(ip4), portsRule(ip6), nodePortsRule()}
}

// loadL4 loads "meta l4proto . th dport" into the registers that start at byte off.
func loadL4(off uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(off)},
		&expr.Payload{DestRegister: reg(off + 4), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// dnatTo looks up the key in reg1 in map m, whose data "address . port" lands in reg1 (the
// address) and the register after the address (the port), and DNATs to it. The kernel
// dumps a NAT expression with max registers equal to the min ones and the flag "proto
// specified", so they are set here too.
func dnatTo(f ipFamily, m string) []expr.Any {
	port := reg(f.addrLen)
	return []expr.Any{
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: m},
		&expr.NAT{
			Type: expr.NATTypeDestNAT, Family: uint32(f.nfproto),
			RegAddrMin: reg1, RegAddrMax: reg1, RegProtoMin: port, RegProtoMax: port,
			Specified: true,
		},
	}
}

func hostPortsRule(f ipFamily) ruleDef {
	m := "hostports" + f.suffix
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			[]expr.Any{loadAddr(f, f.daddr, reg1)},
			loadL4(f.addrLen),
			dnatTo(f, m)),
	}
}

// portsRule DNATs a connection to a local address (it runs in chain local-ports) to the
// target of its published port of every local address.
func portsRule(f ipFamily) ruleDef {
	m := "ports" + f.suffix
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			loadL4(0),
			dnatTo(f, m)),
	}
}

// ICMPv6 types that the anti-spoofing chain looks at.
const (
	icmp6RouterAdvert   = 134
	icmp6NeighborAdvert = 136
	icmp6Redirect       = 137
)

// isICMPv6 matches ICMPv6 messages of type typ.
func isICMPv6(tf nftables.TableFamily, typ byte) []expr.Any {
	return slices.Concat(isFamily(tf, ip6), isL4(unix.IPPROTO_ICMPV6), []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{typ}},
	})
}

// isL4 matches packets of transport protocol proto (meta l4proto).
func isL4(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
	}
}

// notLinkLocal matches when the 16 bytes at off of base are not in fe80::/10: a 2-byte
// load, which nft prints raw ("@th,64,16 & 0xffc0 != 0xfe80"; it has no name for the
// field where this is used).
func notLinkLocal(base expr.PayloadBase, off uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: base, Offset: off, Len: 2},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0xfe, 0x80}},
	}
}

// Anti-spoofing: a packet that enters the node from an endpoint's host interface must
// come from one of the endpoint's addresses. Also allowed: IPv6 link-local sources
// (neighbour discovery, MLD) and the unspecified address (duplicate address detection,
// MLD before an address is configured), and in the bridge, ARP probes (sender 0.0.0.0).
// An endpoint is not a router: router advertisements and redirects are dropped, and a
// neighbour advertisement must announce a link-local address or one of the endpoint's
// own (else a sandbox could take another's IPv6 address over in the neighbour caches, as
// ARP would for IPv4). Anything else, of any protocol (other ether types, VLAN-tagged
// frames), is dropped. And a packet from a pod address that enters anywhere else than
// where that pod sends from is dropped (podSourceRule).
//
// Every packet of every flow crosses these chains, so the common cases come first and
// take one lookup each: an IPv4 frame of a bridged sandbox (port, MAC and address at
// once) in table bridge podnet; in table inet podnet, the input interface in map
// interfaces, then for a routed endpoint its address, for a bridge its subnets (where
// br_netfilter shows the bridge as the input interface; a frame that entered it from an
// endpoint's port was checked in table bridge podnet, but one from another port was not,
// and table bridge podnet cannot tell which bridge a port is in: this kernel has no
// "meta ibrname" there).

// inetAntispoofRules is the anti-spoofing chain of table inet podnet.
func inetAntispoofRules() []ruleDef {
	return []ruleDef{
		localnetRule(),
		{exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, DestRegister: unix.NFT_REG_VERDICT, IsDestRegSet: true, SetName: mapInterfaces},
		}},
		podSourceRule(ip4),
		podSourceRule(ip6),
	}
}

// bridgeAntispoofRules is the anti-spoofing chain of table bridge podnet.
func bridgeAntispoofRules() []ruleDef {
	return append([]ruleDef{
		{exprs: slices.Concat(isFamily(nftables.TableFamilyBridge, ip4), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Payload{DestRegister: reg(16), Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			loadAddr(ip4, ip4.saddr, reg(24)),
			lookup(reg1, setEndpointSrc4, false),
			accept(),
		})},
		{exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			lookup(reg1, setEndpoints, true),
			accept(),
		}},
		// A port may only send with its endpoint's MAC: a copied MAC would move the
		// peer's entry in the bridge's forwarding database (learning happens after this
		// hook) and its traffic with it.
		{exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Payload{DestRegister: reg(16), Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			lookup(reg1, setEndpointMACs, true),
			drop(),
		}},
	}, endpointSourceRules(nftables.TableFamilyBridge)...)
}

// endpointSourceRules check a packet from an endpoint's host interface: chain
// endpoint-src of table inet podnet, the end of chain antispoof of table bridge podnet
// (after its MAC; there most IPv4 frames were accepted by set endpoint_src4 already, the
// rest are those of addresses added to an endpoint without its MAC: see Applier.Update).
func endpointSourceRules(tf nftables.TableFamily) []ruleDef {
	ifAddr := func(f ipFamily, base expr.PayloadBase, off uint32, set string, invert bool) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Payload{DestRegister: reg(16), Base: base, Offset: off, Len: f.addrLen},
			lookup(reg1, set, invert),
		}
	}
	nh := expr.PayloadBaseNetworkHeader
	rules := []ruleDef{
		{exprs: slices.Concat(isFamily(tf, ip4), ifAddr(ip4, nh, ip4.saddr, setEndpointAddrs4, false), []expr.Any{accept()})},
		{exprs: append(isICMPv6(tf, icmp6RouterAdvert), drop())},
		{exprs: append(isICMPv6(tf, icmp6Redirect), drop())},
		{
			// The target address, @th,64,128 (icmpv6 taddr, which nft 1.0.6 lacks).
			exprs: slices.Concat(isICMPv6(tf, icmp6NeighborAdvert),
				notLinkLocal(expr.PayloadBaseTransportHeader, 8),
				ifAddr(ip6, expr.PayloadBaseTransportHeader, 8, setEndpointTargets6, true),
				[]expr.Any{drop()}),
		},
		{exprs: slices.Concat(isFamily(tf, ip6), ifAddr(ip6, nh, ip6.saddr, setEndpointAddrs6, false), []expr.Any{accept()})},
		{
			// ip6 saddr fe80::/10: the whole address and a 16-byte mask, as nft writes
			// it (nft 1.0.6 prints a shorter load of a prefix that is not whole bytes
			// raw, not as the address field).
			exprs: slices.Concat(isFamily(tf, ip6), []expr.Any{
				loadAddr(ip6, ip6.saddr, reg1),
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: ip6.addrLen,
					Mask: netip.MustParseAddr("ffc0::").AsSlice(), Xor: make([]byte, ip6.addrLen)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: netip.MustParseAddr("fe80::").AsSlice()},
				accept(),
			}),
		},
		{
			exprs: slices.Concat(isFamily(tf, ip6), []expr.Any{
				loadAddr(ip6, ip6.saddr, reg1),
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: make([]byte, 16)},
				accept(),
			}),
		},
	}
	if tf == nftables.TableFamilyBridge {
		// ARP: sender IP address at offset 14 of an Ethernet/IPv4 ARP packet. Linux
		// ignores ARP packets of other hardware or protocol address lengths.
		const arpSPA = 14
		rules = append(rules,
			ruleDef{
				exprs: slices.Concat(isEtherType(unix.ETH_P_ARP), []expr.Any{
					&expr.Payload{DestRegister: reg1, Base: nh, Offset: arpSPA, Len: 4},
					&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: make([]byte, 4)},
					accept(),
				}),
			},
			ruleDef{exprs: slices.Concat(isEtherType(unix.ETH_P_ARP), ifAddr(ip4, nh, arpSPA, setEndpointAddrs4, false), []expr.Any{accept()})},
		)
	}
	return append(rules, ruleDef{exprs: []expr.Any{drop()}})
}

// localnetRule drops packets to 127.0.0.0/8 that did not come from the loopback device
// (CVE-2020-8558): route_localnet, which published ports on 127.0.0.1 need on the
// interfaces towards sandboxes, would otherwise let a sandbox, or a neighbour of the
// node, reach the node's services bound to 127.0.0.1 and its ports published on
// 127.0.0.1. It runs before conntrack and NAT, so the replies of the node's own
// connections to 127.0.0.1:published port (addressed to the node's address until NAT
// restores 127.0.0.1) pass. Linux itself drops ::1 on any other device.
func localnetRule() ruleDef {
	return ruleDef{
		// The address first: nearly every packet stops there.
		exprs: slices.Concat(
			isFamily(nftables.TableFamilyINet, ip4),
			[]expr.Any{
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ip4.daddr, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{127}},
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ifnameKey("lo")},
				drop(),
			}),
	}
}

// podSourceRule drops packets from a pod address that enter the node anywhere but where
// pods send from: a bridge with that subnet (chain from-bridge), a network's Ingress
// interface (where its pods on other nodes enter), a routed endpoint's host veth (chain
// endpoint-src), or lo. Else a neighbour of the node could send with a pod's address and
// have the node answer the pod: the cluster DNS would recurse for it and reflect at pods.
func podSourceRule(f ipFamily) ruleDef {
	return ruleDef{
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{
			loadAddr(f, f.saddr, reg1),
			lookup(reg1, "pods"+f.suffix, false),
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ifnameKey("lo")},
			loadAddr(f, f.saddr, reg(16)),
			lookup(reg1, "bridge_subnets"+f.suffix, true),
			drop(),
		}),
	}
}

// fromBridgeRules check a packet that entered through a bridge: from one of the
// bridge's pods (the common case: a hash lookup), from one of its subnets (a
// concatenated interval lookup, which costs more), or from no pod address.
func fromBridgeRules() []ruleDef {
	var rules []ruleDef
	for _, f := range []ipFamily{ip4, ip6} {
		rules = append(rules,
			ruleDef{exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f), bridgePod(f, f.saddr), []expr.Any{accept()})},
			ruleDef{exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
				loadAddr(f, f.saddr, reg(16)),
				lookup(reg1, "bridge_subnets"+f.suffix, false),
				accept(),
			})},
			ruleDef{exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f), []expr.Any{
				loadAddr(f, f.saddr, reg1),
				lookup(reg1, "pods"+f.suffix, false),
				drop(),
			})},
		)
	}
	return rules
}

// ifnameKey is the set key of an interface name: IFNAMSIZ bytes, zero padded.
func ifnameKey(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func quote(s string) string { return `"` + s + `"` }

func comment(s string) string {
	if len(s) > maxComment {
		s = s[:maxComment]
	}
	return s
}

// namedRange is an inclusive address range and the networks it comes from.
type namedRange struct {
	start, last netip.Addr
	names       []string
}

// mergeRanges sorts ranges and merges the ones that overlap or touch (within one network).
func mergeRanges(rs []namedRange) []namedRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b namedRange) int {
		return cmp.Or(a.start.Compare(b.start), b.last.Compare(a.last))
	})
	var merged []namedRange
	for _, r := range rs {
		if n := len(merged); n > 0 {
			cur := &merged[n-1]
			next := cur.last.Next()
			if !next.IsValid() || r.start.Compare(next) <= 0 {
				if r.last.Compare(cur.last) > 0 {
					cur.last = r.last
				}
				cur.names = append(cur.names, r.names...)
				continue
			}
		}
		r.names = slices.Clone(r.names)
		merged = append(merged, r)
	}
	for i := range merged {
		slices.Sort(merged[i].names)
		merged[i].names = slices.Compact(merged[i].names)
	}
	return merged
}

// rangeElems merges ranges (the kernel refuses overlapping intervals) and turns them into
// elements of an interval set with a single-field key.
func rangeElems(rs []namedRange) []elemDef {
	merged := mergeRanges(rs)
	elems := make([]elemDef, 0, len(merged))
	for _, r := range merged {
		e := elemDef{
			key:     r.start.AsSlice(),
			text:    rangeText(r.start, r.last),
			comment: comment(strings.Join(r.names, ",")),
		}
		if end := r.last.Next(); end.IsValid() {
			e.keyEnd = end.AsSlice()
		}
		elems = append(elems, e)
	}
	return elems
}

// rangeText prints a range as nft does: one address alone, a prefix as a prefix, else
// first-last.
func rangeText(start, last netip.Addr) string {
	if start == last {
		return start.String()
	}
	for bits := 0; bits <= start.BitLen(); bits++ {
		p := netip.PrefixFrom(start, bits)
		if p.Masked().Addr() == start && lastAddr(p) == last {
			return p.String()
		}
	}
	return start.String() + "-" + last.String()
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return last
}
