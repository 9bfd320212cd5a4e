package trace

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

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A generic printer of nftables rules, for the rules of any table a traced packet hits:
// podnet's own tables and other tools'. It prints nft syntax from the expressions, the
// way nft lists rules, for the expressions and header fields that firewalls commonly use
// (payload of ether, ip, ip6, tcp, udp, icmp, icmpv6; meta; ct; sets and maps; nat,
// masquerade, reject, counter, log, limit, numgen, fib...). It is compact rather than
// exact: a header field it has no name for prints raw ("@th,64,16"), an expression it does
// not know prints as its kernel name in brackets ("[tproxy]"), and where nft would
// resolve a number to a name (an interface index, a user id) it prints the number. It is
// not internal/nft's printer, which knows podnet's tables only and prints them exactly as
// nft 1.0.6 does.

// SetInfo is what printing a rule needs of a set or map of its table: the lengths of its
// key and data, and, for an anonymous set ("{ 80, 443 }"), its elements.
type SetInfo struct {
	Name       string    `json:"name"`
	KeyLen     uint32    `json:"keyLen"`
	DataLen    uint32    `json:"dataLen,omitempty"`
	Map        bool      `json:"map,omitempty"`
	VerdictMap bool      `json:"verdictMap,omitempty"`
	Interval   bool      `json:"interval,omitempty"`
	Anonymous  bool      `json:"anonymous,omitempty"`
	Elems      []SetElem `json:"elems,omitempty"`
}

// SetElem is one element of an anonymous set as the kernel lists it.
type SetElem struct {
	Key         []byte `json:"key"`
	KeyEnd      []byte `json:"keyEnd,omitempty"`
	IntervalEnd bool   `json:"intervalEnd,omitempty"`
	Data        []byte `json:"data,omitempty"`
	Verdict     string `json:"verdict,omitempty"`
}

// PrintRule returns the nft syntax of the expressions of a rule of a table of family
// (inet, ip, ip6, bridge, netdev, arp), with sets the sets of that table by name.
func PrintRule(family string, exprs []expr.Any, sets map[string]SetInfo) string {
	es := make([]any, len(exprs))
	for i, e := range exprs {
		es[i] = e
	}
	return printRule(family, es, sets)
}

