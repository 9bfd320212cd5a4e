package trace

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	vnl "github.com/vishvananda/netlink"
)

// Catalog is what a report names besides the events: the chains and rules of the tables
// a traced packet went through, printed, and the interfaces of the namespace. It is
// plain data, read from the kernel right after the trace (LoadCatalog), so that a report
// can be built again from recorded events without the kernel.
type Catalog struct {
	Chains []ChainInfo `json:"chains"`
	Rules  []RuleInfo  `json:"rules"`
	Links  []LinkInfo  `json:"links"`
}

// ChainInfo is one chain of an nftables table.
type ChainInfo struct {
	Family string `json:"family"`
	Table  string `json:"table"`
	Name   string `json:"name"`
	// Hook, Priority, Type and Policy are those of a base chain; Hook is "" for a
	// regular chain.
	Hook     string `json:"hook,omitempty"`
	Priority int32  `json:"priority,omitempty"`
	Type     string `json:"type,omitempty"`
	Policy   string `json:"policy,omitempty"`
}

// RuleInfo is one rule, printed in nft syntax (PrintRule).
type RuleInfo struct {
	Family  string `json:"family"`
	Table   string `json:"table"`
	Chain   string `json:"chain"`
	Handle  uint64 `json:"handle"`
	Text    string `json:"text"`
	Comment string `json:"comment,omitempty"`
}

// LinkInfo is one interface of the namespace.
type LinkInfo struct {
	Index  int    `json:"index"`
	Name   string `json:"name"`
	Kind   string `json:"kind,omitempty"`   // veth, bridge, ...
	Master string `json:"master,omitempty"` // the bridge of a bridge port
}

// TableRef names an nftables table.
type TableRef struct {
	Family string
	Name   string
}

// tablesOf returns the tables that events went through, in order of first appearance.
func tablesOf(events []Event) []TableRef {
	var out []TableRef
	for _, e := range events {
		t := TableRef{e.Family, e.Table}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// LoadCatalog reads the chains and rules of tables, and the interfaces, of the network
// namespace nsFD. A table that no longer exists is skipped.
func LoadCatalog(nsFD int, tables []TableRef) (Catalog, error) {
	var cat Catalog
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: nsFD})
	if err != nil {
		return cat, fmt.Errorf("read nftables: %w", err)
	}
	defer c.Close()
	for _, t := range tables {
		fam, ok := familyNumber(t.Family)
		if !ok {
			continue
		}
		chains, err := dumpChains(c, fam, t.Name)
		if err != nil {
			return cat, fmt.Errorf("list chains of table %s %s: %w", t.Family, t.Name, err)
		}
		cat.Chains = append(cat.Chains, chains...)
		sets, err := dumpSets(c, fam, t.Name)
		if err != nil {
			return cat, fmt.Errorf("list sets of table %s %s: %w", t.Family, t.Name, err)
		}
		rules, err := dumpRules(c, fam, t.Name)
		if err != nil {
			return cat, fmt.Errorf("list rules of table %s %s: %w", t.Family, t.Name, err)
		}
		for _, r := range rules {
			cat.Rules = append(cat.Rules, RuleInfo{
				Family: t.Family, Table: t.Name, Chain: r.chain, Handle: r.handle,
				Text: printRule(t.Family, r.exprs, sets), Comment: r.comment,
			})
		}
	}
	links, err := loadLinks(netns.NsHandle(nsFD))
	if err != nil {
		return cat, err
	}
	cat.Links = links
	return cat, nil
}

