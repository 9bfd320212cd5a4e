package nft

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"math/bits"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Printing a rule: the nft syntax of a rule is printed from its expressions, the way nft
// 1.0.6 (Debian 12) lists them, so that a rule has one description, the expressions, and
// its text cannot say something else. Render prints the desired rules with it, InSync's
// differences and the read-back test print the kernel's.
//
// The printer follows nft's own listing code (netlink_delinearize.c), reduced to the
// expressions podnet writes, in two steps:
//
//   - The expressions run on a model of the registers: a load (payload, meta, ct, numgen,
//     fib, bitwise, the data of a map lookup) puts an operand in the 4-byte words it
//     fills; a consumer (cmp, lookup, dynset, nat) takes the operands from its source
//     register on, as many as the length it reads (a set's key or data length: this is
//     why the printer knows the sets of the table) and makes a statement. Two or more
//     operands make a concatenation, "a . b".
//   - Each statement is printed in order, with nft's protocol context: a match on meta
//     nfproto, ether type or meta l4proto says which header follows, so that a payload
//     load prints as the header field it loads ("ip saddr", "tcp dport", "icmpv6
//     type") or, without a field of that offset and length, raw ("@th,64,128"). Such a
//     match is a dependency: nft leaves it out when a later header field of the next
//     layer implies it (meta nfproto ipv4 before ip saddr), up to the next statement
//     that is not a match, as nft does.
//
// The header fields known are the ones of the headers podnet uses; a field missing here
// would print raw where nft names it. An expression or a sequence that the printer does
// not know prints as "<unknown ...>", which no golden file holds: never a guess.

// printRule returns the nft syntax of exprs, a rule of table t, as nft 1.0.6 lists it.
func (t tableDef) printRule(exprs []expr.Any) string {
	p := &printer{table: t}
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
	table tableDef // its sets give the key and data lengths of lookups
	// regs holds the operand that starts at each 4-byte word of the registers.
	regs  [16]operand
	stmts []*printStmt
	// deps are the dependencies that a header field of base i may make redundant.
	deps [baseInner + 1]*printStmt
	// network and transport are the headers the matches so far imply, nil if unknown.
	network, transport *header
}

type printStmt struct {
	text   string
	killed bool // a dependency that a later header field implies
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
	metaOp   struct{ key expr.MetaKey }
	ctOp     struct{ ct *expr.Ct }
	numgenOp struct{ ng *expr.Numgen }
	fibOp    struct{ fib *expr.Fib }
	// maskOp is a bitwise and of src (the xor is zero).
	maskOp struct {
		src  operand
		mask []byte
	}
	// mapOp is the data of a map lookup.
	mapOp struct {
		key []operand
		set *setDef
	}
	// badOp is an operand the printer cannot make out.
	badOp struct {
		why string
		n   uint32
	}
)

func (o payloadOp) size() uint32 { return o.len }
func (o metaOp) size() uint32    { return metaKeys[o.key].size }
func (o ctOp) size() uint32      { return ctKeys[o.ct.Key].size }
func (o numgenOp) size() uint32  { return 4 }
func (o fibOp) size() uint32 {
	if o.fib.ResultOIFNAME {
		return 16
	}
	return 4
}
func (o maskOp) size() uint32 { return o.src.size() }
func (o mapOp) size() uint32  { return o.set.dataType.Bytes }
func (o badOp) size() uint32  { return o.n }

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