// printRule is PrintRule for expressions as parseRules reads them: expr.Any values, and
// opaque ones for the expressions google/nftables has no type for.
func printRule(family string, exprs []any, sets map[string]SetInfo) string {
	p := &printer{family: family, sets: sets}
	switch family {
	case "ip":
		p.l3 = "ip"
	case "ip6":
		p.l3 = "ip6"
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

// kind says how to print a value.
type kind int

const (
	kRaw       kind = iota // hex bytes
	kBEInt                 // big-endian unsigned integer
	kHostInt               // host-endian unsigned integer
	kHex                   // host-endian, printed 0x%08x (marks)
	kIPv4                  // address
	kIPv6                  // address
	kPort                  // big-endian 16 bits
	kProto                 // IP protocol number
	kNFProto               // meta nfproto
	kEtherType             // big-endian 16 bits
	kIfname                // interface name, 16 bytes, NUL padded
	kMAC                   // 6 bytes
	kCtState               // host-endian bits
	kCtStatus              // host-endian bits
	kCtDir                 // one byte
	kTCPFlags              // one byte of bits
	kICMPType              // one byte
	kICMP6Type             // one byte
	kFibType               // host-endian route type
	kPktType               // one byte
	kString                // NUL padded string
)

// operand is what a register holds.
type operand struct {
	name string
	kind kind
	size uint32 // bytes
	// dep says the operand names a protocol: l3 (meta nfproto, ether type) or l4 (meta
	// l4proto, ip protocol, ip6 nexthdr); a match on it is a dependency nft leaves out
	// before a header field of that protocol.
	dep  int
	cont bool   // a later word of a multi-word operand
	imm  []byte // an immediate value
	// mask and xor of a bitwise on the operand.
	mask, xor []byte
	// anonymous map data: printed with its key.
	mapped bool
	// full is the length of the address field a shorter load of its first bytes is a
	// prefix of (nft loads "ip saddr 10.0.0.0/8" as one byte).
	full uint32
}

const (
	depNone = iota
	depL3
	depL4
)

type stmt struct {
	text   string
	killed bool
}

type printer struct {
	family string
	sets   map[string]SetInfo
	regs   [16]*operand
	stmts  []*stmt
	// l3 and l4 are the protocols the matches so far imply ("ip", "ip6"; an IP protocol).
	l3 string
	l4 uint8
	// pendingL3 and pendingL4 are matches on a protocol that a later header field of
	// that protocol makes redundant (nil after a statement that is not a match).
	pendingL3, pendingL4 *stmt
}

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

// store puts op into register r (and marks the following words it fills).
func (p *printer) store(r uint32, op operand) {
	w, ok := word(r)
	if !ok {
		return
	}
	o := op
	p.regs[w] = &o
	for i := 1; i < int((op.size+3)/4) && w+i < len(p.regs); i++ {
		p.regs[w+i] = &operand{cont: true, size: 4}
	}
}

// load returns the operand in register r.
func (p *printer) load(r uint32) operand {
	w, ok := word(r)
	if !ok || p.regs[w] == nil {
		return operand{name: fmt.Sprintf("<reg %d>", r)}
	}
	return *p.regs[w]
}

// loadConcat returns the operands from register r on that fill n bytes (each field
// padded to 4 bytes); with n 0, the operand in r alone.
func (p *printer) loadConcat(r uint32, n uint32) []operand {
	w, ok := word(r)
	if !ok {
		return []operand{{name: fmt.Sprintf("<reg %d>", r)}}
	}
	var out []operand
	var got uint32
	for w < len(p.regs) && p.regs[w] != nil && !p.regs[w].cont {
		op := *p.regs[w]
		out = append(out, op)
		pad := (op.size + 3) / 4 * 4
		got += pad
		w += int(pad / 4)
		if n == 0 || got >= n {
			break
		}
	}
	if len(out) == 0 {
		return []operand{{name: fmt.Sprintf("<reg %d>", r)}}
	}
	return out
}

func (p *printer) emit(text string) *stmt {
	s := &stmt{text: text}
	p.stmts = append(p.stmts, s)
	return s
}

// action emits a statement that is not a match: dependencies before it stay.
func (p *printer) action(text string) {
	p.pendingL3, p.pendingL4 = nil, nil
	p.emit(text)
}

// used notes that a header field of base dep is printed: a pending dependency on its
// protocol goes.
func (p *printer) used(base expr.PayloadBase) {
	switch base {
	case expr.PayloadBaseNetworkHeader:
		if p.pendingL3 != nil {
			p.pendingL3.killed = true
			p.pendingL3 = nil
		}
	case expr.PayloadBaseTransportHeader:
		if p.pendingL4 != nil {
			p.pendingL4.killed = true
			p.pendingL4 = nil
			// ICMP and ICMPv6 imply their IP version too.
			if (p.l4 == unix.IPPROTO_ICMP || p.l4 == unix.IPPROTO_ICMPV6) && p.pendingL3 != nil {
				p.pendingL3.killed = true
				p.pendingL3 = nil
			}
		}
	}
}

func (p *printer) expr(e any) {
	switch e := e.(type) {
	case *expr.Meta:
		m := metaOperand(e.Key)
		if e.SourceRegister {
			p.action(fmt.Sprintf("%s set %s", m.name, p.value(p.load(e.Register), m.kind, m.size)))
			return
		}
		p.store(e.Register, m)
	case *expr.Ct:
		c := ctOperand(e, p.l3)
		if e.SourceRegister {
			p.action(fmt.Sprintf("%s set %s", c.name, p.value(p.load(e.Register), c.kind, c.size)))
			return
		}
		p.store(e.Register, c)
	case *expr.Payload:
		if e.OperationType == expr.PayloadWrite {
			f := p.payloadOperand(e.Base, e.Offset, e.Len)
			p.action(fmt.Sprintf("%s set %s", f.name, p.value(p.load(e.SourceRegister), f.kind, f.size)))
			return
		}
		p.store(e.DestRegister, p.payloadOperand(e.Base, e.Offset, e.Len))
	case *expr.Immediate:
		p.store(e.Register, operand{name: "0x" + fmt.Sprintf("%x", e.Data), kind: kRaw, size: uint32(len(e.Data)), imm: e.Data})
	case *expr.Bitwise:
		src := p.load(e.SourceRegister)
		src.mask, src.xor = e.Mask, e.Xor
		p.store(e.DestRegister, src)
	case *expr.Cmp:
		p.cmp(e)
	case *expr.Range:
		lhs := p.load(e.Register)
		op := ""
		if e.Op == expr.CmpOpNeq {
			op = "!= "
		}
		p.match(lhs, fmt.Sprintf("%s %s%s-%s", lhs.name, op, p.value(operand{imm: e.FromData}, lhs.kind, lhs.size), p.value(operand{imm: e.ToData}, lhs.kind, lhs.size)))
	case *expr.Lookup:
		p.lookup(e)
	case *expr.Verdict:
		p.action(verdictText(e))
	case *expr.Counter:
		p.action(fmt.Sprintf("counter packets %d bytes %d", e.Packets, e.Bytes))
	case *expr.Log:
		p.action(logText(e))
	case *expr.Limit:
		p.action(limitText(e))
	case *expr.Quota:
		over := ""
		if e.Over {
			over = "over "
		}
		p.action(fmt.Sprintf("quota %s%d bytes", over, e.Bytes))
	case *expr.NAT:
		p.action(p.natText(e))
	case *expr.Masq:
		s := "masquerade"
		if e.ToPorts && e.RegProtoMin != 0 {
			s += " to :" + p.value(p.load(e.RegProtoMin), kPort, 2)
		}
		p.action(s + natFlags(e.Random, e.FullyRandom, e.Persistent))
	case *expr.Redir:
		s := "redirect"
		if e.RegisterProtoMin != 0 {
			s += " to :" + p.value(p.load(e.RegisterProtoMin), kPort, 2)
		}
		p.action(s)
	case *expr.Reject:
		p.action(rejectText(e, p.l3))
	case *expr.Notrack:
		p.action("notrack")
	case *expr.Queue:
		p.action(fmt.Sprintf("queue num %d", e.Num))
	case *expr.Dynset:
		p.dynset(e)
	case *expr.Numgen:
		t := "inc"
		if e.Type == unix.NFT_NG_RANDOM {
			t = "random"
		}
		name := fmt.Sprintf("numgen %s mod %d", t, e.Modulus)
		if e.Offset != 0 {
			name += fmt.Sprintf(" offset %d", e.Offset)
		}
		p.store(e.Register, operand{name: name, kind: kHostInt, size: 4})
	case *expr.Hash:
		src := joinNames(p.loadConcat(e.SourceRegister, e.Length))
		name := fmt.Sprintf("jhash %s mod %d seed %#x", src, e.Modulus, e.Seed)
		if e.Type == expr.HashTypeSym {
			name = fmt.Sprintf("symhash mod %d", e.Modulus)
		}
		if e.Offset != 0 {
			name += fmt.Sprintf(" offset %d", e.Offset)
		}
		p.store(e.DestRegister, operand{name: name, kind: kHostInt, size: 4})
	case *expr.Fib:
		p.store(e.Register, fibOperand(e))
	case *expr.Exthdr:
		name := fmt.Sprintf("exthdr @%d,%d,%d", e.Type, e.Offset*8, e.Len*8)
		if e.Op == expr.ExthdrOpTcpopt {
			name = fmt.Sprintf("tcp option @%d,%d,%d", e.Type, e.Offset*8, e.Len*8)
		}
		if e.SourceRegister != 0 {
			p.action(fmt.Sprintf("%s set %s", name, p.load(e.SourceRegister).name))
			return
		}
		p.store(e.DestRegister, operand{name: name, kind: kBEInt, size: e.Len})
	case *expr.Objref:
		p.action(objrefText(e))
	case *expr.Connlimit:
		over := ""
		if e.Flags&expr.NFT_CONNLIMIT_F_INV != 0 {
			over = "over "
		}
		p.action(fmt.Sprintf("ct count %s%d", over, e.Count))
	case *expr.Match:
		p.action(fmt.Sprintf("xt match %q", e.Name))
	case *expr.Target:
		p.action(fmt.Sprintf("xt target %q", e.Name))
	case *opaque:
		p.action("[" + e.name + "]")
	default:
		p.action(fmt.Sprintf("[%T]", e))
	}
}

// match emits a match on lhs; a match on a protocol is remembered as a dependency.
func (p *printer) match(lhs operand, text string) {
	s := p.emit(text)
	switch lhs.dep {
	case depL3:
		p.pendingL3 = s
	case depL4:
		p.pendingL4 = s
	}
}

var cmpOps = map[expr.CmpOp]string{
	expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ", expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= ",
}

func (p *printer) cmp(e *expr.Cmp) {
	lhs := p.load(e.Register)
	op := cmpOps[e.Op]
	if lhs.mask != nil {
		p.match(lhs, p.maskedCmp(lhs, e))
		return
	}
	val := p.value(operand{imm: e.Data}, lhs.kind, uint32(len(e.Data)))
	if lhs.full != 0 {
		if a, ok := netip.AddrFromSlice(padTo(e.Data, lhs)); ok {
			val = netip.PrefixFrom(a, 8*len(e.Data)).String()
		}
	}
	if lhs.kind == kIfname && len(e.Data) < 16 && !bytes.Contains(e.Data, []byte{0}) {
		val = strconv.Quote(string(e.Data) + "*")
	}
	text := strings.TrimSpace(lhs.name + " " + op + val)
	if e.Op != expr.CmpOpEq {
		p.emit(text) // a match, but no dependency
		return
	}
	p.match(lhs, text)
	// A match on a protocol tells what the following header fields are.
	switch lhs.dep {
	case depL3:
		switch {
		case lhs.kind == kNFProto && len(e.Data) == 1 && e.Data[0] == unix.NFPROTO_IPV4,
			lhs.kind == kEtherType && bytes.Equal(e.Data, []byte{0x08, 0x00}):
			p.l3 = "ip"
		case lhs.kind == kNFProto && len(e.Data) == 1 && e.Data[0] == unix.NFPROTO_IPV6,
			lhs.kind == kEtherType && bytes.Equal(e.Data, []byte{0x86, 0xdd}):
			p.l3 = "ip6"
		case lhs.kind == kEtherType && bytes.Equal(e.Data, []byte{0x08, 0x06}):
			p.l3 = "arp"
		}
	case depL4:
		if len(e.Data) == 1 {
			p.l4 = e.Data[0]
		}
	}
}

// maskedCmp prints a comparison of a masked operand: flags ("ct state
// established,related"), a prefix ("ip saddr 10.0.0.0/8"), else the mask itself.
func (p *printer) maskedCmp(lhs operand, e *expr.Cmp) string {
	zero := func(b []byte) bool { return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) }
	if zero(lhs.xor) {
		switch lhs.kind {
		case kCtState, kCtStatus, kTCPFlags:
			if e.Op == expr.CmpOpNeq && zero(e.Data) {
				return lhs.name + " " + p.value(operand{imm: lhs.mask}, lhs.kind, lhs.size)
			}
			if e.Op == expr.CmpOpEq && !zero(e.Data) {
				return lhs.name + " " + p.value(operand{imm: e.Data}, lhs.kind, lhs.size) + " / " + p.value(operand{imm: lhs.mask}, lhs.kind, lhs.size)
			}
		case kIPv4, kIPv6:
			if ones, ok := prefixLen(lhs.mask); ok && (e.Op == expr.CmpOpEq || e.Op == expr.CmpOpNeq) {
				if a, ok := netip.AddrFromSlice(padTo(e.Data, lhs)); ok {
					return strings.TrimSpace(lhs.name + " " + cmpOps[e.Op] + netip.PrefixFrom(a, ones).String())
				}
			}
		}
	}
	s := lhs.name + " & " + hexOf(lhs.mask)
	if !zero(lhs.xor) {
		s += " ^ " + hexOf(lhs.xor)
	}
	op := cmpOps[e.Op]
	if op == "" {
		op = "== "
	}
	val := p.value(operand{imm: e.Data}, lhs.kind, uint32(len(e.Data)))
	if lhs.kind == kBEInt {
		val = hexOf(e.Data) // nft prints the result of a mask in hex
	}
	return s + " " + op + val
}

// padTo pads the data of a comparison with lhs, a prefix of an address field, to the
// field's length.
func padTo(data []byte, lhs operand) []byte {
	if lhs.full > uint32(len(data)) {
		return append(slices.Clone(data), make([]byte, int(lhs.full)-len(data))...)
	}
	return data
}

// prefixLen returns the number of leading ones of a mask made of leading ones only.
func prefixLen(mask []byte) (int, bool) {
	n := 0
	for i, b := range mask {
		if b == 0xff {
			n += 8
			continue
		}
		l := bits.LeadingZeros8(^b)
		if b<<l != 0 {
			return 0, false
		}
		n += l
		for _, rest := range mask[i+1:] {
			if rest != 0 {
				return 0, false
			}
		}
		return n, true
	}
	return n, true
}

func hexOf(b []byte) string { return "0x" + fmt.Sprintf("%x", b) }

func (p *printer) lookup(e *expr.Lookup) {
	set, known := p.sets[e.SetName]
	key := p.loadConcat(e.SourceRegister, set.KeyLen)
	if !known {
		key = p.loadConcat(e.SourceRegister, 0)
	}
	ref := p.setRef(e.SetName, set, known, key)
	keyName := joinNames(key)
	switch {
	case e.IsDestRegSet && e.DestRegister == unix.NFT_REG_VERDICT:
		p.action(keyName + " vmap " + ref)
	case e.IsDestRegSet:
		size := set.DataLen
		if size == 0 {
			size = 4
		}
		p.store(e.DestRegister, operand{name: keyName + " map " + ref, kind: kRaw, size: size, mapped: true})
	default:
		op := ""
		if e.Invert {
			op = "!= "
		}
		p.emit(keyName + " " + op + ref)
	}
}

// setRef is how a lookup names its set: "@name", or the elements of an anonymous set.
func (p *printer) setRef(name string, set SetInfo, known bool, key []operand) string {
	if !known || !set.Anonymous {
		return "@" + name
	}
	var elems []string
	if set.Interval {
		elems = p.intervals(set, key)
	} else {
		// nft lists the elements in order; the kernel's hash does not keep one.
		els := slices.Clone(set.Elems)
		slices.SortStableFunc(els, func(a, b SetElem) int { return bytes.Compare(a.Key, b.Key) })
		for _, el := range els {
			s := p.concatValue(el.Key, key)
			switch {
			case el.Verdict != "":
				s += " : " + el.Verdict
			case set.Map && el.Data != nil:
				s += " : 0x" + fmt.Sprintf("%x", el.Data)
			}
			elems = append(elems, s)
		}
	}
	if len(elems) == 0 {
		return "@" + name
	}
	return "{ " + strings.Join(elems, ", ") + " }"
}

// concatValue prints a key of a set whose fields are key.
func (p *printer) concatValue(b []byte, key []operand) string {
	var parts []string
	for _, op := range key {
		n := int(op.size)
		if n > len(b) {
			n = len(b)
		}
		parts = append(parts, p.value(operand{imm: b[:n]}, op.kind, op.size))
		pad := int((op.size + 3) / 4 * 4)
		if pad > len(b) {
			pad = len(b)
		}
		b = b[pad:]
	}
	return strings.Join(parts, " . ")
}

// intervals prints the elements of an anonymous interval set of one field: the kernel
// keeps each interval as its start and the start of what follows (flagged end).
func (p *printer) intervals(set SetInfo, key []operand) []string {
	if len(key) != 1 {
		var out []string
		for _, el := range set.Elems {
			s := p.concatValue(el.Key, key)
			if el.KeyEnd != nil {
				s += "-" + p.concatValue(el.KeyEnd, key)
			}
			out = append(out, s)
		}
		return out
	}
	els := slices.Clone(set.Elems)
	slices.SortStableFunc(els, func(a, b SetElem) int { return bytes.Compare(a.Key, b.Key) })
	k := key[0]
	var out []string
	for i, el := range els {
		if el.IntervalEnd {
			continue
		}
		start := new(big.Int).SetBytes(el.Key)
		var last *big.Int
		if i+1 < len(els) && els[i+1].IntervalEnd {
			last = new(big.Int).Sub(new(big.Int).SetBytes(els[i+1].Key), big.NewInt(1))
		} else {
			last = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(8*len(el.Key))), big.NewInt(1))
		}
		out = append(out, p.rangeText(start, last, len(el.Key), k))
	}
	return out
}

