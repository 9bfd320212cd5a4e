package nftwire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/big"
	"math/bits"
	"net"
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

// Printing a rule: the nft syntax of a rule is printed from its expressions, the way nft
// 1.0.6 (Debian 12) lists them, so that a rule has one description, the expressions, and
// its text cannot say something else. internal/nft prints podnet's desired rules with it
// (Render) and the kernel's (InSync's differences); internal/trace prints the rules of
// every table a traced packet goes through, podnet's and other tools'.
//
// The printer follows nft's own listing code (netlink_delinearize.c) in two steps:
//
//   - The expressions run on a model of the registers: a load (payload, meta, ct, numgen,
//     hash, fib, exthdr, bitwise, byteorder, an immediate value, the data of a map lookup)
//     puts an operand in the 4-byte words it fills; a consumer (cmp, range, lookup,
//     dynset, nat, a set statement) takes the operands from its source register on, as
//     many as the length it reads (a set's key or data length: this is why the printer
//     knows the sets of the table) and makes a statement. Two or more operands make a
//     concatenation, "a . b".
//   - Each statement is printed in order, with nft's protocol context: the table's family
//     and a match on meta nfproto, ether type, meta l4proto, ip protocol or ip6 nexthdr
//     say which header follows, so that a payload load prints as the header field it
//     loads ("ip saddr", "tcp dport", "icmpv6 type") or, without a field of that offset
//     and length, raw ("@th,64,128"). Such a match is a dependency: nft leaves it out when
//     a later header field of the next layer implies it (meta nfproto ipv4 before ip
//     saddr), up to the next statement that is not a match, as nft does.
//
// The header fields, keys and statements known are those of podnet's tables and of what
// host firewalls commonly write (tested against nft itself on both). Where nft resolves a
// number with the host's databases (an interface index, a user id) the printer prints the
// number. An expression or a sequence that the printer does not know prints as
// "<unknown ...>", never as a guess.

// Table is what printing a rule needs of its table: its family (in families ip, ip6 and
// arp the network header is known from the start) and its sets by name, whose key and
// data lengths say how many registers a lookup reads, with the elements of the anonymous
// ones, which the rule prints.
type Table struct {
	Family nftables.TableFamily
	Sets   map[string]Set
}

// PrintExprs returns the nft syntax of exprs, a rule of table t, as nft 1.0.6 lists it.
func (t Table) PrintExprs(exprs []expr.Any) string {
	es := make([]any, len(exprs))
	for i, e := range exprs {
		es[i] = e
	}
	return t.print(es)
}

// PrintRule returns the nft syntax of r, a rule of table t as DumpRules reads it: as
// PrintExprs, with its Opaque expressions printed as unknown.
func (t Table) PrintRule(r Rule) string { return t.print(r.Exprs) }

func (t Table) print(exprs []any) string {
	p := &printer{table: t}
	switch t.Family {
	case nftables.TableFamilyIPv4:
		p.network = &hdrIP
	case nftables.TableFamilyIPv6:
		p.network = &hdrIP6
	case nftables.TableFamilyARP:
		p.network = &hdrARP
	}
	for _, e := range exprs {
		p.expr(e)
	}
	var out []string
	for _, s := range p.stmts {
		if !s.killed {
			out = append(out, s.text)
		}
	}
	return strings.Join(out, " ")
}

// Protocol bases, as nft numbers them (enum proto_bases): a dependency of base b is kept
// in slot b+1, where a header field of base b+1 finds it.
const (
	baseLL = 1 + iota
	baseNetwork
	baseTransport
	baseInner
)

// printer prints one rule.
type printer struct {
	table Table
	// regs holds the operand that starts at each 4-byte word of the registers.
	regs  [16]operand
	stmts []*printStmt
	// deps are the dependencies that a header field of base i may make redundant.
	deps [baseInner + 1]*printStmt
	// network and transport are the headers the matches so far imply, nil if unknown.
	network, transport *header
	// gte is the last "x >= a" match, which an "x <= b" right after makes "x a-b".
	gte struct {
		stmt       *printStmt
		lhs, value string
	}
}

type printStmt struct {
	text   string
	killed bool // a dependency that a later header field implies
	// netProto: a match on ip protocol or ip6 nexthdr, which in families inet, bridge and
	// netdev also says the network protocol: a transport header field leaves it in place.
	netProto bool
}

// operand is what a register holds.
type operand interface {
	size() uint32 // in bytes
}

type (
	payloadOp struct {
		base     expr.PayloadBase
		off, len uint32
	}
	metaOp struct{ key expr.MetaKey }
	ctOp   struct {
		text    string // "ct original ip daddr"
		n       uint32
		typ     valueType
		killNet bool // a generic address, which names the network protocol (ct original ip saddr)
	}
	// namedOp is a load printed as it is: numgen, hash, fib, exthdr.
	namedOp struct {
		text string
		typ  valueType
		n    uint32
		kill int // the base of the dependency it makes redundant, 0 for none
	}
	// maskOp is (src & mask) ^ xor.
	maskOp struct {
		src       operand
		mask, xor []byte
	}
	// htonOp is src turned big-endian (a byteorder expression), as a host-endian field is
	// before a range or an ordering.
	htonOp struct{ src operand }
	// mapOp is the data of a map lookup.
	mapOp struct {
		key []operand
		set Set
	}
	immOp struct{ data []byte } // an immediate value
	// badOp is an operand the printer cannot make out.
	badOp struct {
		why string
		n   uint32
	}
)

func (o payloadOp) size() uint32 { return o.len }
func (o metaOp) size() uint32    { return metaKeys[o.key].size }
func (o ctOp) size() uint32      { return o.n }
func (o namedOp) size() uint32   { return o.n }
func (o maskOp) size() uint32    { return o.src.size() }
func (o htonOp) size() uint32    { return o.src.size() }
func (o mapOp) size() uint32 {
	if o.set.DataLen == 0 {
		return 4
	}
	return o.set.DataLen
}
func (o immOp) size() uint32 { return uint32(len(o.data)) }
func (o badOp) size() uint32 { return o.n }

// word is the index of the 4-byte word register r starts at.
func word(r uint32) (int, bool) {
	switch {
	case r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4:
		return int(r-unix.NFT_REG_1) * 4, true
	case r >= unix.NFT_REG32_00 && r <= unix.NFT_REG32_15:
		return int(r - unix.NFT_REG32_00), true
	}
	return 0, false
}

func words(n uint32) int { return int(n+3) / 4 }

// load puts o into the words from register r on, replacing what overlaps them.
func (p *printer) load(r uint32, o operand) {
	w, ok := word(r)
	if !ok || w+words(o.size()) > len(p.regs) {
		p.unknown("load into register %d", r)
		return
	}
	for i := range p.regs {
		if old := p.regs[i]; old != nil && i < w+words(o.size()) && w < i+words(old.size()) {
			p.regs[i] = nil
		}
	}
	p.regs[w] = o
}

// reg returns the operand that starts at register r, or nil.
func (p *printer) reg(r uint32) operand {
	if w, ok := word(r); ok {
		return p.regs[w]
	}
	return nil
}

// operands returns the operands that fill n bytes from register r on: one, or the fields
// of a concatenation.
func (p *printer) operands(r uint32, n uint32) []operand {
	w, ok := word(r)
	if !ok {
		return []operand{badOp{fmt.Sprintf("register %d", r), n}}
	}
	var out []operand
	for end := w + words(n); w < end; {
		if w >= len(p.regs) {
			return []operand{badOp{fmt.Sprintf("%d bytes from register %d, beyond the registers", n, r), n}}
		}
		o := p.regs[w]
		if o == nil || o.size() == 0 {
			return []operand{badOp{fmt.Sprintf("%d bytes from register %d, which hold no loaded field", n, r), n}}
		}
		out = append(out, o)
		w += words(o.size())
		if w > end {
			return []operand{badOp{fmt.Sprintf("%d bytes from register %d, which end within a field", n, r), n}}
		}
	}
	return out
}

// addMatch adds a match: the dependencies before it stay.
func (p *printer) addMatch(text string) *printStmt {
	s := &printStmt{text: text}
	p.stmts = append(p.stmts, s)
	return s
}

// addStmt adds a statement that is not a match: a later field implies none of the
// dependencies before it.
func (p *printer) addStmt(text string) {
	p.addMatch(text)
	p.resetDeps()
}

func (p *printer) unknown(format string, args ...any) {
	p.addStmt("<unknown " + fmt.Sprintf(format, args...) + ">")
}

// resetDeps forgets the dependencies: nft only leaves out a dependency that a later
// match implies, not one across another statement (a counter or a set update before
// the field would count or update packets of any protocol).
func (p *printer) resetDeps() { p.deps = [len(p.deps)]*printStmt{} }