func loadLinks(ns netns.NsHandle) ([]LinkInfo, error) {
	h, err := vnl.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	defer h.Close()
	var links []vnl.Link
	for range 5 {
		if links, err = h.LinkList(); !errors.Is(err, vnl.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	out := make([]LinkInfo, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		out = append(out, LinkInfo{Index: a.Index, Name: a.Name, Kind: l.Type(), Master: names[a.MasterIndex]})
	}
	slices.SortFunc(out, func(a, b LinkInfo) int { return cmp.Compare(a.Index, b.Index) })
	return out, nil
}

func familyNumber(name string) (byte, bool) {
	for _, f := range []byte{unix.NFPROTO_INET, unix.NFPROTO_IPV4, unix.NFPROTO_IPV6, unix.NFPROTO_BRIDGE, unix.NFPROTO_NETDEV, unix.NFPROTO_ARP} {
		if familyName(f) == name {
			return f, true
		}
	}
	return 0, false
}

// dump sends a dump request of type msgType for family fam with the attributes of fn
// and returns the attributes of the replies. ENOENT (the table is gone) is no reply.
func dump(c *netlink.Conn, msgType int, fam byte, fn func(ae *netlink.AttributeEncoder)) ([][]byte, error) {
	ae := netlink.NewAttributeEncoder()
	fn(ae)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msgType),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{fam, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, m := range msgs {
		if len(m.Data) >= 4 {
			out = append(out, m.Data[4:])
		}
	}
	return out, nil
}

func decoder(b []byte) (*netlink.AttributeDecoder, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

func dumpChains(c *netlink.Conn, fam byte, table string) ([]ChainInfo, error) {
	replies, err := dump(c, unix.NFT_MSG_GETCHAIN, fam, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, table)
	})
	if err != nil {
		return nil, err
	}
	var out []ChainInfo
	for _, b := range replies {
		ad, err := decoder(b)
		if err != nil {
			return nil, err
		}
		ch := ChainInfo{Family: familyName(fam)}
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_CHAIN_TABLE:
				ch.Table = ad.String()
			case unix.NFTA_CHAIN_NAME:
				ch.Name = ad.String()
			case unix.NFTA_CHAIN_TYPE:
				ch.Type = ad.String()
			case unix.NFTA_CHAIN_POLICY:
				ch.Policy = verdictName(int32(ad.Uint32()), "")
			case unix.NFTA_CHAIN_HOOK:
				ad.Nested(func(h *netlink.AttributeDecoder) error {
					for h.Next() {
						switch h.Type() {
						case unix.NFTA_HOOK_HOOKNUM:
							ch.Hook = hookName(fam, h.Uint32())
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
		if ch.Table == table {
			out = append(out, ch)
		}
	}
	return out, nil
}

// hookName names hook number n of family fam.
func hookName(fam byte, n uint32) string {
	if fam == unix.NFPROTO_NETDEV {
		return map[uint32]string{0: "ingress", 1: "egress"}[n]
	}
	if fam == unix.NFPROTO_ARP {
		return map[uint32]string{0: "input", 1: "output", 2: "forward"}[n]
	}
	if name, ok := hookNames[n]; ok {
		return name
	}
	return fmt.Sprintf("hook-%d", n)
}

// rawRule is a rule as the kernel lists it.
type rawRule struct {
	chain   string
	handle  uint64
	exprs   []any
	comment string
}

func dumpRules(c *netlink.Conn, fam byte, table string) ([]rawRule, error) {
	replies, err := dump(c, unix.NFT_MSG_GETRULE, fam, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
	})
	if err != nil {
		return nil, err
	}
	var out []rawRule
	for _, b := range replies {
		r, tbl, err := parseRule(fam, b)
		if err != nil {
			return nil, err
		}
		if tbl == table {
			out = append(out, r)
		}
	}
	return out, nil
}

// parseRule parses the attributes of one rule. An expression that cannot be parsed
// becomes an opaque one: the rule still prints, with that expression by name.
func parseRule(fam byte, b []byte) (rawRule, string, error) {
	var r rawRule
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
			r.chain = ad.String()
		case unix.NFTA_RULE_HANDLE:
			r.handle = ad.Uint64()
		case unix.NFTA_RULE_USERDATA:
			if s, ok := userdata.GetString(ad.Bytes(), userdata.TypeComment); ok {
				r.comment = s
			}
		case unix.NFTA_RULE_EXPRESSIONS:
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					list.Nested(func(el *netlink.AttributeDecoder) error {
						r.exprs = append(r.exprs, parseExpr(fam, el))
						return nil
					})
				}
				return nil
			})
		}
	}
	return r, table, ad.Err()
}

// parseExpr parses one expression (its name and data attributes).
func parseExpr(fam byte, ad *netlink.AttributeDecoder) any {
	var name string
	var data []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_EXPR_NAME:
			name = ad.String()
		case unix.NFTA_EXPR_DATA:
			data = ad.Bytes()
		}
	}
	var e expr.Any
	switch name {
	case "ct":
		if ct, err := parseCt(data); err == nil {
			return ct
		}
		return &opaque{name}
	case "notrack":
		return &expr.Notrack{}
	case "immediate":
		imm := &expr.Immediate{}
		if err := expr.Unmarshal(fam, data, imm); err != nil {
			return &opaque{name}
		}
		if imm.Register != unix.NFT_REG_VERDICT || len(imm.Data) != 0 {
			return imm
		}
		e = &expr.Verdict{}
	case "payload":
		e = &expr.Payload{}
	case "meta":
		e = &expr.Meta{}
	case "cmp":
		e = &expr.Cmp{}
	case "range":
		e = &expr.Range{}
	case "lookup":
		e = &expr.Lookup{}
	case "bitwise":
		e = &expr.Bitwise{}
	case "nat":
		e = &expr.NAT{}
	case "masq":
		e = &expr.Masq{}
	case "redir":
		e = &expr.Redir{}
	case "numgen":
		e = &expr.Numgen{}
	case "hash":
		e = &expr.Hash{}
	case "dynset":
		e = &expr.Dynset{}
	case "reject":
		e = &expr.Reject{}
	case "fib":
		e = &expr.Fib{}
	case "counter":
		e = &expr.Counter{}
	case "log":
		e = &expr.Log{}
	case "limit":
		e = &expr.Limit{}
	case "quota":
		e = &expr.Quota{}
	case "queue":
		e = &expr.Queue{}
	case "objref":
		e = &expr.Objref{}
	case "connlimit":
		e = &expr.Connlimit{}
	case "exthdr":
		e = &expr.Exthdr{}
	case "match":
		e = &expr.Match{}
	case "target":
		e = &expr.Target{}
	default:
		return &opaque{name}
	}
	if err := expr.Unmarshal(fam, data, e); err != nil {
		return &opaque{name}
	}
	return e
}