func (p *printer) rangeText(start, last *big.Int, n int, k operand) string {
	bytesOf := func(v *big.Int) []byte { return v.FillBytes(make([]byte, n)) }
	if start.Cmp(last) == 0 {
		return p.value(operand{imm: bytesOf(start)}, k.kind, k.size)
	}
	if k.kind == kIPv4 || k.kind == kIPv6 {
		// A prefix: start has the host bits clear, last has them set.
		span := new(big.Int).Add(new(big.Int).Sub(last, start), big.NewInt(1))
		if span.BitLen() > 0 && new(big.Int).And(span, new(big.Int).Sub(span, big.NewInt(1))).Sign() == 0 {
			host := span.BitLen() - 1
			if new(big.Int).Rsh(start, uint(host)).Lsh(new(big.Int).Rsh(start, uint(host)), uint(host)).Cmp(start) == 0 {
				a, _ := netip.AddrFromSlice(bytesOf(start))
				return netip.PrefixFrom(a, 8*n-host).String()
			}
		}
	}
	return p.value(operand{imm: bytesOf(start)}, k.kind, k.size) + "-" + p.value(operand{imm: bytesOf(last)}, k.kind, k.size)
}

func (p *printer) dynset(e *expr.Dynset) {
	set, known := p.sets[e.SetName]
	key := p.loadConcat(e.SrcRegKey, set.KeyLen)
	if !known {
		key = p.loadConcat(e.SrcRegKey, 0)
	}
	op := "add"
	switch e.Operation {
	case unix.NFT_DYNSET_OP_UPDATE:
		op = "update"
	case 2: // NFT_DYNSET_OP_DELETE
		op = "delete"
	}
	s := fmt.Sprintf("%s @%s { %s", op, e.SetName, joinNames(key))
	if e.Timeout != 0 {
		s += " timeout " + e.Timeout.String()
	}
	if e.SrcRegData != 0 {
		s += " : " + joinNames(p.loadConcat(e.SrcRegData, set.DataLen))
	}
	p.action(s + " }")
}