// multiProto reports whether the table's family holds packets of several network
// protocols, each with its own headers.
func (p *printer) multiProto() bool {
	switch p.table.Family {
	case nftables.TableFamilyINet, nftables.TableFamilyBridge, nftables.TableFamilyNetdev:
		return true
	}
	return false
}

// kill drops the dependency that a header field of base b implies.
func (p *printer) kill(b int) {
	d := p.deps[b]
	if d == nil || b == baseTransport && d.netProto && p.multiProto() {
		return
	}
	d.killed = true
	p.deps[b] = nil
}

func (p *printer) expr(e any) {
	switch e := e.(type) {
	case *expr.Payload:
		p.payload(e)
	case *expr.Meta:
		k, ok := metaKeys[e.Key]
		switch {
		case !ok:
			p.unknown("meta key %d", e.Key)
		case e.SourceRegister:
			p.addStmt(k.name + " set " + p.value(e.Register, k.typ, k.size))
		default:
			p.load(e.Register, metaOp{e.Key})
		}
	case *expr.Ct:
		p.ct(e)
	case *expr.Numgen:
		types := map[uint32]string{unix.NFT_NG_INCREMENTAL: "inc", unix.NFT_NG_RANDOM: "random"}
		typ, ok := types[e.Type]
		if !ok {
			p.unknown("numgen type %d", e.Type)
			return
		}
		s := "numgen " + typ + " mod " + strconv.FormatUint(uint64(e.Modulus), 10)
		if e.Offset != 0 {
			s += " offset " + strconv.FormatUint(uint64(e.Offset), 10)
		}
		p.load(e.Register, namedOp{text: s, typ: typHostInteger, n: 4})
	case *expr.Hash:
		p.hash(e)
	case *expr.Fib:
		p.fib(e)
	case *expr.Exthdr:
		p.exthdr(e)
	case *expr.Bitwise:
		p.bitwise(e)
	case *expr.Byteorder:
		src := p.operands(e.SourceRegister, e.Len)
		if e.Op != expr.ByteorderHton || len(src) != 1 || src[0].size() != e.Len {
			p.unknown("byteorder of %d bytes from register %d", e.Len, e.SourceRegister)
			return
		}
		p.load(e.DestRegister, htonOp{src[0]})
	case *expr.Immediate:
		if e.Register == unix.NFT_REG_VERDICT {
			p.unknown("immediate verdict data")
			return
		}
		p.load(e.Register, immOp{e.Data})
	case *expr.Cmp:
		lhs := p.reg(e.Register)
		if lhs == nil {
			p.unknown("cmp of register %d, which holds no loaded field", e.Register)
			return
		}
		p.match(lhs, e.Op, e.Data)
	case *expr.Range:
		p.rangeMatch(e)
	case *expr.Lookup:
		p.lookup(e)
	case *expr.Dynset:
		p.dynset(e)
	case *expr.NAT:
		p.nat(e)
	case *expr.Masq:
		s := "masquerade"
		if e.ToPorts || e.RegProtoMin != 0 {
			s += " to :" + p.portRange(e.RegProtoMin, e.RegProtoMax)
		}
		p.addStmt(s + natFlags(e.Random, e.FullyRandom, e.Persistent))
	case *expr.Redir:
		s := "redirect"
		if e.RegisterProtoMin != 0 {
			s += " to :" + p.portRange(e.RegisterProtoMin, e.RegisterProtoMax)
		}
		p.addStmt(s + natFlags(e.Flags&expr.NF_NAT_RANGE_PROTO_RANDOM != 0,
			e.Flags&expr.NF_NAT_RANGE_PROTO_RANDOM_FULLY != 0, e.Flags&expr.NF_NAT_RANGE_PERSISTENT != 0))
	case *expr.Reject:
		p.reject(e)
	case *expr.Counter:
		p.addStmt(fmt.Sprintf("counter packets %d bytes %d", e.Packets, e.Bytes))
	case *expr.Log:
		p.addStmt(logText(e))
	case *expr.Limit:
		p.limit(e)
	case *expr.Quota:
		p.addStmt(quotaText(e))
	case *expr.Notrack:
		p.addStmt("notrack")
	case *expr.Queue:
		p.addStmt(fmt.Sprintf("queue num %d", e.Num))
	case *expr.Objref:
		p.objref(e)
	case *expr.Connlimit:
		over := ""
		if e.Flags&expr.NFT_CONNLIMIT_F_INV != 0 {
			over = "over "
		}
		p.addStmt(fmt.Sprintf("ct count %s%d", over, e.Count))
	case *expr.Match:
		p.addStmt(fmt.Sprintf("xt match %q", e.Name))
	case *expr.Target:
		p.addStmt(fmt.Sprintf("xt target %q", e.Name))
	case *expr.Verdict:
		p.addStmt(verdictText(e))
	case *Opaque:
		p.unknown("expression %s", e.Name)
	default:
		p.unknown("expression %T", e)
	}
}

// payload loads a header field, or writes one ("ip saddr set 1.2.3.4").
func (p *printer) payload(e *expr.Payload) {
	o := payloadOp{e.Base, e.Offset, e.Len}
	switch {
	case e.OperationType == expr.PayloadLoad && e.SourceRegister == 0 && e.CsumType == 0:
		p.load(e.DestRegister, o)
	case e.OperationType == expr.PayloadWrite:
		text, typ := p.operandType(o)
		p.addStmt(text + " set " + p.value(e.SourceRegister, typ, e.Len))
	default:
		p.unknown("payload operation %d", e.OperationType)
	}
}

func (p *printer) ct(e *expr.Ct) {
	k, ok := ctKeys[e.Key]
	if !ok {
		p.unknown("ct key %d", e.Key)
		return
	}
	if e.SourceRegister {
		p.addStmt("ct " + k.name + " set " + p.value(e.Register, k.typ, k.size))
		return
	}
	o := ctOp{n: k.size, typ: k.typ}
	name := k.name
	if e.Key == expr.CtKeySRC || e.Key == expr.CtKeyDST {
		// The address of the network protocol the rule matched so far, of the table's
		// family's size (16 bytes in the families of several protocols) otherwise.
		switch p.network {
		case &hdrIP:
			name, o.n, o.typ, o.killNet = "ip "+name, 4, typIPv4, true
		case &hdrIP6:
			name, o.n, o.typ, o.killNet = "ip6 "+name, 16, typIPv6, true
		default:
			o.n, o.typ = 16, typXInteger
		}
	}
	var dir string
	switch {
	case k.dir == dirNone:
	case e.Direction == ctDirOriginal:
		dir = "original "
	case e.Direction == ctDirReply:
		dir = "reply "
	case k.dir == dirOptional && e.Direction == CtDirNone:
	default:
		p.unknown("ct direction %d", e.Direction)
		return
	}
	o.text = "ct " + dir + name
	p.load(e.Register, o)
}

func (p *printer) hash(e *expr.Hash) {
	var s string
	switch e.Type {
	case expr.HashTypeJenkins:
		s = fmt.Sprintf("jhash %s mod %d seed 0x%x", p.concat(p.operands(e.SourceRegister, e.Length)), e.Modulus, e.Seed)
	case expr.HashTypeSym:
		s = fmt.Sprintf("symhash mod %d", e.Modulus)
	default:
		p.unknown("hash type %d", e.Type)
		return
	}
	if e.Offset != 0 {
		s += fmt.Sprintf(" offset %d", e.Offset)
	}
	p.load(e.DestRegister, namedOp{text: s, typ: typHostInteger, n: 4})
}

