package nftwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// dump sends a dump request of type msgType for family f with the attributes of fn and
// returns the attributes of the replies. ENOENT (the table or chain is gone) is no reply.
func dump(c *netlink.Conn, msgType int, f nftables.TableFamily, fn func(ae *netlink.AttributeEncoder)) ([][]byte, error) {
	m, err := request(msgType, netlink.Dump, f, fn)
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(m)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, m := range msgs {
		if len(m.Data) >= 4 {
			out = append(out, m.Data[4:]) // after struct nfgenmsg
		}
	}
	return out, nil
}

// TableExists reports whether table name of family f exists.
func TableExists(c *netlink.Conn, f nftables.TableFamily, name string) (bool, error) {
	m, err := request(unix.NFT_MSG_GETTABLE, 0, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, name)
	})
	if err != nil {
		return false, err
	}
	_, err = c.Execute(m)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return err == nil, err
}

func decoder(b []byte) (*netlink.AttributeDecoder, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

// DumpChains returns the chains of table of family f, in the kernel's order; none when the
// table does not exist.
func DumpChains(c *netlink.Conn, f nftables.TableFamily, table string) ([]Chain, error) {
	replies, err := dump(c, unix.NFT_MSG_GETCHAIN, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, table)
	})
	if err != nil {
		return nil, err
	}
	var out []Chain
	for _, b := range replies {
		ad, err := decoder(b)
		if err != nil {
			return nil, err
		}
		var ch Chain
		var tbl string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_CHAIN_TABLE:
				tbl = ad.String()
			case unix.NFTA_CHAIN_NAME:
				ch.Name = ad.String()
			case unix.NFTA_CHAIN_TYPE:
				ch.Type = ad.String()
			case unix.NFTA_CHAIN_POLICY:
				ch.Policy = policyName(ad.Uint32())
			case unix.NFTA_CHAIN_HOOK:
				ad.Nested(func(h *netlink.AttributeDecoder) error {
					for h.Next() {
						switch h.Type() {
						case unix.NFTA_HOOK_HOOKNUM:
							ch.Hook = h.Uint32()
						case unix.NFTA_HOOK_PRIORITY:
							ch.Priority = int32(h.Uint32())
						}
					}
					return nil
				})
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		if tbl == table {
			out = append(out, ch)
		}
	}
	return out, nil
}

func policyName(code uint32) string {
	switch code {
	case nfAccept:
		return "accept"
	case nfDrop:
		return "drop"
	}
	return fmt.Sprintf("verdict %d", code)
}

// DumpSets returns the sets and maps of table of family f by name, with the elements of
// the anonymous ones (a rule prints them); none when the table does not exist.
func DumpSets(c *netlink.Conn, f nftables.TableFamily, table string) (map[string]Set, error) {
	replies, err := dump(c, unix.NFT_MSG_GETSET, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_TABLE, table)
	})
	if err != nil {
		return nil, err
	}
	sets := make(map[string]Set)
	for _, b := range replies {
		ad, err := decoder(b)
		if err != nil {
			return nil, err
		}
		var s Set
		var tbl string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_TABLE:
				tbl = ad.String()
			case unix.NFTA_SET_NAME:
				s.Name = ad.String()
			case unix.NFTA_SET_FLAGS:
				s.Flags = ad.Uint32()
			case unix.NFTA_SET_KEY_TYPE:
				s.KeyType = ad.Uint32()
			case unix.NFTA_SET_KEY_LEN:
				s.KeyLen = ad.Uint32()
			case unix.NFTA_SET_DATA_TYPE:
				s.DataType = ad.Uint32()
			case unix.NFTA_SET_DATA_LEN:
				s.DataLen = ad.Uint32()
			case unix.NFTA_SET_TIMEOUT:
				s.Timeout = time.Duration(ad.Uint64()) * time.Millisecond
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		if tbl != table {
			continue
		}
		if s.Anonymous() {
			if s.Elems, err = DumpElems(c, f, table, s.Name); err != nil {
				return nil, fmt.Errorf("elements of set %s: %w", s.Name, err)
			}
		}
		sets[s.Name] = s
	}
	return sets, nil
}