func (p *printer) natText(e *expr.NAT) string {
	s := "snat"
	if e.Type == expr.NATTypeDestNAT {
		s = "dnat"
	}
	ak, fam := kIPv4, ""
	switch e.Family {
	case unix.NFPROTO_IPV4:
		fam = " ip"
	case unix.NFPROTO_IPV6:
		ak, fam = kIPv6, " ip6"
	}
	if p.family == "inet" {
		s += fam
	}
	if e.RegAddrMin == 0 && e.RegProtoMin == 0 {
		return s + natFlags(e.Random, e.FullyRandom, e.Persistent)
	}
	s += " to "
	var target string
	if e.RegAddrMin != 0 {
		addr := p.load(e.RegAddrMin)
		target = p.value(addr, ak, addr.size)
		if e.RegAddrMax != 0 && e.RegAddrMax != e.RegAddrMin {
			hi := p.load(e.RegAddrMax)
			target += "-" + p.value(hi, ak, hi.size)
		}
		if ak == kIPv6 && e.RegProtoMin != 0 && !addr.mapped {
			target = "[" + target + "]"
		}
	}
	if e.RegProtoMin != 0 {
		port := p.load(e.RegProtoMin)
		if !port.cont { // not the port of an address . port map
			target += ":" + p.value(port, kPort, 2)
			if e.RegProtoMax != 0 && e.RegProtoMax != e.RegProtoMin {
				target += "-" + p.value(p.load(e.RegProtoMax), kPort, 2)
			}
		}
	}
	return s + target + natFlags(e.Random, e.FullyRandom, e.Persistent)
}