func (p *printer) fib(e *expr.Fib) {
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{e.FlagSADDR, "saddr"}, {e.FlagDADDR, "daddr"}, {e.FlagMARK, "mark"}, {e.FlagIIF, "iif"}, {e.FlagOIF, "oif"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	s := "fib " + strings.Join(flags, " . ")
	switch {
	case e.FlagPRESENT || len(flags) == 0:
		p.unknown("fib")
	case e.ResultADDRTYPE:
		p.load(e.Register, namedOp{text: s + " type", typ: typFibAddrType, n: 4})
	case e.ResultOIFNAME:
		p.load(e.Register, namedOp{text: s + " oifname", typ: typIfname, n: 16})
	case e.ResultOIF:
		p.load(e.Register, namedOp{text: s + " oif", typ: typIfindex, n: 4})
	default:
		p.unknown("fib result")
	}
}

// exthdr loads or writes a field of a TCP option or an IPv6 extension header.
func (p *printer) exthdr(e *expr.Exthdr) {
	if e.Flags != 0 {
		p.unknown("exthdr with flags %#x", e.Flags)
		return
	}
	o := namedOp{text: fmt.Sprintf("exthdr @%d,%d,%d", e.Type, e.Offset*8, e.Len*8), typ: typInteger, n: e.Len}
	switch e.Op {
	case expr.ExthdrOpTcpopt:
		o.text, o.kill = fmt.Sprintf("tcp option @%d,%d,%d", e.Type, e.Offset*8, e.Len*8), baseTransport
		if opt, ok := tcpOptions[e.Type]; ok {
			for _, f := range opt.fields {
				if f.off == e.Offset && f.len == e.Len {
					o.text = "tcp option " + opt.name + " " + f.name
				}
			}
		}
	case expr.ExthdrOpIpv6:
	default:
		p.unknown("exthdr operation %d", e.Op)
		return
	}
	if e.SourceRegister != 0 {
		text, typ := p.operandType(o)
		p.addStmt(text + " set " + p.value(e.SourceRegister, typ, e.Len))
		return
	}
	p.load(e.DestRegister, o)
}

func (p *printer) bitwise(e *expr.Bitwise) {
	src := p.operands(e.SourceRegister, e.Len)
	switch {
	case len(src) != 1 || src[0].size() != e.Len:
		p.unknown("bitwise of %d bytes from register %d", e.Len, e.SourceRegister)
	case len(e.Mask) != int(e.Len) || len(e.Xor) != int(e.Len) || allZero(e.Mask):
		p.unknown("bitwise other than a mask and xor of its source")
	default:
		p.load(e.DestRegister, maskOp{src[0], e.Mask, e.Xor})
	}
}

// value prints what register r holds where a statement reads n bytes of type typ from it:
// an immediate value, or what was loaded.
func (p *printer) value(r uint32, typ valueType, n uint32) string {
	switch o := p.reg(r).(type) {
	case nil:
		return fmt.Sprintf("<unknown value of register %d, which holds nothing>", r)
	case immOp:
		data := o.data
		if n != 0 && uint32(len(data)) > n {
			data = data[:n]
		}
		return formatValue(typ, data)
	default:
		return p.operand(o)
	}
}

// portRange prints the port, or range of ports, of registers min and max.
func (p *printer) portRange(min, max uint32) string {
	s := p.value(min, typInetService, 2)
	if max != 0 && max != min {
		s += "-" + p.value(max, typInetService, 2)
	}
	return s
}

func (p *printer) rangeMatch(e *expr.Range) {
	lhs := p.reg(e.Register)
	n := uint32(len(e.FromData))
	switch {
	case lhs == nil:
		p.unknown("range of register %d, which holds no loaded field", e.Register)
		return
	case e.Op != expr.CmpOpEq && e.Op != expr.CmpOpNeq:
		p.unknown("range op %d", e.Op)
		return
	case n != uint32(len(e.ToData)) || n != lhs.size():
		p.unknown("range of %d bytes over a field of %d", n, lhs.size())
		return
	}
	text, typ := p.operandType(lhs)
	op := " "
	if e.Op == expr.CmpOpNeq {
		op = " != "
	}
	p.addMatch(text + op + formatValue(typ, e.FromData) + "-" + formatValue(typ, e.ToData))
}

func (p *printer) lookup(e *expr.Lookup) {
	set, ok := p.table.Sets[e.SetName]
	switch {
	case !ok:
		p.unknown("lookup in set %q, not of the table", e.SetName)
	case !e.IsDestRegSet:
		key := p.operands(e.SourceRegister, set.KeyLen)
		op := " "
		if e.Invert {
			op = " != "
		}
		p.addMatch(p.concat(key) + op + p.setRef(set, key))
	case e.Invert || !set.IsMap():
		p.unknown("inverted map lookup or map lookup in set %s", set.Name)
	case e.DestRegister == unix.NFT_REG_VERDICT:
		if !set.IsVerdictMap() {
			p.unknown("verdict from map %s", set.Name)
			return
		}
		key := p.operands(e.SourceRegister, set.KeyLen)
		p.addStmt(p.concat(key) + " vmap " + p.setRef(set, key))
	default:
		p.load(e.DestRegister, mapOp{p.operands(e.SourceRegister, set.KeyLen), set})
	}
}

func (p *printer) dynset(e *expr.Dynset) {
	set, ok := p.table.Sets[e.SetName]
	ops := map[uint32]string{unix.NFT_DYNSET_OP_ADD: "add", unix.NFT_DYNSET_OP_UPDATE: "update", 2: "delete"} // NFT_DYNSET_OP_DELETE
	op, known := ops[e.Operation]
	switch {
	case !ok:
		p.unknown("set update of set %q, not of the table", e.SetName)
	case !known || e.Invert || len(e.Exprs) > 0 || (e.SrcRegData != 0) != set.IsMap() || set.IsVerdictMap() ||
		e.Timeout%1e6 != 0:
		p.unknown("set update of %s", set.Name)
	default:
		elem := p.concat(p.operands(e.SrcRegKey, set.KeyLen))
		if e.Timeout != 0 {
			elem += " timeout " + Duration(e.Timeout)
		}
		if set.IsMap() {
			elem += " : " + p.concat(p.operands(e.SrcRegData, set.DataLen))
		}
		p.addStmt(op + " @" + set.Name + " { " + elem + " }")
	}
}

// natFamily is what NAT needs of a network protocol.
type natFamily struct {
	name    string
	addrLen uint32
	typ     valueType
}

// nat prints a NAT statement: to an address (or range) and port (or range) of immediate
// values, to the address of a map, or to the address and port of a map.
func (p *printer) nat(e *expr.NAT) {
	kinds := map[expr.NATType]string{expr.NATTypeDestNAT: "dnat", expr.NATTypeSourceNAT: "snat"}
	fams := map[uint32]natFamily{unix.NFPROTO_IPV4: {"ip", 4, typIPv4}, unix.NFPROTO_IPV6: {"ip6", 16, typIPv6}}
	kind, ok1 := kinds[e.Type]
	f, ok2 := fams[e.Family]
	if !ok1 || !ok2 || e.Prefix {
		p.unknown("nat")
		return
	}
	s := kind
	if p.table.Family == nftables.TableFamilyINet {
		s += " " + f.name
	}
	flags := natFlags(e.Random, e.FullyRandom, e.Persistent)
	if e.RegAddrMin == 0 && e.RegProtoMin == 0 {
		p.addStmt(s + flags)
		return
	}
	var target string
	if e.RegAddrMin != 0 {
		addr, _ := word(e.RegAddrMin)
		switch o := p.reg(e.RegAddrMin).(type) {
		case mapOp:
			proto, _ := word(e.RegProtoMin)
			switch {
			case e.RegAddrMax != 0 && e.RegAddrMax != e.RegAddrMin:
			case e.RegProtoMin == 0 && o.size() == f.addrLen:
				// The address of the map.
				p.addStmt(s + " to " + p.operand(o) + flags)
				return
			case e.RegProtoMin != 0 && (e.RegProtoMax == 0 || e.RegProtoMax == e.RegProtoMin) && e.Specified &&
				proto == addr+words(f.addrLen) && o.size() == f.addrLen+4:
				// The address and port of the map ("ip daddr . th dport" data).
				p.addStmt(s + " to " + p.operand(o) + flags)
				return
			}
			p.unknown("nat other than to the address, or address and port, of a map")
			return
		case immOp:
			target = p.value(e.RegAddrMin, f.typ, f.addrLen)
			if e.RegAddrMax != 0 && e.RegAddrMax != e.RegAddrMin {
				target += "-" + p.value(e.RegAddrMax, f.typ, f.addrLen)
			}
		default:
			p.unknown("nat other than to an address, a range or a map")
			return
		}
	}
	if e.RegProtoMin != 0 {
		if _, ok := p.reg(e.RegProtoMin).(immOp); !ok {
			p.unknown("nat to a port other than a value")
			return
		}
		if f.addrLen == 16 && target != "" {
			target = "[" + target + "]"
		}
		target += ":" + p.portRange(e.RegProtoMin, e.RegProtoMax)
	}
	p.addStmt(s + " to " + target + flags)
}

func natFlags(random, fully, persistent bool) string {
	var fs []string
	for _, f := range []struct {
		on   bool
		name string
	}{{random, "random"}, {fully, "fully-random"}, {persistent, "persistent"}} {
		if f.on {
			fs = append(fs, f.name)
		}
	}
	if len(fs) == 0 {
		return ""
	}
	return " " + strings.Join(fs, ",")
}

func (p *printer) reject(e *expr.Reject) {
	switch e.Type {
	case unix.NFT_REJECT_TCP_RST:
		// nft leaves the network protocol match before it out (in family inet and
		// bridge, stmt_reject_postprocess), not the transport protocol match.
		p.kill(baseNetwork)
		p.addStmt("reject with tcp reset")
	case unix.NFT_REJECT_ICMPX_UNREACH:
		switch name, ok := icmpxCodeNames[uint64(e.Code)]; {
		case e.Code == unix.NFT_REJECT_ICMPX_PORT_UNREACH:
			p.addStmt("reject")
		case ok:
			p.addStmt("reject with icmpx " + name)
		default:
			p.unknown("reject code %d", e.Code)
		}
	case unix.NFT_REJECT_ICMP_UNREACH:
		// The ICMP of the network protocol the rule matched; nft leaves that match out,
		// and names the code but in families ip and ip6 for port-unreachable.
		var proto string
		var typ valueType
		var port uint8
		switch p.network {
		case &hdrIP:
			proto, typ, port = "icmp", typICMPCode, 3 // ICMP_PORT_UNREACH
		case &hdrIP6:
			proto, typ, port = "icmpv6", typICMPv6Code, 4 // ICMP6_DST_UNREACH_NOPORT
		default:
			p.unknown("reject with icmp code %d of no network protocol", e.Code)
			return
		}
		p.kill(baseNetwork)
		if e.Code == port && !p.multiProto() {
			p.addStmt("reject")
			return
		}
		p.addStmt("reject with " + proto + " " + formatValue(typ, []byte{e.Code}))
	default:
		p.unknown("reject type %d", e.Type)
	}
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictQueue:
		return "queue"
	case expr.VerdictStolen:
		return "stolen"
	}
	return fmt.Sprintf("<unknown verdict %d>", v.Kind)
}