// DumpElems returns the elements of set of table of family f, in the kernel's order;
// none when the set does not exist.
func DumpElems(c *netlink.Conn, f nftables.TableFamily, table, set string) ([]Elem, error) {
	replies, err := dump(c, unix.NFT_MSG_GETSETELEM, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, table)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	})
	if err != nil {
		return nil, err
	}
	var out []Elem
	for _, b := range replies {
		els, err := parseElems(b)
		if err != nil {
			return nil, err
		}
		out = append(out, els...)
	}
	return out, nil
}

// ParseElems returns the elements of an NFT_MSG_NEWSETELEM message (the kernel's answer to
// a dump or a get of elements).
func ParseElems(m netlink.Message) ([]Elem, error) {
	if len(m.Data) < 4 {
		return nil, fmt.Errorf("short set element message")
	}
	return parseElems(m.Data[4:]) // after struct nfgenmsg
}

func parseElems(attrs []byte) ([]Elem, error) {
	ad, err := decoder(attrs)
	if err != nil {
		return nil, err
	}
	value := func(ad *netlink.AttributeDecoder) (v []byte, verdict *expr.Verdict) {
		ad.Nested(func(d *netlink.AttributeDecoder) error {
			for d.Next() {
				switch d.Type() {
				case unix.NFTA_DATA_VALUE:
					v = slices.Clone(d.Bytes())
				case unix.NFTA_DATA_VERDICT:
					d.Nested(func(vd *netlink.AttributeDecoder) error {
						verdict = parseVerdict(vd)
						return nil
					})
				}
			}
			return nil
		})
		return v, verdict
	}
	var out []Elem
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				list.Nested(func(el *netlink.AttributeDecoder) error {
					var e Elem
					for el.Next() {
						switch el.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							e.Key, _ = value(el)
						case nftaSetElemKeyEnd:
							e.KeyEnd, _ = value(el)
						case unix.NFTA_SET_ELEM_FLAGS:
							e.IntervalEnd = el.Uint32()&unix.NFT_SET_ELEM_INTERVAL_END != 0
						case unix.NFTA_SET_ELEM_DATA:
							e.Data, e.Verdict = value(el)
						case unix.NFTA_SET_ELEM_TIMEOUT:
							e.Timeout = time.Duration(el.Uint64()) * time.Millisecond
						case unix.NFTA_SET_ELEM_USERDATA:
							e.Comment, _ = userdata.GetString(el.Bytes(), userdata.NFTNL_UDATA_SET_ELEM_COMMENT)
						}
					}
					out = append(out, e)
					return nil
				})
			}
			return nil
		})
	}
	return out, ad.Err()
}

// parseVerdict parses the attributes of NFTA_DATA_VERDICT.
func parseVerdict(ad *netlink.AttributeDecoder) *expr.Verdict {
	v := &expr.Verdict{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind = expr.VerdictKind(int32(ad.Uint32()))
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	return v
}

// Rule is a rule as the kernel lists it.
type Rule struct {
	Chain  string
	Handle uint64
	// Exprs are the rule's expressions: expr.Any values, and an *Opaque for one that
	// google/nftables has no type for or that does not parse.
	Exprs   []any
	Comment string
}

// Opaque is an expression of a rule that could not be parsed: only its name is known.
type Opaque struct {
	Name string
	Err  error // why it did not parse; nil when no expr type has that name
}

// Expressions returns the expressions of r as expr.Any; it fails on an Opaque one.
func (r Rule) Expressions() ([]expr.Any, error) {
	out := make([]expr.Any, 0, len(r.Exprs))
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case expr.Any:
			out = append(out, e)
		case *Opaque:
			if e.Err != nil {
				return nil, fmt.Errorf("expression %s: %w", e.Name, e.Err)
			}
			return nil, fmt.Errorf("expression %q of no known type", e.Name)
		default:
			return nil, fmt.Errorf("expression of type %T", e)
		}
	}
	return out, nil
}

// DumpRules returns the rules of table of family f, of chain only unless chain is "", in
// the kernel's order; none when the table or chain does not exist.
func DumpRules(c *netlink.Conn, f nftables.TableFamily, table, chain string) ([]Rule, error) {
	replies, err := dump(c, unix.NFT_MSG_GETRULE, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		if chain != "" {
			ae.String(unix.NFTA_RULE_CHAIN, chain)
		}
	})
	if err != nil {
		return nil, err
	}
	var out []Rule
	for _, b := range replies {
		r, tbl, err := parseRule(f, b)
		if err != nil {
			return nil, fmt.Errorf("parse rule: %w", err)
		}
		if tbl == table && (chain == "" || r.Chain == chain) {
			out = append(out, r)
		}
	}
	return out, nil
}

