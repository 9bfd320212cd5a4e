package nft

import (
	"cmp"
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
// whatever the services. Update changes elements only: whenever a batch adds a rule or a
// jump, the kernel validates again every chain and rule reachable from the base chains,
// which would make a backend change cost as much as the number of services if services
// had chains of their own (measured on 6.18: a batch adding one service chain behind a
// verdict map took 0.3 ms next to 10 such chains, 18 ms next to 10,000 of 3 rules).
//
// A service's key (VIP . protocol . port) maps, in services4/6 (or affinity_services4/6
// for a service with affinity), to its slot count: the number of its backends rounded up
// to a power of two (0 without backends). Its backends have the indexes 0 to N-1, in
// backends4/6 (key . index : backend address . port), in address order. The dispatch rule
// of the prerouting and output chains looks the slot count up and jumps, through the
// constant verdict map picks (affinity_picks), to the chain of that slot count: pick-S
// draws "numgen random mod S" and DNATs to the backend with that index; an index without
// backend (N <= index < S) is drawn again, up to pickAttempts times, then drawn among the
// first S/2 backends (which all exist). A backend's share is 1/N, off by at most
// 2^-pickAttempts (1.6 %) for N just above a power of two. Slot count 0 goes to chain
// reject: TCP reset, ICMP port unreachable (which the kernel rate-limits per client: by
// default 1/s after a burst of 6, shared in IPv6 with the redirects the node sends).
//
// Affinity: the dynamic map affinity4/6 (client address . key : backend) remembers the
// backend of each client of a service with affinity, for AffinityTimeout after its last new
// connection. Chain affinity, jumped to first by every affinity-pick-S chain, deletes a
// client's entry whose backend is no longer one of the service's (affinity_backends4/6,
// key . backend), then DNATs to the remembered backend and refreshes the entry. Otherwise
// affinity-pick-S draws as pick-S does, adds the entry (if another connection of the
// client added one meanwhile, that one wins) and DNATs to the entry's backend; when the
// map is full (affinitySize entries), the connection is balanced without affinity.

// Names of the service sets, maps and chains. The per-family ones end in 4 or 6.
const (
	mapServices         = "services"
	mapAffinityServices = "affinity_services"
	mapBackends         = "backends"
	setAffinityBackends = "affinity_backends"
	mapAffinity         = "affinity"
	mapPicks            = "picks"
	mapAffinityPicks    = "affinity_picks"

	chainReject       = "reject"
	chainAffinity     = "affinity"
	chainPick         = "pick-"          // + slot count
	chainAffinityPick = "affinity-pick-" // + slot count
)

const (
	// maxSlotBits bounds the slot counts: 1, 2, 4, ..., 1<<maxSlotBits.
	maxSlotBits = 12
	// pickAttempts is the number of draws among S slots before a draw among S/2.
	pickAttempts = 6
	// affinitySize is the capacity of each affinity map.
	affinitySize = 65535
	// nftDynsetOpDelete is NFT_DYNSET_OP_DELETE (linux/netfilter/nf_tables.h), missing
	// from golang.org/x/sys/unix.
	nftDynsetOpDelete = 2
)

// slotCounts are the slot counts that have a pick chain.
func slotCounts() []uint32 {
	out := make([]uint32, 0, maxSlotBits+1)
	for b := range maxSlotBits + 1 {
		out = append(out, 1<<b)
	}
	return out
}

// slots is the slot count of a service with n backends: n rounded up to a power of two,
// 0 for none.
func slots(n int) uint32 {
	if n == 0 {
		return 0
	}
	return 1 << bits.Len(uint(n-1))
}

// normServices sorts the services by family and key, and leaves out what Validate rejects
// and the later services of a key listed twice. Backends are sorted, without duplicates.
func normServices(in []Service) []Service {
	svcs := slices.Clone(in)
	slices.SortStableFunc(svcs, func(a, b Service) int {
		return cmp.Or(cmpBool(a.VIP.Is4(), b.VIP.Is4()), a.VIP.Compare(b.VIP),
			cmp.Compare(protoNumber(a.Protocol), protoNumber(b.Protocol)), cmp.Compare(a.Port, b.Port))
	})
	seen := map[serviceKey]bool{}
	out := svcs[:0]
	for _, s := range svcs {
		if s.validate() != nil || seen[s.key()] {
			continue
		}
		seen[s.key()] = true
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

// serviceElems is what one service owns: elements of the maps of its family.
type serviceElems struct {
	key      serviceKey
	affinity bool      // svc is in affinity_services, not services
	svc      elemDef   // key : slot count
	backends []elemDef // key . index : backend
	members  []elemDef // key . backend, with affinity only
}

// elems returns the elements of s, which must be valid with sorted backends.
func (s Service) elems() serviceElems {
	k := s.key()
	kb, kt := k.bytes(), k.text()
	n := slots(len(s.Backends))
	e := serviceElems{
		key:      k,
		affinity: s.Affinity,
		svc: elemDef{
			key:     kb,
			data:    binaryutil.NativeEndian.PutUint32(n),
			text:    kt + " : " + strconv.Itoa(int(n)),
			comment: comment(s.Name),
		},
	}
	for i, b := range s.Backends {
		e.backends = append(e.backends, backendElem(k, i, b))
		if s.Affinity {
			e.members = append(e.members, elemDef{
				key:  slices.Concat(kb, addrPortBytes(b)),
				text: kt + " . " + addrPortText(b),
			})
		}
	}
	return e
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

// svcSetName is the map that holds the service's key.
func (e serviceElems) svcSetName() string {
	if e.affinity {
		return mapAffinityServices + e.key.family().suffix
	}
	return mapServices + e.key.family().suffix
}

// sets returns the elements by set name.
func (e serviceElems) sets() map[string][]elemDef {
	sfx := e.key.family().suffix
	return map[string][]elemDef{
		e.svcSetName():            {e.svc},
		mapBackends + sfx:         e.backends,
		setAffinityBackends + sfx: e.members,
	}
}

// serviceSets returns the sets and maps of the services: per family services,
// affinity_services, backends, affinity_backends and affinity, then the verdict maps of
// slot counts.
func serviceSets(svcs []Service) []setDef {
	var out []setDef
	byName := map[string]*setDef{}
	for _, f := range []ipFamily{ip4, ip6} {
		key := nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService)
		backend := nftables.MustConcatSetType(f.addrType, nftables.TypeInetService)
		out = append(out,
			setDef{name: mapServices + f.suffix, keyType: key, dataType: nftables.TypeInteger},
			setDef{name: mapAffinityServices + f.suffix, keyType: key, dataType: nftables.TypeInteger},
			setDef{name: mapBackends + f.suffix, dataType: backend,
				keyType: nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeInteger)},
			setDef{name: setAffinityBackends + f.suffix,
				keyType: nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService, f.addrType, nftables.TypeInetService)},
			setDef{name: mapAffinity + f.suffix, dataType: backend, dynamic: true, timeout: AffinityTimeout, size: affinitySize,
				keyType: nftables.MustConcatSetType(f.addrType, f.addrType, nftables.TypeInetProto, nftables.TypeInetService)},
		)
	}
	for i := range out {
		byName[out[i].name] = &out[i]
	}
	// Elements in the order of normServices and of the backends' indexes: sorted by key,
	// but for indexes above 255 (host-endian).
	for _, s := range normServices(svcs) {
		for name, elems := range s.elems().sets() {
			if set := byName[name]; set != nil {
				set.elems = append(set.elems, elems...)
			}
		}
	}
	for _, m := range []struct{ name, pick string }{
		{mapPicks, chainPick},
		{mapAffinityPicks, chainAffinityPick},
	} {
		picks := setDef{name: m.name, keyType: nftables.TypeInteger, dataType: nftables.TypeVerdict}
		picks.elems = append(picks.elems, gotoElem(0, chainReject))
		for _, n := range slotCounts() {
			picks.elems = append(picks.elems, gotoElem(n, m.pick+strconv.Itoa(int(n))))
		}
		out = append(out, picks)
	}
	return out
}

// gotoElem is the element "n : goto chain" of a verdict map keyed by a host-endian integer.
func gotoElem(n uint32, chain string) elemDef {
	return elemDef{
		key:  binaryutil.NativeEndian.PutUint32(n),
		jump: chain,
		text: strconv.Itoa(int(n)) + " : goto " + chain,
	}
}

// serviceChains returns the regular chains of the services: reject, affinity, then the
// pick and affinity-pick chains of every slot count.
func serviceChains() []chainDef {
	chains := []chainDef{
		{name: chainReject, rules: []ruleDef{
			{
				text: "meta l4proto tcp reject with tcp reset",
				exprs: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
					&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
				},
			},
			{
				text:  "reject with icmpx port-unreachable",
				exprs: []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}},
			},
		}},
		{name: chainAffinity, rules: []ruleDef{forgetRule(ip4), stickyRule(ip4), forgetRule(ip6), stickyRule(ip6)}},
	}
	for _, n := range slotCounts() {
		pick := chainDef{name: chainPick + strconv.Itoa(int(n))}
		affinityPick := chainDef{name: chainAffinityPick + strconv.Itoa(int(n)), rules: []ruleDef{jumpRule(expr.VerdictJump, chainAffinity)}}
		for _, f := range []ipFamily{ip4, ip6} {
			for _, mod := range drawModuli(n) {
				pick.rules = append(pick.rules, pickRule(f, mod))
				affinityPick.rules = append(affinityPick.rules, affinityPickRule(f, mod))
			}
		}
		affinityPick.rules = append(affinityPick.rules, jumpRule(expr.VerdictGoto, pick.name))
		chains = append(chains, pick, affinityPick)
	}
	return chains
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
	word := "jump "
	if kind == expr.VerdictGoto {
		word = "goto "
	}
	return ruleDef{text: word + chain, exprs: []expr.Any{&expr.Verdict{Kind: kind, Chain: chain}}}
}