func logText(e *expr.Log) string {
	has := func(attr uint16) bool { return e.Key&(1<<attr) != 0 }
	s := "log"
	if has(unix.NFTA_LOG_PREFIX) {
		s += ` prefix "` + string(bytes.TrimRight(e.Data, "\x00")) + `"`
	}
	if has(unix.NFTA_LOG_GROUP) {
		s += fmt.Sprintf(" group %d", e.Group)
	}
	if has(unix.NFTA_LOG_SNAPLEN) {
		s += fmt.Sprintf(" snaplen %d", e.Snaplen)
	}
	if has(unix.NFTA_LOG_QTHRESHOLD) {
		s += fmt.Sprintf(" queue-threshold %d", e.QThreshold)
	}
	levels := []string{"emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", "audit"}
	if has(unix.NFTA_LOG_LEVEL) && e.Level != expr.LogLevelWarning && int(e.Level) < len(levels) {
		s += " level " + levels[e.Level]
	}
	switch f := e.Flags; {
	case f&expr.LogFlagsMask == expr.LogFlagsMask:
		s += " flags all"
	default:
		if f&(expr.LogFlagsTCPSeq|expr.LogFlagsTCPOpt) != 0 {
			var tcp []string
			if f&expr.LogFlagsTCPSeq != 0 {
				tcp = append(tcp, "sequence")
			}
			if f&expr.LogFlagsTCPOpt != 0 {
				tcp = append(tcp, "options")
			}
			s += " flags tcp " + strings.Join(tcp, ",")
		}
		if f&expr.LogFlagsIPOpt != 0 {
			s += " flags ip options"
		}
		if f&expr.LogFlagsUID != 0 {
			s += " flags skuid"
		}
		if f&expr.LogFlagsMACDecode != 0 {
			s += " flags ether"
		}
	}
	return s
}

// dataUnit prints a number of bytes as nft does: in the largest of bytes, kbytes and
// mbytes that divides it.
func dataUnit(n uint64) (uint64, string) {
	units := []string{"bytes", "kbytes", "mbytes"}
	i := 0
	for ; i < len(units)-1 && n != 0 && n%1024 == 0; i++ {
		n /= 1024
	}
	return n, units[i]
}

func (p *printer) limit(e *expr.Limit) {
	units := map[expr.LimitTime]string{
		expr.LimitTimeSecond: "second", expr.LimitTimeMinute: "minute", expr.LimitTimeHour: "hour",
		expr.LimitTimeDay: "day", expr.LimitTimeWeek: "week",
	}
	unit, ok := units[e.Unit]
	if !ok {
		p.unknown("limit unit %d", e.Unit)
		return
	}
	over := ""
	if e.Over {
		over = "over "
	}
	switch e.Type {
	case expr.LimitTypePkts:
		s := fmt.Sprintf("limit rate %s%d/%s", over, e.Rate, unit)
		if e.Burst != 0 && e.Burst != 5 { // nft's default burst: 5 packets
			s += fmt.Sprintf(" burst %d packets", e.Burst)
		}
		p.addStmt(s)
	case expr.LimitTypePktBytes:
		rate, runit := dataUnit(e.Rate)
		s := fmt.Sprintf("limit rate %s%d %s/%s", over, rate, runit, unit)
		if e.Burst != 0 {
			burst, bunit := dataUnit(uint64(e.Burst))
			s += fmt.Sprintf(" burst %d %s", burst, bunit)
		}
		p.addStmt(s)
	default:
		p.unknown("limit type %d", e.Type)
	}
}

func quotaText(e *expr.Quota) string {
	over := ""
	if e.Over {
		over = "over "
	}
	n, unit := dataUnit(e.Bytes)
	s := fmt.Sprintf("quota %s%d %s", over, n, unit)
	if e.Consumed != 0 {
		used, uunit := dataUnit(e.Consumed)
		s += fmt.Sprintf(" used %d %s", used, uunit)
	}
	return s
}

// objref prints a reference to a stateful object of the table (NFT_OBJECT_*).
func (p *printer) objref(e *expr.Objref) {
	set := map[int]string{3: "ct helper", 7: "ct timeout", 8: "meta secmark", 9: "ct expectation"}
	named := map[int]string{1: "counter", 2: "quota", 4: "limit", 5: "ct count", 10: "synproxy"}
	if s, ok := set[e.Type]; ok {
		p.addStmt(s + " set " + quote(e.Name))
		return
	}
	if s, ok := named[e.Type]; ok {
		p.addStmt(s + " name " + quote(e.Name))
		return
	}
	p.unknown("object type %d", e.Type)
}

// concat prints operands as a concatenation.
func (p *printer) concat(ops []operand) string {
	out := make([]string, len(ops))
	for i, o := range ops {
		out[i] = p.operand(o)
	}
	return strings.Join(out, " . ")
}

// operand prints o where a statement reads it; a header field it loads makes the
// dependency below it redundant.
func (p *printer) operand(o operand) string {
	s, _ := p.operandType(o)
	return s
}

// operandType prints o and returns the type of its values; the dependencies that o
// makes redundant go.
func (p *printer) operandType(o operand) (string, valueType) {
	s, typ, kills := p.describe(o)
	for _, b := range kills {
		p.kill(b)
	}
	return s, typ
}

// typeOf is the type of the values of o.
func (p *printer) typeOf(o operand) valueType {
	_, typ, _ := p.describe(o)
	return typ
}

// describe returns how o prints, the type of its values and the bases of the
// dependencies it makes redundant.
func (p *printer) describe(o operand) (string, valueType, []int) {
	switch o := o.(type) {
	case payloadOp:
		if f, h := p.field(o); f != nil {
			return h.name + " " + f.name, f.typ, []int{h.base}
		}
		return o.raw(), typXInteger, nil
	case metaOp:
		k := metaKeys[o.key]
		return k.name, k.typ, nil
	case ctOp:
		if o.killNet {
			return o.text, o.typ, []int{baseNetwork}
		}
		return o.text, o.typ, nil
	case namedOp:
		if o.kill != 0 {
			return o.text, o.typ, []int{o.kill}
		}
		return o.text, o.typ, nil
	case maskOp:
		s, typ, kills := p.describe(o.src)
		return s + binopText(typ, o.mask, o.xor), typ, kills
	case htonOp:
		s, typ, kills := p.describe(o.src)
		if typ == typHostInteger {
			typ = typInteger
		}
		return s, typ, kills
	case mapOp:
		var kills []int
		parts := make([]string, len(o.key))
		for i, k := range o.key {
			var more []int
			parts[i], _, more = p.describe(k)
			kills = append(kills, more...)
		}
		return strings.Join(parts, " . ") + " map " + p.setRef(o.set, o.key), typInteger, kills
	case immOp:
		return formatValue(typXInteger, o.data), typXInteger, nil
	case badOp:
		return "<unknown operand: " + o.why + ">", typInteger, nil
	}
	return fmt.Sprintf("<unknown operand %T>", o), typInteger, nil
}

// binopText prints the operations of (x & mask) ^ xor as nft does: the bits that xor sets
// where the mask clears them are an or, those it flips an xor, the mask of what is left an
// and ("meta mark & 0x0000ffff | 0x00010000").
func binopText(typ valueType, mask, xor []byte) string {
	and, or, flip := make([]byte, len(mask)), make([]byte, len(mask)), make([]byte, len(mask))
	for i := range mask {
		or[i] = xor[i] &^ mask[i]
		flip[i] = xor[i] & mask[i]
		and[i] = mask[i] | or[i]
	}
	var s string
	if !allOnes(and) {
		s += " & " + formatValue(typ, and)
	}
	if !allZero(or) {
		s += " | " + formatValue(typ, or)
	}
	if !allZero(flip) {
		s += " ^ " + formatValue(typ, flip)
	}
	return s
}

