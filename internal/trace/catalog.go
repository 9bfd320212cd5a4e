package trace

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	vnl "github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/nftwire"
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

// RuleInfo is one rule, printed in nft syntax (nftwire's printer).
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
	c, err := nftwire.Dial(nsFD)
	if err != nil {
		return cat, fmt.Errorf("read nftables: %w", err)
	}
	defer c.Close()
	for _, t := range tables {
		fam, ok := familyNumber(t.Family)
		if !ok {
			continue
		}
		f := nftables.TableFamily(fam)
		chains, err := nftwire.DumpChains(c, f, t.Name)
		if err != nil {
			return cat, fmt.Errorf("list chains of table %s %s: %w", t.Family, t.Name, err)
		}
		for _, ch := range chains {
			info := ChainInfo{Family: t.Family, Table: t.Name, Name: ch.Name, Type: ch.Type, Policy: ch.Policy}
			if ch.Type != "" {
				info.Hook, info.Priority = hookName(fam, ch.Hook), ch.Priority
			}
			cat.Chains = append(cat.Chains, info)
		}
		sets, err := nftwire.DumpSets(c, f, t.Name)
		if err != nil {
			return cat, fmt.Errorf("list sets of table %s %s: %w", t.Family, t.Name, err)
		}
		rules, err := nftwire.DumpRules(c, f, t.Name, "")
		if err != nil {
			return cat, fmt.Errorf("list rules of table %s %s: %w", t.Family, t.Name, err)
		}
		table := nftwire.Table{Family: f, Sets: sets}
		for _, r := range rules {
			cat.Rules = append(cat.Rules, RuleInfo{
				Family: t.Family, Table: t.Name, Chain: r.Chain, Handle: r.Handle,
				Text: table.PrintRule(r), Comment: r.Comment,
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