// dispatchRules look the destination up in the services maps of family f and go to the
// pick chain of the service's slot count.
func dispatchRules(f ipFamily) []ruleDef {
	rule := func(m, picks string) ruleDef {
		return ruleDef{
			text: f.name + " daddr . meta l4proto . th dport map @" + m + " vmap @" + picks,
			exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
				[]expr.Any{loadAddr(f, f.daddr, reg1)},
				loadL4(f.addrLen),
				[]expr.Any{
					&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: m},
					&expr.Lookup{SourceRegister: reg1, DestRegister: unix.NFT_REG_VERDICT, IsDestRegSet: true, SetName: picks},
				}),
		}
	}
	return []ruleDef{
		rule(mapServices+f.suffix, mapPicks),
		rule(mapAffinityServices+f.suffix, mapAffinityPicks),
	}
}

// svcKeyText is the service key of a packet, in nft syntax.
func svcKeyText(f ipFamily) string { return f.name + " daddr . meta l4proto . th dport" }

// draw is "numgen random mod mod" into the register that starts at byte off.
func draw(mod, off uint32) expr.Any {
	return &expr.Numgen{Register: reg(off), Modulus: mod, Type: unix.NFT_NG_RANDOM}
}

func drawText(f ipFamily, mod uint32) string {
	return svcKeyText(f) + " . numgen random mod " + strconv.Itoa(int(mod)) + " map @" + mapBackends + f.suffix
}