func (o payloadOp) raw() string {
	bases := map[expr.PayloadBase]string{
		expr.PayloadBaseLLHeader: "ll", expr.PayloadBaseNetworkHeader: "nh", expr.PayloadBaseTransportHeader: "th",
	}
	b, ok := bases[o.base]
	if !ok {
		return fmt.Sprintf("<unknown payload base %d>", o.base)
	}
	return fmt.Sprintf("@%s,%d,%d", b, o.off*8, o.len*8)
}

// field returns the header field that payload o loads exactly, with its header, in the
// current protocol context; nil when none (o prints raw).
func (p *printer) field(o payloadOp) (*headerField, *header) {
	h := p.header(o.base)
	if h != nil {
		for i := range h.fields {
			if f := &h.fields[i]; f.off == o.off && f.len == o.len {
				return f, h
			}
		}
	}
	// nft names the ports of a transport header it has no other field for "th sport"
	// and "th dport".
	if o.base == expr.PayloadBaseTransportHeader {
		for i := range hdrTH.fields {
			if f := &hdrTH.fields[i]; f.off == o.off && f.len == o.len {
				return f, &hdrTH
			}
		}
	}
	return nil, nil
}

// header is the header at base b in the current protocol context, or nil.
func (p *printer) header(b expr.PayloadBase) *header {
	switch b {
	case expr.PayloadBaseLLHeader:
		if p.table.Family == nftables.TableFamilyBridge || p.table.Family == nftables.TableFamilyNetdev {
			return &hdrEther
		}
	case expr.PayloadBaseNetworkHeader:
		return p.network
	case expr.PayloadBaseTransportHeader:
		return p.transport
	}
	return nil
}

var cmpOps = map[expr.CmpOp]string{
	expr.CmpOpEq: "==", expr.CmpOpNeq: "!=", expr.CmpOpLt: "<", expr.CmpOpLte: "<=", expr.CmpOpGt: ">", expr.CmpOpGte: ">=",
}

// match prints "lhs op data".
func (p *printer) match(lhs operand, op expr.CmpOp, data []byte) {
	sym, ok := cmpOps[op]
	if !ok {
		p.unknown("cmp op %d", op)
		return
	}
	switch l := lhs.(type) {
	case immOp:
		p.unknown("cmp of an immediate value")
		return
	case payloadOp:
		if op == expr.CmpOpEq || op == expr.CmpOpNeq {
			p.payloadMatch(l, sym, data)
			return
		}
	case maskOp:
		p.maskMatch(l, op, sym, data)
		return
	}
	if p.typeOf(lhs) == typIfname && len(data) <= 16 && (op == expr.CmpOpEq || op == expr.CmpOpNeq) {
		p.addMatch(p.operand(lhs) + opText(sym, false) + formatIfname(data))
		return
	}
	if lhs.size() != uint32(len(data)) {
		p.unknown("cmp of %d bytes with a field of %d", len(data), lhs.size())
		return
	}
	text, typ := p.operandType(lhs)
	value := formatValue(typ, data)
	if g := p.gte; op == expr.CmpOpLte && g.stmt != nil && g.stmt == p.stmts[len(p.stmts)-1] && g.lhs == text {
		// nft writes a range of a host-endian field as two comparisons.
		g.stmt.text = text + " " + g.value + "-" + value
		p.gte.stmt = nil
		return
	}
	s := p.addMatch(text + opText(sym, typ.bitmask()) + value)
	if op == expr.CmpOpGte {
		p.gte.stmt, p.gte.lhs, p.gte.value = s, text, value
	}
	if m, ok := lhs.(metaOp); ok && op == expr.CmpOpEq {
		p.protocolMatch(s, m, data)
	}
}

// opText is the operator between the sides of a match: nft leaves == out but where the
// value is a bitmask or the left side an expression with an operator.
func opText(sym string, mustEq bool) string {
	if sym == "==" && !mustEq {
		return " "
	}
	return " " + sym + " "
}

// protocolMatch records what "meta iiftype ether", "meta nfproto X", "meta protocol X" or
// "meta l4proto X" implies (nft's ct_meta_common_postprocess).
func (p *printer) protocolMatch(s *printStmt, m metaOp, data []byte) {
	switch m.key {
	case expr.MetaKeyIIFTYPE:
		// In the netdev family, the link layer header is Ethernet's.
		if binaryutil.NativeEndian.Uint16(data) == unix.ARPHRD_ETHER {
			p.deps[baseLL] = s
		}
	case expr.MetaKeyNFPROTO:
		p.network = networkHeaders[uint16(data[0])]
		p.deps[baseNetwork] = s
	case expr.MetaKeyPROTOCOL:
		p.network = etherHeaders[binary.BigEndian.Uint16(data)]
		p.deps[baseNetwork] = s
	case expr.MetaKeyL4PROTO:
		p.transport = transportHeaders[data[0]]
		// meta l4proto icmp or icmpv6 implies the network protocol; another does not.
		if d, n := p.deps[baseNetwork], p.network; d != nil &&
			((n == &hdrIP && data[0] == unix.IPPROTO_ICMP) || (n == &hdrIP6 && data[0] == unix.IPPROTO_ICMPV6)) {
			p.kill(baseNetwork)
		}
		p.deps[baseTransport] = s
	}
}

// payloadMatch prints "payload == data" or "!=" as nft does (payload_match_expand): as
// the header fields the load covers, a load shorter than its field as a prefix of the
// field ("ip daddr 127.0.0.0/8"), what no field covers raw.
func (p *printer) payloadMatch(l payloadOp, sym string, data []byte) {
	if uint32(len(data)) != l.len {
		p.unknown("cmp of %d bytes with a load of %d", len(data), l.len)
		return
	}
	h := p.header(l.base)
	for l.len > 0 {
		var f *headerField
		if h != nil {
			for i := range h.fields {
				if h.fields[i].off == l.off {
					f = &h.fields[i]
					break
				}
			}
		}
		if f == nil {
			// The rest, raw (or a port of "th").
			if tf, th := p.field(l); tf != nil {
				p.kill(th.base)
				p.addMatch(th.name + " " + tf.name + opText(sym, false) + formatValue(tf.typ, data))
				return
			}
			p.addMatch(l.raw() + opText(sym, false) + formatValue(typXInteger, data))
			return
		}
		n := min(f.len, l.len)
		value := data[:n]
		var text string
		if n < f.len {
			full := make([]byte, f.len)
			copy(full, value)
			text = formatValue(f.typ, full) + "/" + strconv.Itoa(int(n)*8)
		} else {
			text = formatValue(f.typ, value)
		}
		p.kill(h.base)
		s := p.addMatch(h.name + " " + f.name + opText(sym, false) + text)
		if sym == "==" && f.protoKey && n == f.len {
			// The ether type, ip protocol or ip6 nexthdr: the header that follows.
			switch h.base {
			case baseLL:
				p.network = etherHeaders[binary.BigEndian.Uint16(value)]
			case baseNetwork:
				p.transport = transportHeaders[value[0]]
				s.netProto = true
			}
			p.deps[h.base+1] = s
		}
		data, l.off, l.len = data[n:], l.off+n, l.len-n
	}
}

// maskMatch prints "src & mask op data": a flag match ("ct state established,related")
// for a bitmask compared with zero, flags under a mask ("tcp flags syn / syn,ack"), none
// of them ("tcp flags ! syn"), a
// prefix ("ip6 saddr fe80::/10") for an address field whose mask is a prefix, else with
// the mask.
func (p *printer) maskMatch(l maskOp, op expr.CmpOp, sym string, data []byte) {
	switch {
	case uint32(len(data)) != l.size():
		p.unknown("cmp of %d bytes with a field of %d", len(data), l.size())
		return
	case !allZero(l.xor):
		p.unknown("cmp of a field with bits flipped")
		return
	}
	if typ := p.typeOf(l.src); typ.bitmask() {
		_, payload := l.src.(payloadOp)
		switch {
		case op == expr.CmpOpNeq && allZero(data):
			text, typ := p.operandType(l.src)
			p.addMatch(text + " " + formatValue(typ, l.mask))
			return
		case op == expr.CmpOpEq && payload && allZero(data):
			text, typ := p.operandType(l.src)
			p.addMatch(text + " ! " + formatValue(typ, l.mask))
			return
		case op == expr.CmpOpEq && payload:
			text, typ := p.operandType(l.src)
			p.addMatch(text + " " + formatValue(typ, data) + " / " + formatValue(typ, l.mask))
			return
		case op != expr.CmpOpEq:
			p.unknown("%s match other than of flags", p.operand(l.src))
			return
		}
	}
	if pl, ok := l.src.(payloadOp); ok && (op == expr.CmpOpEq || op == expr.CmpOpNeq) {
		if f, h := p.field(pl); f != nil && f.typ.prefix() {
			if bits, ok := prefixLen(l.mask); ok {
				p.kill(h.base)
				p.addMatch(h.name + " " + f.name + opText(sym, false) + formatValue(f.typ, data) + "/" + strconv.Itoa(bits))
				return
			}
		}
	}
	text, typ := p.operandType(l)
	p.addMatch(text + opText(sym, true) + formatValue(typ, data))
}