// operands returns the operands that fill n bytes from register r on: one, or the fields
// of a concatenation.
func (p *printer) operands(r uint32, n uint32) []operand {
	w, ok := word(r)
	if !ok {
		return []operand{badOp{fmt.Sprintf("register %d", r), n}}
	}
	var out []operand
	for end := w + words(n); w < end; {
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

func (p *printer) unknown(format string, args ...any) {
	p.addMatch("<unknown " + fmt.Sprintf(format, args...) + ">")
	p.resetDeps()
}

// resetDeps forgets the dependencies: nft only leaves out a dependency that a later
// match implies, not one across another statement (a counter or a set update before
// the field would count or update packets of any protocol).
func (p *printer) resetDeps() { p.deps = [len(p.deps)]*printStmt{} }

func (p *printer) expr(e expr.Any) {
	switch e := e.(type) {
	case *expr.Payload:
		if e.OperationType != expr.PayloadLoad || e.SourceRegister != 0 || e.CsumType != 0 {
			p.unknown("payload write")
			return
		}
		p.load(e.DestRegister, payloadOp{e.Base, e.Offset, e.Len})
	case *expr.Meta:
		if e.SourceRegister {
			p.unknown("meta set")
			return
		}
		if _, ok := metaKeys[e.Key]; !ok {
			p.unknown("meta key %d", e.Key)
			return
		}
		p.load(e.Register, metaOp{e.Key})
	case *expr.Ct:
		if e.SourceRegister {
			p.unknown("ct set")
			return
		}
		if _, ok := ctKeys[e.Key]; !ok {
			p.unknown("ct key %d", e.Key)
			return
		}
		p.load(e.Register, ctOp{e})
	case *expr.Numgen:
		p.load(e.Register, numgenOp{e})
	case *expr.Fib:
		p.load(e.Register, fibOp{e})
	case *expr.Bitwise:
		p.bitwise(e)
	case *expr.Cmp:
		w, ok := word(e.Register)
		if !ok || p.regs[w] == nil {
			p.unknown("cmp of register %d, which holds no loaded field", e.Register)
			return
		}
		p.match(p.regs[w], e.Op, e.Data)
	case *expr.Lookup:
		p.lookup(e)
	case *expr.Dynset:
		p.dynset(e)
	case *expr.NAT:
		p.nat(e)
	case *expr.Masq:
		if *e != (expr.Masq{}) {
			p.unknown("masquerade with flags or ports")
			return
		}
		p.addStmt("masquerade")
	case *expr.Reject:
		p.reject(e)
	case *expr.Counter:
		p.addStmt(fmt.Sprintf("counter packets %d bytes %d", e.Packets, e.Bytes))
	case *expr.Verdict:
		p.addStmt(verdictText(e))
	case *expr.Immediate:
		if e.Register == unix.NFT_REG_VERDICT {
			p.unknown("immediate verdict data")
			return
		}
		p.load(e.Register, badOp{"immediate value", uint32(len(e.Data))})
	default:
		p.unknown("expression %T", e)
	}
}

// addStmt adds a statement that is not a match: a later field implies none of the
// dependencies before it.
func (p *printer) addStmt(text string) {
	p.addMatch(text)
	p.resetDeps()
}

func (p *printer) bitwise(e *expr.Bitwise) {
	src := p.operands(e.SourceRegister, e.Len)
	switch {
	case len(src) != 1 || src[0].size() != e.Len:
		p.unknown("bitwise of %d bytes from register %d", e.Len, e.SourceRegister)
	case len(e.Mask) != int(e.Len) || !allZero(e.Xor):
		p.unknown("bitwise other than a mask")
	default:
		p.load(e.DestRegister, maskOp{src[0], e.Mask})
	}
}

func (p *printer) lookup(e *expr.Lookup) {
	set := p.table.set(e.SetName)
	switch {
	case set == nil:
		p.unknown("lookup in set %q, not of table %s", e.SetName, p.table.name())
	case !e.IsDestRegSet:
		key := p.concat(p.operands(e.SourceRegister, set.keyType.Bytes))
		op := " "
		if e.Invert {
			op = " != "
		}
		p.addMatch(key + op + "@" + set.name)
	case e.Invert || !set.isMap():
		p.unknown("inverted map lookup or map lookup in set %s", set.name)
	case e.DestRegister == unix.NFT_REG_VERDICT:
		if !set.isVerdictMap() {
			p.unknown("verdict from map %s", set.name)
			return
		}
		p.addStmt(p.concat(p.operands(e.SourceRegister, set.keyType.Bytes)) + " vmap @" + set.name)
	default:
		p.load(e.DestRegister, mapOp{p.operands(e.SourceRegister, set.keyType.Bytes), set})
	}
}

func (p *printer) dynset(e *expr.Dynset) {
	set := p.table.set(e.SetName)
	ops := map[uint32]string{unix.NFT_DYNSET_OP_ADD: "add", unix.NFT_DYNSET_OP_UPDATE: "update", 2: "delete"} // NFT_DYNSET_OP_DELETE
	op, ok := ops[e.Operation]
	switch {
	case set == nil:
		p.unknown("set update of set %q, not of table %s", e.SetName, p.table.name())
	case !ok || e.Timeout != 0 || e.Invert || len(e.Exprs) > 0 || (e.SrcRegData != 0) != set.isMap() || set.isVerdictMap():
		p.unknown("set update of %s", set.name)
	default:
		elem := p.concat(p.operands(e.SrcRegKey, set.keyType.Bytes))
		if set.isMap() {
			elem += " : " + p.concat(p.operands(e.SrcRegData, set.dataType.Bytes))
		}
		p.addStmt(op + " @" + set.name + " { " + elem + " }")
	}
}

// nat prints the form of NAT podnet uses: to the address and port a map lookup gives.
func (p *printer) nat(e *expr.NAT) {
	kinds := map[expr.NATType]string{expr.NATTypeDestNAT: "dnat", expr.NATTypeSourceNAT: "snat"}
	fams := map[uint32]ipFamily{unix.NFPROTO_IPV4: ip4, unix.NFPROTO_IPV6: ip6}
	kind, ok1 := kinds[e.Type]
	f, ok2 := fams[e.Family]
	addr, ok3 := word(e.RegAddrMin)
	proto, ok4 := word(e.RegProtoMin)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		p.unknown("nat")
		return
	}
	m, ok := p.regs[addr].(mapOp)
	if !ok || e.RegAddrMax != e.RegAddrMin || e.RegProtoMax != e.RegProtoMin || !e.Specified ||
		e.Random || e.FullyRandom || e.Persistent || e.Prefix ||
		proto != addr+words(f.addrLen) || m.size() != f.addrLen+4 {
		p.unknown("nat other than to the address and port of a map")
		return
	}
	p.addStmt(kind + " " + f.name + " to " + p.operand(m))
}

func (p *printer) reject(e *expr.Reject) {
	switch e.Type {
	case unix.NFT_REJECT_TCP_RST:
		// nft leaves the network protocol match before it out (in family inet and
		// bridge, stmt_reject_postprocess), not the transport protocol match.
		p.kill(baseNetwork)
		p.addStmt("reject with tcp reset")
	case unix.NFT_REJECT_ICMPX_UNREACH:
		codes := map[uint8]string{
			unix.NFT_REJECT_ICMPX_NO_ROUTE: "no-route", unix.NFT_REJECT_ICMPX_HOST_UNREACH: "host-unreachable",
			unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED: "admin-prohibited",
		}
		switch name, ok := codes[e.Code]; {
		case e.Code == unix.NFT_REJECT_ICMPX_PORT_UNREACH:
			p.addStmt("reject")
		case ok:
			p.addStmt("reject with icmpx " + name)
		default:
			p.unknown("reject code %d", e.Code)
		}
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
	}
	return fmt.Sprintf("<unknown verdict %d>", v.Kind)
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

// operandType prints o and returns the type of its values.
func (p *printer) operandType(o operand) (string, valueType) {
	switch o := o.(type) {
	case payloadOp:
		if f, h := p.field(o); f != nil {
			p.kill(h.base)
			return h.name + " " + f.name, f.typ
		}
		return o.raw(), typXInteger
	case metaOp:
		k := metaKeys[o.key]
		return k.name, k.typ
	case ctOp:
		k := ctKeys[o.ct.Key]
		if !ctDirKeys[o.ct.Key] {
			return "ct " + k.name, k.typ
		}
		dirs := map[uint32]string{0: "original", 1: "reply"} // IP_CT_DIR_ORIGINAL, IP_CT_DIR_REPLY
		dir, ok := dirs[o.ct.Direction]
		if !ok {
			return fmt.Sprintf("<unknown ct direction %d>", o.ct.Direction), typInteger
		}
		return "ct " + dir + " " + k.name, k.typ
	case numgenOp:
		types := map[uint32]string{unix.NFT_NG_INCREMENTAL: "inc", unix.NFT_NG_RANDOM: "random"}
		typ, ok := types[o.ng.Type]
		if !ok {
			return fmt.Sprintf("<unknown numgen type %d>", o.ng.Type), typInteger
		}
		s := "numgen " + typ + " mod " + strconv.FormatUint(uint64(o.ng.Modulus), 10)
		if o.ng.Offset != 0 {
			s += " offset " + strconv.FormatUint(uint64(o.ng.Offset), 10)
		}
		return s, typHostInteger
	case fibOp:
		return o.text()
	case maskOp:
		s, typ := p.operandType(o.src)
		return s + " & " + formatValue(typ, o.mask), typ
	case mapOp:
		return p.concat(o.key) + " map @" + o.set.name, typInteger
	case badOp:
		return "<unknown operand: " + o.why + ">", typInteger
	}
	return fmt.Sprintf("<unknown operand %T>", o), typInteger
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

func (o fibOp) text() (string, valueType) {
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{o.fib.FlagSADDR, "saddr"}, {o.fib.FlagDADDR, "daddr"}, {o.fib.FlagMARK, "mark"}, {o.fib.FlagIIF, "iif"}, {o.fib.FlagOIF, "oif"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	s := "fib " + strings.Join(flags, " . ")
	switch {
	case o.fib.FlagPRESENT || len(flags) == 0:
		return "<unknown fib>", typInteger
	case o.fib.ResultADDRTYPE:
		return s + " type", typFibAddrType
	case o.fib.ResultOIFNAME:
		return s + " oifname", typIfname
	}
	return "<unknown fib result>", typInteger
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
		if p.table.family == nftables.TableFamilyBridge {
			return &hdrEther
		}
	case expr.PayloadBaseNetworkHeader:
		return p.network
	case expr.PayloadBaseTransportHeader:
		return p.transport
	}
	return nil
}

// kill drops the dependency that a header field of base b implies.
func (p *printer) kill(b int) {
	if d := p.deps[b]; d != nil {
		d.killed = true
		p.deps[b] = nil
	}
}

// match prints "lhs op data".
func (p *printer) match(lhs operand, op expr.CmpOp, data []byte) {
	ops := map[expr.CmpOp]string{
		expr.CmpOpEq: "==", expr.CmpOpNeq: "!=", expr.CmpOpLt: "<", expr.CmpOpLte: "<=", expr.CmpOpGt: ">", expr.CmpOpGte: ">=",
	}
	sym, ok := ops[op]
	if !ok {
		p.unknown("cmp op %d", op)
		return
	}
	switch l := lhs.(type) {
	case payloadOp:
		if op == expr.CmpOpEq || op == expr.CmpOpNeq {
			p.payloadMatch(l, sym, data)
			return
		}
	case maskOp:
		p.maskMatch(l, op, sym, data)
		return
	case metaOp:
		if l.key == expr.MetaKeyIIFNAME || l.key == expr.MetaKeyOIFNAME {
			if len(data) > 16 {
				p.unknown("cmp of %d bytes with an interface name", len(data))
				return
			}
			p.addMatch(p.operand(l) + opText(sym, false) + formatIfname(data))
			return
		}
	}
	if lhs.size() != uint32(len(data)) {
		p.unknown("cmp of %d bytes with a field of %d", len(data), lhs.size())
		return
	}
	text, typ := p.operandType(lhs)
	s := p.addMatch(text + opText(sym, typ.bitmask()) + formatValue(typ, data))
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

// protocolMatch records what "meta nfproto X" or "meta l4proto X" implies (nft's
// ct_meta_common_postprocess).
func (p *printer) protocolMatch(s *printStmt, m metaOp, data []byte) {
	switch m.key {
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
			// The ether type, the one protocol key of a header here.
			p.network = etherHeaders[binary.BigEndian.Uint16(value)]
			p.deps[h.base+1] = s
		}
		data, l.off, l.len = data[n:], l.off+n, l.len-n
	}
}

// maskMatch prints "src & mask op data": a flag match ("ct state established,related")
// for a bitmask compared with zero, a prefix ("ip6 saddr fe80::/10") for an address
// field whose mask is a prefix, else with the mask.
func (p *printer) maskMatch(l maskOp, op expr.CmpOp, sym string, data []byte) {
	if uint32(len(data)) != l.size() {
		p.unknown("cmp of %d bytes with a field of %d", len(data), l.size())
		return
	}
	if c, ok := l.src.(ctOp); ok && ctKeys[c.ct.Key].typ.bitmask() {
		if op != expr.CmpOpNeq || !allZero(data) {
			p.unknown("ct %s match other than of flags", ctKeys[c.ct.Key].name)
			return
		}
		text, typ := p.operandType(l.src)
		p.addMatch(text + " " + formatValue(typ, l.mask))
		return
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
		{"protocol", 9, 1, typInetProto, false}, {"checksum", 10, 2, typInteger, false},
		{"saddr", 12, 4, typIPv4, false}, {"daddr", 16, 4, typIPv4, false},
	}}
	hdrIP6 = header{"ip6", baseNetwork, []headerField{
		{"length", 4, 2, typInteger, false}, {"nexthdr", 6, 1, typInetProto, false}, {"hoplimit", 7, 1, typInteger, false},
		{"saddr", 8, 16, typIPv6, false}, {"daddr", 24, 16, typIPv6, false},
	}}
	// The addresses of ARP for Ethernet and IPv4, as nft names them.
	hdrARP = header{"arp", baseNetwork, []headerField{
		{"ptype", 2, 2, typEtherType, false}, {"hlen", 4, 1, typInteger, false}, {"plen", 5, 1, typInteger, false},
		{"saddr ether", 8, 6, typEther, false}, {"saddr ip", 14, 4, typIPv4, false},
		{"daddr ether", 18, 6, typEther, false}, {"daddr ip", 24, 4, typIPv4, false},
	}}
	hdrTCP = header{"tcp", baseTransport, []headerField{
		{"sport", 0, 2, typInetService, false}, {"dport", 2, 2, typInetService, false},
		{"sequence", 4, 4, typInteger, false}, {"ackseq", 8, 4, typInteger, false},
		{"window", 14, 2, typInteger, false}, {"checksum", 16, 2, typInteger, false}, {"urgptr", 18, 2, typInteger, false},
	}}
	hdrUDP = header{"udp", baseTransport, []headerField{
		{"sport", 0, 2, typInetService, false}, {"dport", 2, 2, typInetService, false},
		{"length", 4, 2, typInteger, false}, {"checksum", 6, 2, typInteger, false},
	}}
	// ICMPv6 without the fields nft names only for some types.
	hdrICMPv6 = header{"icmpv6", baseTransport, []headerField{
		{"type", 0, 1, typICMPv6Type, false}, {"checksum", 2, 2, typInteger, false},
	}}
	// The ports of any transport header.
	hdrTH = header{"th", baseTransport, []headerField{
		{"sport", 0, 2, typInetService, false}, {"dport", 2, 2, typInetService, false},
	}}

	networkHeaders   = map[uint16]*header{unix.NFPROTO_IPV4: &hdrIP, unix.NFPROTO_IPV6: &hdrIP6}
	etherHeaders     = map[uint16]*header{unix.ETH_P_IP: &hdrIP, unix.ETH_P_IPV6: &hdrIP6, unix.ETH_P_ARP: &hdrARP}
	transportHeaders = map[byte]*header{unix.IPPROTO_TCP: &hdrTCP, unix.IPPROTO_UDP: &hdrUDP, unix.IPPROTO_ICMPV6: &hdrICMPv6}
)

// metaKeys are the meta keys the printer knows: as nft prints them, their length and type.
var metaKeys = map[expr.MetaKey]struct {
	name string
	size uint32
	typ  valueType
}{
	expr.MetaKeyNFPROTO:  {"meta nfproto", 1, typNFProto},
	expr.MetaKeyL4PROTO:  {"meta l4proto", 1, typInetProto},
	expr.MetaKeyPROTOCOL: {"meta protocol", 2, typEtherType},
	expr.MetaKeyIIFNAME:  {"iifname", 16, typIfname},
	expr.MetaKeyOIFNAME:  {"oifname", 16, typIfname},
	expr.MetaKeyMARK:     {"meta mark", 4, typMark},
	expr.MetaKeyLEN:      {"meta length", 4, typHostInteger},
}

// ctKeys are the ct keys the printer knows; ctDirKeys says which take a direction.
var ctKeys = map[expr.CtKey]struct {
	name string
	size uint32
	typ  valueType
}{
	expr.CtKeySTATE:     {"state", 4, typCtState},
	expr.CtKeySTATUS:    {"status", 4, typCtStatus},
	expr.CtKeyMARK:      {"mark", 4, typMark},
	expr.CtKeyPROTOSRC:  {"proto-src", 2, typInetService},
	expr.CtKeyPROTODST:  {"proto-dst", 2, typInetService},
	unix.NFT_CT_SRC_IP:  {"ip saddr", 4, typIPv4},
	unix.NFT_CT_DST_IP:  {"ip daddr", 4, typIPv4},
	unix.NFT_CT_SRC_IP6: {"ip6 saddr", 16, typIPv6},
	unix.NFT_CT_DST_IP6: {"ip6 daddr", 16, typIPv6},
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
	typInetService
	typInetProto
	typNFProto
	typEtherType
	typICMPv6Type
	typFibAddrType
	typCtState
	typCtStatus
	typMark
)

func (t valueType) bitmask() bool { return t == typCtState || t == typCtStatus }
func (t valueType) prefix() bool  { return t == typIPv4 || t == typIPv6 }

// Names of values, as nft 1.0.6 prints them (inet_proto: as /etc/protocols names them).
var (
	inetProtoNames = map[uint64]string{1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 50: "esp",
		51: "ah", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}
	nfprotoNames   = map[uint64]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}
	etherTypeNames = map[uint64]string{unix.ETH_P_IP: "ip", unix.ETH_P_ARP: "arp", unix.ETH_P_IPV6: "ip6",
		unix.ETH_P_8021Q: "8021q", unix.ETH_P_8021AD: "8021ad"}
	icmpv6TypeNames = map[uint64]string{1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
		4: "parameter-problem", 128: "echo-request", 129: "echo-reply", 130: "mld-listener-query",
		131: "mld-listener-report", 132: "mld-listener-done", 133: "nd-router-solicit", 134: "nd-router-advert",
		135: "nd-neighbor-solicit", 136: "nd-neighbor-advert", 137: "nd-redirect", 138: "router-renumbering",
		141: "ind-neighbor-solicit", 142: "ind-neighbor-advert", 143: "mld2-listener-report"}
	fibAddrTypeNames = map[uint64]string{unix.RTN_UNSPEC: "unspec", unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local",
		unix.RTN_BROADCAST: "broadcast", unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast",
		unix.RTN_BLACKHOLE: "blackhole", unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit"}
	// Bits, lowest first.
	ctStateBits  = []string{"invalid", "established", "related", "new", "", "", "untracked"}
	ctStatusBits = []string{"expected", "seen-reply", "assured", "confirmed", "snat", "dnat", "", "", "", "dying"}
)

// formatValue prints b, a value of type t, as nft does.
func formatValue(t valueType, b []byte) string {
	named := func(names map[uint64]string, v uint64, fallback string) string {
		if n, ok := names[v]; ok {
			return n
		}
		return fallback
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
	case typInetService:
		if len(b) == 2 {
			return strconv.Itoa(int(binary.BigEndian.Uint16(b)))
		}
	case typInetProto, typNFProto:
		if len(b) == 1 {
			names := inetProtoNames
			if t == typNFProto {
				names = nfprotoNames
			}
			return named(names, uint64(b[0]), strconv.Itoa(int(b[0])))
		}
	case typEtherType:
		if len(b) == 2 {
			v := binary.BigEndian.Uint16(b)
			return named(etherTypeNames, uint64(v), fmt.Sprintf("0x%04x", v))
		}
	case typICMPv6Type:
		if len(b) == 1 {
			return named(icmpv6TypeNames, uint64(b[0]), strconv.Itoa(int(b[0])))
		}
	case typFibAddrType:
		if len(b) == 4 {
			v := binaryutil.NativeEndian.Uint32(b)
			return named(fibAddrTypeNames, uint64(v), strconv.Itoa(int(v)))
		}
	case typCtState, typCtStatus:
		if len(b) == 4 {
			names := ctStateBits
			if t == typCtStatus {
				names = ctStatusBits
			}
			return formatBits(names, binaryutil.NativeEndian.Uint32(b))
		}
	case typMark:
		if len(b) == 4 {
			return fmt.Sprintf("0x%08x", binaryutil.NativeEndian.Uint32(b))
		}
	case typHostInteger:
		if len(b) == 4 {
			return strconv.FormatUint(uint64(binaryutil.NativeEndian.Uint32(b)), 10)
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