func natFlags(random, fully, persistent bool) string {
	var fs []string
	if random {
		fs = append(fs, "random")
	}
	if fully {
		fs = append(fs, "fully-random")
	}
	if persistent {
		fs = append(fs, "persistent")
	}
	if len(fs) == 0 {
		return ""
	}
	return " " + strings.Join(fs, ",")
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
	return fmt.Sprintf("verdict %d", v.Kind)
}

func logText(e *expr.Log) string {
	s := "log"
	if len(e.Data) > 0 {
		s += " prefix " + strconv.Quote(strings.TrimRight(string(e.Data), "\x00"))
	}
	if e.Key&(1<<unix.NFTA_LOG_GROUP) != 0 {
		s += fmt.Sprintf(" group %d", e.Group)
	}
	if e.Key&(1<<unix.NFTA_LOG_LEVEL) != 0 {
		levels := []string{"emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", "audit"}
		if int(e.Level) < len(levels) && e.Level != 4 { // warn: nft's default
			s += " level " + levels[e.Level]
		}
	}
	return s
}

func limitText(e *expr.Limit) string {
	units := map[expr.LimitTime]string{
		expr.LimitTimeSecond: "second", expr.LimitTimeMinute: "minute", expr.LimitTimeHour: "hour",
		expr.LimitTimeDay: "day", expr.LimitTimeWeek: "week",
	}
	over := ""
	if e.Over {
		over = "over "
	}
	unit := ""
	if e.Type == expr.LimitTypePktBytes {
		unit = " bytes"
	}
	s := fmt.Sprintf("limit rate %s%d%s/%s", over, e.Rate, unit, units[e.Unit])
	switch {
	case e.Type == expr.LimitTypePkts && e.Burst != 0 && e.Burst != 5: // nft's default burst: 5 packets
		s += fmt.Sprintf(" burst %d packets", e.Burst)
	case e.Type == expr.LimitTypePktBytes && e.Burst != 0:
		s += fmt.Sprintf(" burst %d bytes", e.Burst)
	}
	return s
}

func rejectText(e *expr.Reject, l3 string) string {
	switch e.Type {
	case unix.NFT_REJECT_TCP_RST:
		return "reject with tcp reset"
	case unix.NFT_REJECT_ICMPX_UNREACH:
		names := map[uint8]string{0: "no-route", 1: "port-unreachable", 2: "host-unreachable", 3: "admin-prohibited"}
		if e.Code == 1 {
			return "reject"
		}
		return "reject with icmpx " + names[e.Code]
	}
	fam := "icmp"
	if l3 == "ip6" {
		fam = "icmpv6"
	}
	return fmt.Sprintf("reject with %s %d", fam, e.Code)
}