// RuleSets is a rule as DumpRuleSets reads it: its handle and the sets it looks up in,
// in the order of its expressions.
type RuleSets struct {
	Handle uint64
	Sets   []string
}

// DumpRuleSets returns the rules of chain of table of family f, in the kernel's order,
// with only their handles and the sets their lookups name (the rest of each expression
// is not parsed); none when the table or chain does not exist.
func DumpRuleSets(c *netlink.Conn, f nftables.TableFamily, table, chain string) ([]RuleSets, error) {
	replies, err := dump(c, unix.NFT_MSG_GETRULE, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		ae.String(unix.NFTA_RULE_CHAIN, chain)
	})
	if err != nil {
		return nil, err
	}
	out := make([]RuleSets, 0, len(replies))
	for _, b := range replies {
		ad, err := decoder(b)
		if err != nil {
			return nil, err
		}
		var r RuleSets
		var tbl, ch string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_TABLE:
				tbl = ad.String()
			case unix.NFTA_RULE_CHAIN:
				ch = ad.String()
			case unix.NFTA_RULE_HANDLE:
				r.Handle = ad.Uint64()
			case unix.NFTA_RULE_EXPRESSIONS:
				ad.Nested(func(list *netlink.AttributeDecoder) error {
					for list.Next() {
						list.Nested(func(el *netlink.AttributeDecoder) error {
							if set, ok := lookupSet(el); ok {
								r.Sets = append(r.Sets, set)
							}
							return nil
						})
					}
					return nil
				})
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("parse rule: %w", err)
		}
		if tbl == table && ch == chain {
			out = append(out, r)
		}
	}
	return out, nil
}

// lookupSet returns the set a lookup expression names; false for another expression.
func lookupSet(ad *netlink.AttributeDecoder) (string, bool) {
	name, data := exprAttrs(ad)
	if name != "lookup" {
		return "", false
	}
	d, err := decoder(data)
	if err != nil {
		return "", false
	}
	for d.Next() {
		if d.Type() == unix.NFTA_LOOKUP_SET {
			return d.String(), true
		}
	}
	return "", false
}

// parseRule parses the attributes of one rule and returns it with its table.
func parseRule(f nftables.TableFamily, b []byte) (Rule, string, error) {
	var r Rule
	var table string
	ad, err := decoder(b)
	if err != nil {
		return r, "", err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_TABLE:
			table = ad.String()
		case unix.NFTA_RULE_CHAIN:
			r.Chain = ad.String()
		case unix.NFTA_RULE_HANDLE:
			r.Handle = ad.Uint64()
		case unix.NFTA_RULE_USERDATA:
			if s, ok := userdata.GetString(ad.Bytes(), userdata.TypeComment); ok {
				r.Comment = s
			}
		case unix.NFTA_RULE_EXPRESSIONS:
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					list.Nested(func(el *netlink.AttributeDecoder) error {
						r.Exprs = append(r.Exprs, parseExpr(f, el))
						return nil
					})
				}
				return nil
			})
		}
	}
	return r, table, ad.Err()
}

// exprTypes make the expressions by kernel name (but ct, byteorder and immediate, parsed
// apart).
var exprTypes = map[string]func() expr.Any{
	"payload":   func() expr.Any { return &expr.Payload{} },
	"meta":      func() expr.Any { return &expr.Meta{} },
	"cmp":       func() expr.Any { return &expr.Cmp{} },
	"range":     func() expr.Any { return &expr.Range{} },
	"lookup":    func() expr.Any { return &expr.Lookup{} },
	"bitwise":   func() expr.Any { return &expr.Bitwise{} },
	"nat":       func() expr.Any { return &expr.NAT{} },
	"masq":      func() expr.Any { return &expr.Masq{} },
	"redir":     func() expr.Any { return &expr.Redir{} },
	"numgen":    func() expr.Any { return &expr.Numgen{} },
	"hash":      func() expr.Any { return &expr.Hash{} },
	"dynset":    func() expr.Any { return &expr.Dynset{} },
	"reject":    func() expr.Any { return &expr.Reject{} },
	"fib":       func() expr.Any { return &expr.Fib{} },
	"counter":   func() expr.Any { return &expr.Counter{} },
	"log":       func() expr.Any { return &expr.Log{} },
	"limit":     func() expr.Any { return &expr.Limit{} },
	"quota":     func() expr.Any { return &expr.Quota{} },
	"queue":     func() expr.Any { return &expr.Queue{} },
	"objref":    func() expr.Any { return &expr.Objref{} },
	"connlimit": func() expr.Any { return &expr.Connlimit{} },
	"exthdr":    func() expr.Any { return &expr.Exthdr{} },
	"match":     func() expr.Any { return &expr.Match{} },
	"target":    func() expr.Any { return &expr.Target{} },
	"notrack":   func() expr.Any { return &expr.Notrack{} },
}