// prefixLen returns the number of leading one bits of mask, if the rest are zeros.
func prefixLen(mask []byte) (int, bool) {
	n := 0
	for i, b := range mask {
		if b == 0xff {
			n += 8
			continue
		}
		ones := bits.LeadingZeros8(^b)
		if b<<ones != 0 || !allZero(mask[i+1:]) {
			return 0, false
		}
		return n + ones, true
	}
	return n, true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func allOnes(b []byte) bool {
	for _, c := range b {
		if c != 0xff {
			return false
		}
	}
	return true
}

// setRef is how a rule names a set: "@name", or the elements of an anonymous set, with
// key the operands of the lookup's key.
func (p *printer) setRef(set Set, key []operand) string {
	if !set.Anonymous() {
		return "@" + set.Name
	}
	types := make([]valueType, len(key))
	for i, k := range key {
		types[i] = p.typeOf(k)
	}
	els := slices.Clone(set.Elems)
	// nft lists the elements in order; the kernel's hash does not keep one. At equal
	// keys, the end of one range comes before the start of the next.
	slices.SortStableFunc(els, func(a, b Elem) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 || a.IntervalEnd == b.IntervalEnd {
			return c
		}
		if a.IntervalEnd {
			return -1
		}
		return 1
	})
	var elems []string
	for i, el := range els {
		var s string
		switch {
		case el.IntervalEnd:
			continue
		case set.Interval() && el.KeyEnd == nil && len(key) == 1:
			// A range: its start, and the start of what follows (flagged end), if any.
			start := new(big.Int).SetBytes(el.Key)
			last := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(8*len(el.Key))), big.NewInt(1))
			if i+1 < len(els) && els[i+1].IntervalEnd {
				last = new(big.Int).Sub(new(big.Int).SetBytes(els[i+1].Key), big.NewInt(1))
			}
			s = rangeText(start, last, len(el.Key), types[0])
		default:
			s = concatValue(el.Key, key, types)
			if el.KeyEnd != nil {
				s += "-" + concatValue(el.KeyEnd, key, types)
			}
		}
		switch {
		case el.Verdict != nil:
			s += " : " + verdictText(el.Verdict)
		case set.IsMap():
			s += " : " + dataValue(set, el.Data)
		}
		elems = append(elems, s)
	}
	if len(elems) == 0 {
		return "@" + set.Name
	}
	return "{ " + strings.Join(elems, ", ") + " }"
}

// concatValue prints a key b of a set whose fields are key, of types types; each field
// of a concatenation takes a multiple of 4 bytes.
func concatValue(b []byte, key []operand, types []valueType) string {
	var parts []string
	for i, op := range key {
		n := min(int(op.size()), len(b))
		parts = append(parts, formatValue(types[i], b[:n]))
		if len(key) > 1 {
			n = min(words(op.size())*4, len(b))
		}
		b = b[n:]
	}
	return strings.Join(parts, " . ")
}

// rangeText prints the range [start, last] of n-byte values of type typ: one value, a
// prefix of an address, or "first-last".
func rangeText(start, last *big.Int, n int, typ valueType) string {
	bytesOf := func(v *big.Int) []byte { return v.FillBytes(make([]byte, n)) }
	if start.Cmp(last) == 0 {
		return formatValue(typ, bytesOf(start))
	}
	if typ.prefix() {
		// A prefix: start has the host bits clear, last has them set.
		span := new(big.Int).Add(new(big.Int).Sub(last, start), big.NewInt(1))
		if span.BitLen() > 0 && new(big.Int).And(span, new(big.Int).Sub(span, big.NewInt(1))).Sign() == 0 {
			host := uint(span.BitLen() - 1)
			if new(big.Int).Lsh(new(big.Int).Rsh(start, host), host).Cmp(start) == 0 {
				a, _ := netip.AddrFromSlice(bytesOf(start))
				return netip.PrefixFrom(a, 8*n-int(host)).String()
			}
		}
	}
	return formatValue(typ, bytesOf(start)) + "-" + formatValue(typ, bytesOf(last))
}

// dataValue prints the data of an element of map s, by its data type (nft's type
// numbers, a concatenation's fields 6 bits each, the first the highest); hexadecimal
// when the type is not one the printer knows.
func dataValue(s Set, b []byte) string {
	var fields []dataType
	for t := s.DataType; t != 0; t >>= 6 {
		f, ok := dataTypes[t&0x3f]
		if !ok {
			return formatValue(typXInteger, b)
		}
		fields = append([]dataType{f}, fields...)
	}
	var parts []string
	for i, f := range fields {
		n := f.len
		if len(fields) > 1 && i < len(fields)-1 {
			n = uint32(words(n) * 4)
		}
		if uint32(len(b)) < f.len {
			return formatValue(typXInteger, b)
		}
		parts = append(parts, formatValue(f.typ, b[:f.len]))
		b = b[min(int(n), len(b)):]
	}
	if len(parts) == 0 {
		return formatValue(typXInteger, b)
	}
	return strings.Join(parts, " . ")
}

// dataType is one of nft's data types (enum datatypes): its length and how it prints.
type dataType struct {
	len uint32
	typ valueType
}

var dataTypes = map[uint32]dataType{
	2: {1, typNFProto}, 7: {4, typIPv4}, 8: {16, typIPv6}, 9: {6, typEther}, 10: {2, typEtherType},
	12: {1, typInetProto}, 13: {2, typInetService}, 19: {4, typMark}, 41: {16, typIfname},
}

// Header fields, as nft 1.0.6 names them (its protocol templates). Offsets and lengths
// are in bytes: the fields of bits are left out (they print raw).
type header struct {
	name   string
	base   int
	fields []headerField
}

type headerField struct {
	name     string
	off, len uint32
	typ      valueType
	protoKey bool // its value says which header follows (nft's protocol key)
}

var (
	hdrEther = header{"ether", baseLL, []headerField{
		{"daddr", 0, 6, typEther, false}, {"saddr", 6, 6, typEther, false}, {"type", 12, 2, typEtherType, true},
	}}
	hdrIP = header{"ip", baseNetwork, []headerField{
		{"length", 2, 2, typInteger, false}, {"id", 4, 2, typInteger, false}, {"ttl", 8, 1, typInteger, false},
		{"protocol", 9, 1, typInetProto, true}, {"checksum", 10, 2, typInteger, false},
		{"saddr", 12, 4, typIPv4, false}, {"daddr", 16, 4, typIPv4, false},
	}}
	hdrIP6 = header{"ip6", baseNetwork, []headerField{
		{"length", 4, 2, typInteger, false}, {"nexthdr", 6, 1, typInetProto, true}, {"hoplimit", 7, 1, typInteger, false},
		{"saddr", 8, 16, typIPv6, false}, {"daddr", 24, 16, typIPv6, false},
	}}
	// The fields of ARP for Ethernet and IPv4, as nft names them.
	hdrARP = header{"arp", baseNetwork, []headerField{
		{"htype", 0, 2, typInteger, false}, {"ptype", 2, 2, typEtherType, false}, {"hlen", 4, 1, typInteger, false},
		{"plen", 5, 1, typInteger, false}, {"operation", 6, 2, typARPOp, false},
		{"saddr ether", 8, 6, typEther, false}, {"saddr ip", 14, 4, typIPv4, false},
		{"daddr ether", 18, 6, typEther, false}, {"daddr ip", 24, 4, typIPv4, false},
	}}
	hdrTCP = header{"tcp", baseTransport, []headerField{
		{"sport", 0, 2, typInetService, false}, {"dport", 2, 2, typInetService, false},
		{"sequence", 4, 4, typInteger, false}, {"ackseq", 8, 4, typInteger, false},
		{"flags", 13, 1, typTCPFlags, false},
		{"window", 14, 2, typInteger, false}, {"checksum", 16, 2, typInteger, false}, {"urgptr", 18, 2, typInteger, false},
	}}
	hdrUDP = header{"udp", baseTransport, []headerField{
		{"sport", 0, 2, typInetService, false}, {"dport", 2, 2, typInetService, false},
		{"length", 4, 2, typInteger, false}, {"checksum", 6, 2, typInteger, false},
	}}
	// ICMP and ICMPv6 with the fields of echo messages (nft names them after a match on
	// the echo types), but not those it names only for other types.
	hdrICMP = header{"icmp", baseTransport, []headerField{
		{"type", 0, 1, typICMPType, false}, {"code", 1, 1, typICMPCode, false}, {"checksum", 2, 2, typInteger, false},
		{"id", 4, 2, typInteger, false}, {"sequence", 6, 2, typInteger, false},
	}}
	hdrICMPv6 = header{"icmpv6", baseTransport, []headerField{
		{"type", 0, 1, typICMPv6Type, false}, {"code", 1, 1, typICMPv6Code, false}, {"checksum", 2, 2, typInteger, false},
		{"id", 4, 2, typInteger, false}, {"sequence", 6, 2, typInteger, false},
	}}
	// The ports of any transport header.
	hdrTH = header{"th", baseTransport, []headerField{
		{"sport", 0, 2, typInetService, false}, {"dport", 2, 2, typInetService, false},
	}}

	networkHeaders   = map[uint16]*header{unix.NFPROTO_IPV4: &hdrIP, unix.NFPROTO_IPV6: &hdrIP6}
	etherHeaders     = map[uint16]*header{unix.ETH_P_IP: &hdrIP, unix.ETH_P_IPV6: &hdrIP6, unix.ETH_P_ARP: &hdrARP}
	transportHeaders = map[byte]*header{unix.IPPROTO_TCP: &hdrTCP, unix.IPPROTO_UDP: &hdrUDP,
		unix.IPPROTO_ICMP: &hdrICMP, unix.IPPROTO_ICMPV6: &hdrICMPv6}
)