func objrefText(e *expr.Objref) string {
	names := map[int]string{1: "counter", 2: "quota", 3: "ct helper set", 4: "limit", 5: "connlimit", 6: "tunnel", 7: "ct timeout set", 8: "meta secmark set", 9: "ct expectation set", 10: "synproxy"}
	n, ok := names[e.Type]
	if !ok {
		n = fmt.Sprintf("object %d", e.Type)
	}
	return fmt.Sprintf("%s name %q", n, e.Name)
}

func joinNames(ops []operand) string {
	names := make([]string, len(ops))
	for i, o := range ops {
		names[i] = o.name
	}
	return strings.Join(names, " . ")
}

// value prints the value of an operand (an immediate, or data of a comparison) as of
// kind k and size n.
func (p *printer) value(op operand, k kind, n uint32) string {
	b := op.imm
	if b == nil {
		return op.name // a register loaded from the packet, a map...
	}
	if n != 0 && uint32(len(b)) > n {
		b = b[:n]
	}
	switch k {
	case kIPv4, kIPv6:
		if a, ok := netip.AddrFromSlice(b); ok {
			return a.String()
		}
	case kPort, kEtherType, kBEInt:
		if k == kEtherType {
			switch {
			case bytes.Equal(b, []byte{0x08, 0x00}):
				return "ip"
			case bytes.Equal(b, []byte{0x86, 0xdd}):
				return "ip6"
			case bytes.Equal(b, []byte{0x08, 0x06}):
				return "arp"
			case bytes.Equal(b, []byte{0x81, 0x00}):
				return "8021q"
			}
		}
		if len(b) <= 8 {
			return strconv.FormatUint(beUint(b), 10)
		}
	case kHostInt:
		if len(b) <= 8 {
			return strconv.FormatUint(hostUint(b), 10)
		}
	case kHex:
		return fmt.Sprintf("0x%08x", hostUint(b))
	case kProto:
		if len(b) == 1 {
			return protoName(b[0])
		}
	case kNFProto:
		if len(b) == 1 {
			return nfprotoName(b[0])
		}
	case kIfname, kString:
		return strconv.Quote(string(bytes.TrimRight(b, "\x00")))
	case kMAC:
		if len(b) == 6 {
			return net.HardwareAddr(b).String()
		}
	case kCtState:
		return ctStateName(uint32(hostUint(b)))
	case kCtStatus:
		return bitNames(uint32(hostUint(b)), ctStatusBits)
	case kCtDir:
		if len(b) == 1 && b[0] <= 1 {
			return []string{"original", "reply"}[b[0]]
		}
	case kTCPFlags:
		if len(b) == 1 {
			return bitNames(uint32(b[0]), []bitName{{0x01, "fin"}, {0x02, "syn"}, {0x04, "rst"}, {0x08, "psh"}, {0x10, "ack"}, {0x20, "urg"}, {0x40, "ecn"}, {0x80, "cwr"}})
		}
	case kICMPType, kICMP6Type:
		if len(b) == 1 {
			proto := uint8(unix.IPPROTO_ICMP)
			if k == kICMP6Type {
				proto = unix.IPPROTO_ICMPV6
			}
			if n, ok := map[bool]map[uint8]string{false: icmpTypes, true: icmp6Types}[k == kICMP6Type][b[0]]; ok {
				return n
			}
			return icmpTypeName(proto, b[0])
		}
	case kFibType:
		types := []string{"unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable", "prohibit"}
		if v := hostUint(b); v < uint64(len(types)) {
			return types[v]
		}
	case kPktType:
		if len(b) == 1 && b[0] <= 3 {
			return []string{"host", "broadcast", "multicast", "other"}[b[0]]
		}
	}
	if len(b) <= 4 {
		return strconv.FormatUint(beUint(b), 10)
	}
	return hexOf(b)
}

func beUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

func hostUint(b []byte) uint64 {
	var buf [8]byte
	copy(buf[:], b)
	return binary.NativeEndian.Uint64(buf[:]) // little-endian hosts: the first bytes are the low ones
}