// pickRule DNATs to the backend of a random index below mod. Registers: the service key
// from byte 0, the index after it; the backend replaces the key.
func pickRule(f ipFamily, mod uint32) ruleDef {
	a := f.addrLen
	return ruleDef{
		text: "dnat " + f.name + " to " + drawText(f, mod),
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			[]expr.Any{loadAddr(f, f.daddr, reg1)},
			loadL4(a),
			[]expr.Any{draw(mod, a+8)},
			dnatTo(f, mapBackends+f.suffix)),
	}
}

// Registers of the affinity rules: the client address from byte 0 and the service key
// after it form the key of the affinity map; the backend follows (affinity map data).
//
//	IPv4: client 0, key 4 (VIP 4, l4proto 8, port 12), then index 16 and backend 20-27
//	      (affinity-pick), or backend 16-23 (affinity chain)
//	IPv6: client 0, key 16 (VIP 16, l4proto 32, port 36), then index 40 and backend
//	      44-63, or backend 40-59

// loadClientKey loads "ip saddr . ip daddr . meta l4proto . th dport" from byte 0.
func loadClientKey(f ipFamily) []expr.Any {
	return slices.Concat(
		[]expr.Any{loadAddr(f, f.saddr, reg1), loadAddr(f, f.daddr, reg(f.addrLen))},
		loadL4(2*f.addrLen))
}

