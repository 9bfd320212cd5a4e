package nft

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The model below is the one description of table inet podnet: Render prints it,
// Table.Sync writes it and Table.InSync compares the kernel with it. A later feature adds
// its sets, maps and rules here, in build.

// Names of the sets of table inet podnet.
const (
	setBridges     = "bridges"
	setBridgePairs = "bridge_pairs"
	setMasq4       = "masq4"
	setMasq6       = "masq6"
)

// Names of the chains of table inet podnet.
const (
	chainForward     = "forward"
	chainPostrouting = "postrouting"
)

// maxComment is the longest comment put on a set element (the kernel allows 256 bytes
// of user data per element).
const maxComment = 128

// tableDef is the desired content of the table: sets first, then chains, in this order.
type tableDef struct {
	sets   []setDef
	chains []chainDef
}

// setDef is one named set.
type setDef struct {
	name     string
	keyType  nftables.SetDatatype
	interval bool
	elems    []elemDef // sorted, as rendered
}

// concat reports whether the set's key is a concatenation.
func (s setDef) concat() bool { return strings.Contains(s.keyType.Name, " . ") }

// elemDef is one element of a set. In an interval set it is a range [key, keyEnd): the
// kernel receives key and an "interval end" element keyEnd, or no end element when the
// range runs to the end of the key space (keyEnd nil).
type elemDef struct {
	key     []byte
	keyEnd  []byte
	text    string // nft syntax, without the comment
	comment string
}

// chainDef is one base chain; its policy is accept.
type chainDef struct {
	name     string
	typ      nftables.ChainType
	hook     nftables.ChainHook
	hookName string
	priority nftables.ChainPriority
	prioName string
	rules    []ruleDef
}

// ruleDef is one rule: its expressions, and the text nft would print for them. Lookups
// name their set; the set ID is filled in when the batch is built.
type ruleDef struct {
	text  string
	exprs []expr.Any
}

// Registers: NFT_REG_1 and NFT_REG_2 are 16 bytes each and contiguous, so an ifname
// loaded into reg 1 and another into reg 2 form the 32-byte key "ifname . ifname". The
// kernel dumps registers in this 16-byte numbering, so rules read back compare equal.
const (
	reg1 = unix.NFT_REG_1
	reg2 = unix.NFT_REG_2
)

// build turns r into the table's content. It does not validate r: entries that Validate
// rejects (empty or invalid bridge names, invalid prefixes) are left out, and a bridge
// listed twice appears once.
func build(r Ruleset) tableDef {
	nets := slices.Clone(r.Networks)
	slices.SortStableFunc(nets, func(a, b Network) int { return strings.Compare(a.Bridge, b.Bridge) })

	bridges := setDef{name: setBridges, keyType: nftables.TypeIFName}
	pairs := setDef{name: setBridgePairs, keyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIFName)}
	var masq4, masq6 []namedRange
	for i, n := range nets {
		if validIfName(n.Bridge) != nil || (i > 0 && nets[i-1].Bridge == n.Bridge) {
			continue
		}
		key := ifnameKey(n.Bridge)
		bridges.elems = append(bridges.elems, elemDef{
			key:     key,
			text:    quote(n.Bridge),
			comment: comment(n.Name),
		})
		pairs.elems = append(pairs.elems, elemDef{
			key:     append(slices.Clone(key), key...),
			text:    quote(n.Bridge) + " . " + quote(n.Bridge),
			comment: comment(n.Name),
		})
		if !n.Masquerade {
			continue
		}
		for _, p := range n.Subnets {
			if !p.IsValid() {
				continue
			}
			nr := namedRange{start: p.Masked().Addr(), last: lastAddr(p), names: []string{n.Name}}
			if p.Addr().Is4() {
				masq4 = append(masq4, nr)
			} else {
				masq6 = append(masq6, nr)
			}
		}
	}

	return tableDef{
		sets: []setDef{
			bridges,
			pairs,
			{name: setMasq4, keyType: nftables.TypeIPAddr, interval: true, elems: rangeElems(masq4)},
			{name: setMasq6, keyType: nftables.TypeIP6Addr, interval: true, elems: rangeElems(masq6)},
		},
		chains: []chainDef{
			{
				name: chainForward, typ: nftables.ChainTypeFilter,
				hook: *nftables.ChainHookForward, hookName: "forward",
				priority: *nftables.ChainPriorityFilter, prioName: "filter",
				rules: []ruleDef{isolationRule()},
			},
			{
				name: chainPostrouting, typ: nftables.ChainTypeNAT,
				hook: *nftables.ChainHookPostrouting, hookName: "postrouting",
				priority: *nftables.ChainPriorityNATSource, prioName: "srcnat",
				rules: []ruleDef{
					masqRule(unix.NFPROTO_IPV4, "ip", 12, 4, setMasq4),
					masqRule(unix.NFPROTO_IPV6, "ip6", 8, 16, setMasq6),
				},
			},
		},
	}
}

// isolationRule drops what is forwarded between two different podnet bridges. With
// br_netfilter, frames bridged within one bridge reach this hook with iifname == oifname
// == the bridge; nftables cannot compare two registers, so same-bridge pairs are in
// bridge_pairs.
func isolationRule() ruleDef {
	return ruleDef{
		text: "iifname @bridges oifname @bridges iifname . oifname != @bridge_pairs drop",
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: setBridges},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: setBridges},
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg2},
			&expr.Lookup{SourceRegister: reg1, SetName: setBridgePairs, Invert: true},
			&expr.Verdict{Kind: expr.VerdictDrop},
		},
	}
}

// masqRule masquerades packets of one family whose source address is in set and that
// leave through an interface that is not a podnet bridge. In family inet the family check
// (meta nfproto) must be explicit: nft adds it silently and does not print it.
func masqRule(nfproto byte, name string, saddrOff, addrLen uint32, set string) ruleDef {
	return ruleDef{
		text: name + " saddr @" + set + " oifname != @bridges masquerade",
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto}},
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: addrLen},
			&expr.Lookup{SourceRegister: reg1, SetName: set},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: setBridges, Invert: true},
			&expr.Masq{},
		},
	}
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

// rangeElems sorts ranges, merges the ones that overlap or touch (the kernel refuses
// overlapping intervals) and turns them into interval set elements.
func rangeElems(rs []namedRange) []elemDef {
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
	elems := make([]elemDef, 0, len(merged))
	for _, r := range merged {
		slices.Sort(r.names)
		e := elemDef{
			key:     r.start.AsSlice(),
			text:    rangeText(r.start, r.last),
			comment: comment(strings.Join(slices.Compact(r.names), ",")),
		}
		if end := r.last.Next(); end.IsValid() {
			e.keyEnd = end.AsSlice()
		}
		elems = append(elems, e)
	}
	return elems
}

// rangeText prints a range as nft does: as a prefix when it is one, else as first-last.
func rangeText(start, last netip.Addr) string {
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