// metaOperand names meta key k.
func metaOperand(k expr.MetaKey) operand {
	switch k {
	case expr.MetaKeyLEN:
		return operand{name: "meta length", kind: kHostInt, size: 4}
	case expr.MetaKeyPROTOCOL:
		return operand{name: "meta protocol", kind: kEtherType, size: 2, dep: depL3}
	case expr.MetaKeyPRIORITY:
		return operand{name: "meta priority", kind: kHex, size: 4}
	case expr.MetaKeyMARK:
		return operand{name: "meta mark", kind: kHex, size: 4}
	case expr.MetaKeyIIF:
		return operand{name: "meta iif", kind: kHostInt, size: 4}
	case expr.MetaKeyOIF:
		return operand{name: "meta oif", kind: kHostInt, size: 4}
	case expr.MetaKeyIIFNAME:
		return operand{name: "iifname", kind: kIfname, size: 16}
	case expr.MetaKeyOIFNAME:
		return operand{name: "oifname", kind: kIfname, size: 16}
	case expr.MetaKeyIIFTYPE:
		return operand{name: "meta iiftype", kind: kHostInt, size: 2}
	case expr.MetaKeyOIFTYPE:
		return operand{name: "meta oiftype", kind: kHostInt, size: 2}
	case expr.MetaKeySKUID:
		return operand{name: "meta skuid", kind: kHostInt, size: 4}
	case expr.MetaKeySKGID:
		return operand{name: "meta skgid", kind: kHostInt, size: 4}
	case expr.MetaKeyNFTRACE:
		return operand{name: "meta nftrace", kind: kHostInt, size: 1}
	case expr.MetaKeyNFPROTO:
		return operand{name: "meta nfproto", kind: kNFProto, size: 1, dep: depL3}
	case expr.MetaKeyL4PROTO:
		return operand{name: "meta l4proto", kind: kProto, size: 1, dep: depL4}
	case expr.MetaKeyBRIIIFNAME:
		return operand{name: "meta ibrname", kind: kIfname, size: 16}
	case expr.MetaKeyBRIOIFNAME:
		return operand{name: "meta obrname", kind: kIfname, size: 16}
	case expr.MetaKeyPKTTYPE:
		return operand{name: "meta pkttype", kind: kPktType, size: 1}
	case expr.MetaKeyCPU:
		return operand{name: "meta cpu", kind: kHostInt, size: 4}
	case expr.MetaKeyIIFGROUP:
		return operand{name: "meta iifgroup", kind: kHostInt, size: 4}
	case expr.MetaKeyOIFGROUP:
		return operand{name: "meta oifgroup", kind: kHostInt, size: 4}
	case expr.MetaKeyCGROUP:
		return operand{name: "meta cgroup", kind: kHostInt, size: 4}
	case expr.MetaKeyPRANDOM:
		return operand{name: "meta random", kind: kHostInt, size: 4}
	}
	return operand{name: fmt.Sprintf("meta key %d", k), kind: kHostInt, size: 4}
}

// ctOperand names the ct expression e; l3 is the protocol the rule matched so far.
func ctOperand(e *expr.Ct, l3 string) operand {
	dir := "original "
	if e.Direction == 1 {
		dir = "reply "
	}
	addr := kIPv4
	if l3 == "ip6" {
		addr = kIPv6
	}
	switch e.Key {
	case unix.NFT_CT_STATE:
		return operand{name: "ct state", kind: kCtState, size: 4}
	case unix.NFT_CT_DIRECTION:
		return operand{name: "ct direction", kind: kCtDir, size: 1}
	case unix.NFT_CT_STATUS:
		return operand{name: "ct status", kind: kCtStatus, size: 4}
	case unix.NFT_CT_MARK:
		return operand{name: "ct mark", kind: kHex, size: 4}
	case unix.NFT_CT_EXPIRATION:
		return operand{name: "ct expiration", kind: kHostInt, size: 4}
	case unix.NFT_CT_HELPER:
		return operand{name: "ct helper", kind: kString, size: 16}
	case unix.NFT_CT_L3PROTOCOL:
		return operand{name: "ct " + dir + "l3proto", kind: kNFProto, size: 1}
	case unix.NFT_CT_SRC:
		return operand{name: "ct " + dir + "saddr", kind: addr, size: map[kind]uint32{kIPv4: 4, kIPv6: 16}[addr]}
	case unix.NFT_CT_DST:
		return operand{name: "ct " + dir + "daddr", kind: addr, size: map[kind]uint32{kIPv4: 4, kIPv6: 16}[addr]}
	case unix.NFT_CT_PROTOCOL:
		return operand{name: "ct " + dir + "protocol", kind: kProto, size: 1}
	case unix.NFT_CT_PROTO_SRC:
		return operand{name: "ct " + dir + "proto-src", kind: kPort, size: 2}
	case unix.NFT_CT_PROTO_DST:
		return operand{name: "ct " + dir + "proto-dst", kind: kPort, size: 2}
	case unix.NFT_CT_LABELS:
		return operand{name: "ct label", kind: kRaw, size: 16}
	case unix.NFT_CT_PKTS:
		return operand{name: "ct " + dir + "packets", kind: kHostInt, size: 8}
	case unix.NFT_CT_BYTES:
		return operand{name: "ct " + dir + "bytes", kind: kHostInt, size: 8}
	case unix.NFT_CT_ZONE:
		return operand{name: "ct zone", kind: kHostInt, size: 2}
	case unix.NFT_CT_SRC_IP:
		return operand{name: "ct " + dir + "ip saddr", kind: kIPv4, size: 4}
	case unix.NFT_CT_DST_IP:
		return operand{name: "ct " + dir + "ip daddr", kind: kIPv4, size: 4}
	case unix.NFT_CT_SRC_IP6:
		return operand{name: "ct " + dir + "ip6 saddr", kind: kIPv6, size: 16}
	case unix.NFT_CT_DST_IP6:
		return operand{name: "ct " + dir + "ip6 daddr", kind: kIPv6, size: 16}
	case unix.NFT_CT_ID:
		return operand{name: "ct id", kind: kBEInt, size: 4}
	}
	return operand{name: fmt.Sprintf("ct key %d", e.Key), kind: kRaw, size: 4}
}