func clientKeyText(f ipFamily) string { return f.name + " saddr . " + svcKeyText(f) }

// affinityNAT DNATs to the backend at byte off (address, then port).
func affinityNAT(f ipFamily, off uint32) expr.Any {
	return &expr.NAT{
		Type: expr.NATTypeDestNAT, Family: uint32(f.nfproto),
		RegAddrMin: reg(off), RegAddrMax: reg(off), RegProtoMin: reg(off + f.addrLen), RegProtoMax: reg(off + f.addrLen),
		Specified: true,
	}
}

// affinityPickRule draws as pickRule does, adds "client . key : backend" to the affinity
// map (a no-op when the client has an entry) and DNATs to the backend of the client's
// entry. When the map is full, adding fails and the rule stops.
func affinityPickRule(f ipFamily, mod uint32) ruleDef {
	a := f.addrLen
	aff, backends := mapAffinity+f.suffix, mapBackends+f.suffix
	backend := 2*a + 12
	return ruleDef{
		text: "add @" + aff + " { " + clientKeyText(f) + " : " + drawText(f, mod) + " } " +
			"dnat " + f.name + " to " + clientKeyText(f) + " map @" + aff,
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			loadClientKey(f),
			[]expr.Any{
				draw(mod, 2*a+8),
				&expr.Lookup{SourceRegister: reg(a), DestRegister: reg(backend), IsDestRegSet: true, SetName: backends},
				&expr.Dynset{SrcRegKey: reg1, SrcRegData: reg(backend), SetName: aff, Operation: unix.NFT_DYNSET_OP_ADD},
				&expr.Lookup{SourceRegister: reg1, DestRegister: reg(backend), IsDestRegSet: true, SetName: aff},
				affinityNAT(f, backend),
			}),
	}
}

// rememberedText is the backend of the client's affinity entry, in nft syntax.
func rememberedText(f ipFamily) string {
	return clientKeyText(f) + " map @" + mapAffinity + f.suffix
}

// forgetRule deletes the client's affinity entry when its backend is no longer one of the
// service's.
func forgetRule(f ipFamily) ruleDef {
	a := f.addrLen
	aff := mapAffinity + f.suffix
	backend := 2*a + 8
	return ruleDef{
		text: svcKeyText(f) + " . " + rememberedText(f) + " != @" + setAffinityBackends + f.suffix +
			" delete @" + aff + " { " + clientKeyText(f) + " : " + rememberedText(f) + " }",
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			loadClientKey(f),
			[]expr.Any{
				&expr.Lookup{SourceRegister: reg1, DestRegister: reg(backend), IsDestRegSet: true, SetName: aff},
				&expr.Lookup{SourceRegister: reg(a), SetName: setAffinityBackends + f.suffix, Invert: true},
				&expr.Dynset{SrcRegKey: reg1, SrcRegData: reg(backend), SetName: aff, Operation: nftDynsetOpDelete},
			}),
	}
}

// stickyRule DNATs to the backend of the client's affinity entry, and refreshes the entry.
func stickyRule(f ipFamily) ruleDef {
	a := f.addrLen
	aff := mapAffinity + f.suffix
	backend := 2*a + 8
	return ruleDef{
		text: "update @" + aff + " { " + clientKeyText(f) + " : " + rememberedText(f) + " } " +
			"dnat " + f.name + " to " + rememberedText(f),
		exprs: slices.Concat(isFamily(nftables.TableFamilyINet, f),
			loadClientKey(f),
			[]expr.Any{
				&expr.Lookup{SourceRegister: reg1, DestRegister: reg(backend), IsDestRegSet: true, SetName: aff},
				&expr.Dynset{SrcRegKey: reg1, SrcRegData: reg(backend), SetName: aff, Operation: unix.NFT_DYNSET_OP_UPDATE},
				affinityNAT(f, backend),
			}),
	}
}