// exprAttrs returns the name and the data of one expression of a rule.
func exprAttrs(ad *netlink.AttributeDecoder) (name string, data []byte) {
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_EXPR_NAME:
			name = ad.String()
		case unix.NFTA_EXPR_DATA:
			data = ad.Bytes()
		}
	}
	return name, data
}

// parseExpr parses one expression (its name and data attributes) of a rule: an expr.Any,
// or an *Opaque when it cannot.
func parseExpr(f nftables.TableFamily, ad *netlink.AttributeDecoder) any {
	name, data := exprAttrs(ad)
	var e expr.Any
	switch name {
	case "ct":
		ct, err := parseCt(data)
		if err != nil {
			return &Opaque{Name: name, Err: err}
		}
		return ct
	case "byteorder":
		bo, err := parseByteorder(data)
		if err != nil {
			return &Opaque{Name: name, Err: err}
		}
		return bo
	case "immediate":
		imm := &expr.Immediate{}
		if err := expr.Unmarshal(byte(f), data, imm); err != nil {
			return &Opaque{Name: name, Err: err}
		}
		if imm.Register != unix.NFT_REG_VERDICT || len(imm.Data) != 0 {
			return imm
		}
		e = &expr.Verdict{}
	default:
		mk, ok := exprTypes[name]
		if !ok {
			return &Opaque{Name: name}
		}
		e = mk()
	}
	if data == nil {
		return e // notrack: no data
	}
	if err := expr.Unmarshal(byte(f), data, e); err != nil {
		return &Opaque{Name: name, Err: err}
	}
	return e
}

// parseCt parses a ct expression, whose direction is one byte (google/nftables v0.3.0
// reads four and fails). A key whose direction is optional gets CtDirNone without one.
func parseCt(data []byte) (*expr.Ct, error) {
	ad, err := decoder(data)
	if err != nil {
		return nil, err
	}
	e := &expr.Ct{}
	dir := false
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CT_KEY:
			e.Key = expr.CtKey(ad.Uint32())
		case unix.NFTA_CT_DREG:
			e.Register = ad.Uint32()
		case unix.NFTA_CT_SREG:
			e.Register, e.SourceRegister = ad.Uint32(), true
		case unix.NFTA_CT_DIRECTION:
			e.Direction, dir = uint32(ad.Uint8()), true
		}
	}
	if !dir && ctOptDirKeys[e.Key] {
		e.Direction = CtDirNone
	}
	return e, ad.Err()
}

// parseByteorder parses a byteorder expression (google/nftables v0.3.0 cannot).
func parseByteorder(data []byte) (*expr.Byteorder, error) {
	ad, err := decoder(data)
	if err != nil {
		return nil, err
	}
	e := &expr.Byteorder{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_BYTEORDER_SREG:
			e.SourceRegister = ad.Uint32()
		case unix.NFTA_BYTEORDER_DREG:
			e.DestRegister = ad.Uint32()
		case unix.NFTA_BYTEORDER_OP:
			e.Op = expr.ByteorderOp(ad.Uint32())
		case unix.NFTA_BYTEORDER_LEN:
			e.Len = ad.Uint32()
		case unix.NFTA_BYTEORDER_SIZE:
			e.Size = ad.Uint32()
		}
	}
	return e, ad.Err()
}

// Generation returns the namespace's nf_tables ruleset generation: a counter the kernel
// increments with every committed batch, of any table and any tool.
func Generation(c *netlink.Conn) (uint32, error) {
	req, err := request(unix.NFT_MSG_GETGEN, 0, nftables.TableFamilyUnspecified, func(*netlink.AttributeEncoder) {})
	if err != nil {
		return 0, err
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := decoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
		if err := ad.Err(); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("no generation id in the kernel's reply")
}