func fibOperand(e *expr.Fib) operand {
	var keys []string
	if e.FlagSADDR {
		keys = append(keys, "saddr")
	}
	if e.FlagDADDR {
		keys = append(keys, "daddr")
	}
	if e.FlagMARK {
		keys = append(keys, "mark")
	}
	if e.FlagIIF {
		keys = append(keys, "iif")
	}
	if e.FlagOIF {
		keys = append(keys, "oif")
	}
	name := "fib " + strings.Join(keys, " . ")
	switch {
	case e.ResultOIFNAME:
		return operand{name: name + " oifname", kind: kIfname, size: 16}
	case e.ResultADDRTYPE:
		return operand{name: name + " type", kind: kFibType, size: 4}
	}
	return operand{name: name + " oif", kind: kHostInt, size: 4}
}

// field is a header field the printer names.
type field struct {
	name string
	kind kind
	dep  int
}

type fieldKey struct{ off, len uint32 }

var (
	etherFields = map[fieldKey]field{
		{0, 6}: {"ether daddr", kMAC, 0}, {6, 6}: {"ether saddr", kMAC, 0}, {12, 2}: {"ether type", kEtherType, depL3},
	}
	ipFields = map[fieldKey]field{
		{2, 2}: {"ip length", kBEInt, 0}, {4, 2}: {"ip id", kBEInt, 0}, {8, 1}: {"ip ttl", kBEInt, 0},
		{9, 1}: {"ip protocol", kProto, depL4}, {10, 2}: {"ip checksum", kBEInt, 0},
		{12, 4}: {"ip saddr", kIPv4, 0}, {16, 4}: {"ip daddr", kIPv4, 0},
	}
	ip6Fields = map[fieldKey]field{
		{4, 2}: {"ip6 length", kBEInt, 0}, {6, 1}: {"ip6 nexthdr", kProto, depL4}, {7, 1}: {"ip6 hoplimit", kBEInt, 0},
		{8, 16}: {"ip6 saddr", kIPv6, 0}, {24, 16}: {"ip6 daddr", kIPv6, 0},
	}
	arpFields = map[fieldKey]field{
		{0, 2}: {"arp htype", kBEInt, 0}, {2, 2}: {"arp ptype", kEtherType, 0}, {6, 2}: {"arp operation", kBEInt, 0},
		{8, 6}: {"arp saddr ether", kMAC, 0}, {14, 4}: {"arp saddr ip", kIPv4, 0},
		{18, 6}: {"arp daddr ether", kMAC, 0}, {24, 4}: {"arp daddr ip", kIPv4, 0},
	}
	tcpFields = map[fieldKey]field{
		{0, 2}: {"tcp sport", kPort, 0}, {2, 2}: {"tcp dport", kPort, 0}, {4, 4}: {"tcp sequence", kBEInt, 0},
		{8, 4}: {"tcp ackseq", kBEInt, 0}, {13, 1}: {"tcp flags", kTCPFlags, 0}, {14, 2}: {"tcp window", kBEInt, 0},
	}
	udpFields = map[fieldKey]field{
		{0, 2}: {"udp sport", kPort, 0}, {2, 2}: {"udp dport", kPort, 0}, {4, 2}: {"udp length", kBEInt, 0},
	}
	thFields = map[fieldKey]field{
		{0, 2}: {"th sport", kPort, 0}, {2, 2}: {"th dport", kPort, 0},
	}
	icmpFields = map[fieldKey]field{
		{0, 1}: {"icmp type", kICMPType, 0}, {1, 1}: {"icmp code", kBEInt, 0}, {4, 2}: {"icmp id", kBEInt, 0}, {6, 2}: {"icmp sequence", kBEInt, 0},
	}
	icmp6Fields = map[fieldKey]field{
		{0, 1}: {"icmpv6 type", kICMP6Type, 0}, {1, 1}: {"icmpv6 code", kBEInt, 0}, {4, 2}: {"icmpv6 id", kBEInt, 0}, {6, 2}: {"icmpv6 sequence", kBEInt, 0},
	}
)

// payloadOperand names a payload load by the protocol the rule implies so far.
func (p *printer) payloadOperand(base expr.PayloadBase, off, n uint32) operand {
	var fields map[fieldKey]field
	raw := "@nh"
	switch base {
	case expr.PayloadBaseLLHeader:
		fields, raw = etherFields, "@ll"
	case expr.PayloadBaseNetworkHeader:
		switch p.l3 {
		case "ip":
			fields = ipFields
		case "ip6":
			fields = ip6Fields
		case "arp":
			fields = arpFields
		}
		// The first bytes of an address: a prefix.
		for k, f := range fields {
			if (f.kind == kIPv4 || f.kind == kIPv6) && off == k.off && n < k.len {
				p.used(base)
				return operand{name: f.name, kind: f.kind, size: n, full: k.len}
			}
		}
	case expr.PayloadBaseTransportHeader:
		raw = "@th"
		switch p.l4 {
		case unix.IPPROTO_TCP:
			fields = tcpFields
		case unix.IPPROTO_UDP:
			fields = udpFields
		case unix.IPPROTO_ICMP:
			fields = icmpFields
		case unix.IPPROTO_ICMPV6:
			fields = icmp6Fields
		default:
			fields = thFields
		}
	}
	if f, ok := fields[fieldKey{off, n}]; ok {
		if !strings.HasPrefix(f.name, "th ") {
			p.used(base)
		}
		return operand{name: f.name, kind: f.kind, size: n, dep: f.dep}
	}
	return operand{name: fmt.Sprintf("%s,%d,%d", raw, off*8, n*8), kind: kBEInt, size: n}
}

// opaque is an expression the rule parser has no type for: only its name is known.
type opaque struct{ name string }