// tcpOptions are the TCP options nft names (its tcpopt templates), by kind.
var tcpOptions = map[uint8]struct {
	name   string
	fields []headerField
}{
	2: {"maxseg", []headerField{{name: "length", off: 1, len: 1}, {name: "size", off: 2, len: 2}}},
	3: {"window", []headerField{{name: "length", off: 1, len: 1}, {name: "count", off: 2, len: 1}}},
	4: {"sack-perm", []headerField{{name: "length", off: 1, len: 1}}},
	5: {"sack", []headerField{{name: "length", off: 1, len: 1}, {name: "left", off: 2, len: 4}, {name: "right", off: 6, len: 4}}},
	8: {"timestamp", []headerField{{name: "length", off: 1, len: 1}, {name: "tsval", off: 2, len: 4}, {name: "tsecr", off: 6, len: 4}}},
}

// keyInfo is how a meta or ct key prints, its length and type.
type keyInfo struct {
	name string
	size uint32
	typ  valueType
	dir  int // ct keys: whether the direction prints
}

// The directions of a connection (enum ip_conntrack_dir).
const (
	ctDirOriginal = 0
	ctDirReply    = 1
)

// Directions of ct keys.
const (
	dirNone     = iota // not printed (also when the kernel does not list it)
	dirRequired        // a field of the tuple of one direction
	dirOptional        // counters of one direction or both
)

// metaKeys are the meta keys the printer knows. nft names some without "meta".
var metaKeys = map[expr.MetaKey]keyInfo{
	expr.MetaKeyLEN:        {"meta length", 4, typHostInteger, 0},
	expr.MetaKeyPROTOCOL:   {"meta protocol", 2, typEtherType, 0},
	expr.MetaKeyPRIORITY:   {"meta priority", 4, typTCHandle, 0},
	expr.MetaKeyMARK:       {"meta mark", 4, typMark, 0},
	expr.MetaKeyIIF:        {"iif", 4, typIfindex, 0},
	expr.MetaKeyOIF:        {"oif", 4, typIfindex, 0},
	expr.MetaKeyIIFNAME:    {"iifname", 16, typIfname, 0},
	expr.MetaKeyOIFNAME:    {"oifname", 16, typIfname, 0},
	expr.MetaKeyIIFTYPE:    {"meta iiftype", 2, typARPHRD, 0},
	expr.MetaKeyOIFTYPE:    {"meta oiftype", 2, typARPHRD, 0},
	expr.MetaKeySKUID:      {"meta skuid", 4, typHostInteger, 0},
	expr.MetaKeySKGID:      {"meta skgid", 4, typHostInteger, 0},
	expr.MetaKeyNFTRACE:    {"meta nftrace", 1, typInteger, 0},
	expr.MetaKeyRTCLASSID:  {"meta rtclassid", 4, typHostInteger, 0},
	expr.MetaKeyNFPROTO:    {"meta nfproto", 1, typNFProto, 0},
	expr.MetaKeyL4PROTO:    {"meta l4proto", 1, typInetProto, 0},
	expr.MetaKeyBRIIIFNAME: {"meta ibrname", 16, typIfname, 0},
	expr.MetaKeyBRIOIFNAME: {"meta obrname", 16, typIfname, 0},
	expr.MetaKeyPKTTYPE:    {"meta pkttype", 1, typPktType, 0},
	expr.MetaKeyCPU:        {"meta cpu", 4, typHostInteger, 0},
	expr.MetaKeyIIFGROUP:   {"iifgroup", 4, typDevGroup, 0},
	expr.MetaKeyOIFGROUP:   {"oifgroup", 4, typDevGroup, 0},
	expr.MetaKeyCGROUP:     {"meta cgroup", 4, typHostInteger, 0},
	expr.MetaKeyPRANDOM:    {"meta random", 4, typInteger, 0},
}

// ctKeys are the ct keys the printer knows: the addresses of NFT_CT_SRC and NFT_CT_DST
// take the type of the network protocol the rule matched.
var ctKeys = map[expr.CtKey]keyInfo{
	expr.CtKeySTATE:        {"state", 4, typCtState, dirNone},
	expr.CtKeyDIRECTION:    {"direction", 1, typCtDir, dirNone},
	expr.CtKeySTATUS:       {"status", 4, typCtStatus, dirNone},
	expr.CtKeyMARK:         {"mark", 4, typMark, dirNone},
	expr.CtKeyEXPIRATION:   {"expiration", 4, typTime, dirNone},
	expr.CtKeyHELPER:       {"helper", 16, typString, dirNone},
	unix.NFT_CT_L3PROTOCOL: {"l3proto", 1, typNFProto, dirNone},
	expr.CtKeySRC:          {"saddr", 16, typXInteger, dirRequired},
	expr.CtKeyDST:          {"daddr", 16, typXInteger, dirRequired},
	expr.CtKeyPROTOCOL:     {"protocol", 1, typInetProto, dirNone},
	expr.CtKeyPROTOSRC:     {"proto-src", 2, typInetService, dirRequired},
	expr.CtKeyPROTODST:     {"proto-dst", 2, typInetService, dirRequired},
	expr.CtKeyPKTS:         {"packets", 8, typHostInteger, dirOptional},
	expr.CtKeyBYTES:        {"bytes", 8, typHostInteger, dirOptional},
	expr.CtKeyAVGPKT:       {"avgpkt", 8, typHostInteger, dirOptional},
	expr.CtKeyZONE:         {"zone", 2, typHostInteger, dirOptional},
	unix.NFT_CT_SRC_IP:     {"ip saddr", 4, typIPv4, dirRequired},
	unix.NFT_CT_DST_IP:     {"ip daddr", 4, typIPv4, dirRequired},
	unix.NFT_CT_SRC_IP6:    {"ip6 saddr", 16, typIPv6, dirRequired},
	unix.NFT_CT_DST_IP6:    {"ip6 daddr", 16, typIPv6, dirRequired},
	unix.NFT_CT_ID:         {"id", 4, typInteger, dirNone},
}

// valueType is how nft prints a value of a field.
type valueType int

const (
	typInteger     valueType = iota // big-endian, decimal
	typHostInteger                  // host-endian, decimal
	typXInteger                     // big-endian, hexadecimal: raw payloads
	typIPv4
	typIPv6
	typEther
	typIfname
	typIfindex // an interface index, which nft prints by name where it exists
	typString
	typInetService
	typInetProto
	typNFProto
	typEtherType
	typICMPType
	typICMPCode
	typICMPv6Type
	typICMPv6Code
	typFibAddrType
	typCtState
	typCtStatus
	typCtDir
	typTCPFlags
	typMark
	typTCHandle
	typTime // milliseconds, host-endian
	typPktType
	typDevGroup
	typARPHRD
	typARPOp
)

func (t valueType) bitmask() bool { return t == typCtState || t == typCtStatus || t == typTCPFlags }
func (t valueType) prefix() bool  { return t == typIPv4 || t == typIPv6 }