// parseCt parses a ct expression, whose direction is one byte (google/nftables v0.3.0
// reads four and fails).
func parseCt(data []byte) (*expr.Ct, error) {
	ad, err := decoder(data)
	if err != nil {
		return nil, err
	}
	e := &expr.Ct{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CT_KEY:
			e.Key = expr.CtKey(ad.Uint32())
		case unix.NFTA_CT_DREG:
			e.Register = ad.Uint32()
		case unix.NFTA_CT_SREG:
			e.Register, e.SourceRegister = ad.Uint32(), true
		case unix.NFTA_CT_DIRECTION:
			e.Direction = uint32(ad.Uint8())
		}
	}
	return e, ad.Err()
}

// dumpSets reads the sets of a table, with the elements of the anonymous ones.
func dumpSets(c *netlink.Conn, fam byte, table string) (map[string]SetInfo, error) {
	replies, err := dump(c, unix.NFT_MSG_GETSET, fam, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_TABLE, table)
	})
	if err != nil {
		return nil, err
	}
	sets := make(map[string]SetInfo)
	for _, b := range replies {
		ad, err := decoder(b)
		if err != nil {
			return nil, err
		}
		var s SetInfo
		var tbl string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_TABLE:
				tbl = ad.String()
			case unix.NFTA_SET_NAME:
				s.Name = ad.String()
			case unix.NFTA_SET_FLAGS:
				f := ad.Uint32()
				s.Map = f&unix.NFT_SET_MAP != 0
				s.Interval = f&unix.NFT_SET_INTERVAL != 0
				s.Anonymous = f&unix.NFT_SET_ANONYMOUS != 0
			case unix.NFTA_SET_KEY_LEN:
				s.KeyLen = ad.Uint32()
			case unix.NFTA_SET_DATA_TYPE:
				s.VerdictMap = ad.Uint32() == unix.NFT_DATA_VERDICT
			case unix.NFTA_SET_DATA_LEN:
				s.DataLen = ad.Uint32()
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		if tbl != table {
			continue
		}
		if s.Anonymous {
			if s.Elems, err = dumpElems(c, fam, table, s.Name); err != nil {
				return nil, fmt.Errorf("elements of set %s: %w", s.Name, err)
			}
		}
		sets[s.Name] = s
	}
	return sets, nil
}

func dumpElems(c *netlink.Conn, fam byte, table, set string) ([]SetElem, error) {
	replies, err := dump(c, unix.NFT_MSG_GETSETELEM, fam, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, table)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	})
	if err != nil {
		return nil, err
	}
	var out []SetElem
	value := func(ad *netlink.AttributeDecoder) (v []byte, verdict string) {
		ad.Nested(func(d *netlink.AttributeDecoder) error {
			for d.Next() {
				switch d.Type() {
				case unix.NFTA_DATA_VALUE:
					v = d.Bytes()
				case unix.NFTA_DATA_VERDICT:
					d.Nested(func(vd *netlink.AttributeDecoder) error {
						verdict = decodeVerdict(vd)
						return nil
					})
				}
			}
			return nil
		})
		return v, verdict
	}
	for _, b := range replies {
		ad, err := decoder(b)
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				continue
			}
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					list.Nested(func(el *netlink.AttributeDecoder) error {
						var e SetElem
						for el.Next() {
							switch el.Type() {
							case unix.NFTA_SET_ELEM_KEY:
								e.Key, _ = value(el)
							case 10: // NFTA_SET_ELEM_KEY_END
								e.KeyEnd, _ = value(el)
							case unix.NFTA_SET_ELEM_FLAGS:
								e.IntervalEnd = el.Uint32()&unix.NFT_SET_ELEM_INTERVAL_END != 0
							case unix.NFTA_SET_ELEM_DATA:
								e.Data, e.Verdict = value(el)
							}
						}
						out = append(out, e)
						return nil
					})
				}
				return nil
			})
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// chain returns the chain family/table/name of the catalog.
func (c *Catalog) chain(family, table, name string) (ChainInfo, bool) {
	for _, ch := range c.Chains {
		if ch.Family == family && ch.Table == table && ch.Name == name {
			return ch, true
		}
	}
	return ChainInfo{}, false
}

// rule returns the rule of handle h of table family/table.
func (c *Catalog) rule(family, table string, h uint64) (RuleInfo, bool) {
	for _, r := range c.Rules {
		if r.Family == family && r.Table == table && r.Handle == h {
			return r, true
		}
	}
	return RuleInfo{}, false
}

// link returns the name of interface index i ("if#i" when unknown, "" for 0).
func (c *Catalog) link(i int) string {
	if i == 0 {
		return ""
	}
	for _, l := range c.Links {
		if l.Index == i {
			return l.Name
		}
	}
	return fmt.Sprintf("if#%d", i)
}