// Names of values, as nft 1.0.6 prints them (inet_proto: as /etc/protocols names them).
var (
	inetProtoNames = map[uint64]string{1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 50: "esp",
		51: "ah", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}
	nfprotoNames   = map[uint64]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}
	etherTypeNames = map[uint64]string{unix.ETH_P_IP: "ip", unix.ETH_P_ARP: "arp", unix.ETH_P_IPV6: "ip6",
		unix.ETH_P_8021Q: "8021q", unix.ETH_P_8021AD: "8021ad"}
	icmpTypeNames = map[uint64]string{0: "echo-reply", 3: "destination-unreachable", 4: "source-quench",
		5: "redirect", 8: "echo-request", 9: "router-advertisement", 10: "router-solicitation",
		11: "time-exceeded", 12: "parameter-problem", 13: "timestamp-request", 14: "timestamp-reply",
		15: "info-request", 16: "info-reply", 17: "address-mask-request", 18: "address-mask-reply"}
	icmpCodeNames = map[uint64]string{0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable",
		3: "port-unreachable", 4: "frag-needed", 9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}
	icmpv6TypeNames = map[uint64]string{1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
		4: "parameter-problem", 128: "echo-request", 129: "echo-reply", 130: "mld-listener-query",
		131: "mld-listener-report", 132: "mld-listener-done", 133: "nd-router-solicit", 134: "nd-router-advert",
		135: "nd-neighbor-solicit", 136: "nd-neighbor-advert", 137: "nd-redirect", 138: "router-renumbering",
		141: "ind-neighbor-solicit", 142: "ind-neighbor-advert", 143: "mld2-listener-report"}
	icmpv6CodeNames = map[uint64]string{0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable",
		4: "port-unreachable", 5: "policy-fail", 6: "reject-route"}
	icmpxCodeNames = map[uint64]string{unix.NFT_REJECT_ICMPX_NO_ROUTE: "no-route",
		unix.NFT_REJECT_ICMPX_PORT_UNREACH: "port-unreachable", unix.NFT_REJECT_ICMPX_HOST_UNREACH: "host-unreachable",
		unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED: "admin-prohibited"}
	fibAddrTypeNames = map[uint64]string{unix.RTN_UNSPEC: "unspec", unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local",
		unix.RTN_BROADCAST: "broadcast", unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast",
		unix.RTN_BLACKHOLE: "blackhole", unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit"}
	ctDirNames   = map[uint64]string{ctDirOriginal: "original", ctDirReply: "reply"}
	pktTypeNames = map[uint64]string{unix.PACKET_HOST: "host", unix.PACKET_BROADCAST: "broadcast",
		unix.PACKET_MULTICAST: "multicast", unix.PACKET_OTHERHOST: "other"}
	arphrdNames = map[uint64]string{unix.ARPHRD_ETHER: "ether", unix.ARPHRD_PPP: "ppp", unix.ARPHRD_TUNNEL: "ipip",
		unix.ARPHRD_TUNNEL6: "ipip6", unix.ARPHRD_LOOPBACK: "loopback", unix.ARPHRD_SIT: "sit", unix.ARPHRD_IPGRE: "ipgre"}
	arpOpNames = map[uint64]string{1: "request", 2: "reply", 3: "rrequest", 4: "rreply", 8: "inrequest",
		9: "inreply", 10: "nak"}
	// Bits, lowest first.
	ctStateBits  = []string{"invalid", "established", "related", "new", "", "", "untracked"}
	ctStatusBits = []string{"expected", "seen-reply", "assured", "confirmed", "snat", "dnat", "", "", "", "dying"}
	tcpFlagBits  = []string{"fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr"}
)

// formatValue prints b, a value of type t, as nft does.
func formatValue(t valueType, b []byte) string {
	named := func(names map[uint64]string, v uint64, fallback string) string {
		if n, ok := names[v]; ok {
			return n
		}
		return fallback
	}
	host := func() (uint64, bool) {
		switch len(b) {
		case 1:
			return uint64(b[0]), true
		case 2:
			return uint64(binaryutil.NativeEndian.Uint16(b)), true
		case 4:
			return uint64(binaryutil.NativeEndian.Uint32(b)), true
		case 8:
			return binaryutil.NativeEndian.Uint64(b), true
		}
		return 0, false
	}
	switch t {
	case typIPv4, typIPv6:
		if a, ok := netip.AddrFromSlice(b); ok && (t == typIPv4) == (len(b) == 4) {
			return a.String()
		}
	case typEther:
		if len(b) == 6 {
			return net.HardwareAddr(b).String()
		}
	case typIfname:
		return formatIfname(b)
	case typString:
		return quote(string(bytes.TrimRight(b, "\x00")))
	case typInetService:
		if len(b) == 2 {
			return strconv.Itoa(int(binary.BigEndian.Uint16(b)))
		}
	case typInetProto, typNFProto, typICMPType, typICMPCode, typICMPv6Type, typICMPv6Code, typCtDir:
		names := map[valueType]map[uint64]string{typInetProto: inetProtoNames, typNFProto: nfprotoNames,
			typICMPType: icmpTypeNames, typICMPCode: icmpCodeNames, typICMPv6Type: icmpv6TypeNames,
			typICMPv6Code: icmpv6CodeNames, typCtDir: ctDirNames}[t]
		if len(b) == 1 {
			return named(names, uint64(b[0]), strconv.Itoa(int(b[0])))
		}
	case typEtherType:
		if len(b) == 2 {
			v := binary.BigEndian.Uint16(b)
			return named(etherTypeNames, uint64(v), fmt.Sprintf("0x%04x", v))
		}
	case typARPOp:
		if len(b) == 2 {
			v := uint64(binary.BigEndian.Uint16(b))
			return named(arpOpNames, v, strconv.FormatUint(v, 10))
		}
	case typFibAddrType, typPktType, typARPHRD:
		names := map[valueType]map[uint64]string{typFibAddrType: fibAddrTypeNames, typPktType: pktTypeNames,
			typARPHRD: arphrdNames}[t]
		if v, ok := host(); ok {
			return named(names, v, strconv.FormatUint(v, 10))
		}
	case typCtState, typCtStatus, typTCPFlags:
		names := map[valueType][]string{typCtState: ctStateBits, typCtStatus: ctStatusBits, typTCPFlags: tcpFlagBits}[t]
		if v, ok := host(); ok && (len(b) == 4 || t == typTCPFlags && len(b) == 1) {
			return formatBits(names, uint32(v))
		}
	case typMark:
		if len(b) == 4 {
			return fmt.Sprintf("0x%08x", binaryutil.NativeEndian.Uint32(b))
		}
	case typTCHandle:
		if len(b) == 4 {
			switch v := binaryutil.NativeEndian.Uint32(b); v {
			case 0xffffffff: // TC_H_ROOT
				return "root"
			case 0: // TC_H_UNSPEC
				return "none"
			default:
				return fmt.Sprintf("%x:%x", v>>16, v&0xffff)
			}
		}
	case typTime:
		if len(b) == 4 {
			return Duration(time.Duration(binaryutil.NativeEndian.Uint32(b)) * time.Millisecond)
		}
	case typDevGroup:
		if len(b) == 4 {
			if v := binaryutil.NativeEndian.Uint32(b); v != 0 {
				return strconv.FormatUint(uint64(v), 10)
			}
			return quote("default") // iproute2's name of group 0
		}
	case typHostInteger, typIfindex:
		if v, ok := host(); ok {
			return strconv.FormatUint(v, 10)
		}
	case typInteger:
		return new(big.Int).SetBytes(b).String()
	case typXInteger:
		return "0x" + new(big.Int).SetBytes(b).Text(16)
	}
	return fmt.Sprintf("<unknown value %x>", b)
}

// formatBits prints the set bits of v by name, comma-separated, lowest first.
func formatBits(names []string, v uint32) string {
	var out []string
	for i := range 32 {
		if v&(1<<i) == 0 {
			continue
		}
		if i < len(names) && names[i] != "" {
			out = append(out, names[i])
		} else {
			out = append(out, fmt.Sprintf("0x%x", uint32(1)<<i))
		}
	}
	if len(out) == 0 {
		return "0x0"
	}
	return strings.Join(out, ",")
}

// formatIfname prints an interface name: quoted, a name compared without its
// terminating zero byte as a wildcard ("pn-*").
func formatIfname(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		if !allZero(b[i:]) {
			return fmt.Sprintf("<unknown interface name %x>", b)
		}
		return quote(string(b[:i]))
	}
	return quote(string(b) + "*")
}

func quote(s string) string { return `"` + s + `"` }

// Duration prints d as nft does: "3h", "1h30m", "90s" as "1m30s", "250ms".
func Duration(d time.Duration) string {
	var out strings.Builder
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.unit; n > 0 {
			fmt.Fprintf(&out, "%d%s", n, u.name)
			d -= n * u.unit
		}
	}
	if d > 0 || out.Len() == 0 {
		fmt.Fprintf(&out, "%dms", d.Milliseconds())
	}
	return out.String()
}
