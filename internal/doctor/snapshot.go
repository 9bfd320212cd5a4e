package doctor

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/podnet/podnet/api"
)

// Snapshot is what the doctor read from one node network namespace: the input of the
// rules (Diagnose), and what `podnet doctor --save-snapshot` writes as JSON. Names are
// interface names of that namespace; a sandbox's side of a veth is in Link.Peer.
type Snapshot struct {
	// Namespace says which namespace this is, for people ("/run/netns/node1").
	Namespace string `json:"namespace,omitempty"`
	// ExecPrefix is what a person puts before a command to run it in that namespace
	// ("ip netns exec node1 "); empty for the caller's own.
	ExecPrefix string      `json:"exec_prefix,omitempty"`
	Links      []Link      `json:"links"`
	Routes     []Route     `json:"routes"`
	Rules      []Rule      `json:"rules,omitempty"`
	Neighbours []Neighbour `json:"neighbours,omitempty"`
	FDB        []FDBEntry  `json:"fdb,omitempty"`
	// Sysctls maps /proc/sys keys with slashes ("net/ipv4/conf/eth0/rp_filter") to
	// their values; a key that does not exist is absent.
	Sysctls map[string]string `json:"sysctls"`
	// Tables are the nftables tables of every owner and the legacy iptables tables
	// (NftTable.Legacy).
	Tables    []NftTable `json:"nftables,omitempty"`
	IPSets    []IPSet    `json:"ipsets,omitempty"`
	Conntrack *Conntrack `json:"conntrack,omitempty"`
	// NeighTables are the machine's ARP and NDP tables (global, not the namespace's).
	NeighTables []NeighTable `json:"neigh_tables,omitempty"`
	// RPFilterDrops is TcpExt IPReversePathFilter of the namespace: packets the reverse
	// path filter dropped since it was created; -1 unknown.
	RPFilterDrops int64        `json:"rp_filter_drops"`
	ResolvConfs   []ResolvConf `json:"resolv_confs,omitempty"`
	// Intended is what the podnet agent serving this namespace keeps in its store; nil
	// when no agent serves it.
	Intended *Intended `json:"intended,omitempty"`
	// Notes say what the collector could not see.
	Notes []string `json:"notes,omitempty"`
}

// Link is one interface of the node.
type Link struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// Kind is the link type as netlink names it: veth, bridge, vxlan, ipip, device...
	Kind   string `json:"kind"`
	MAC    string `json:"mac,omitempty"`
	MTU    int    `json:"mtu"`
	Up     bool   `json:"up"`
	Master string `json:"master,omitempty"`
	// PeerIndex is IFLA_LINK: for a veth, its peer's index in the peer's namespace.
	PeerIndex int `json:"peer_index,omitempty"`
	// NetnsID is IFLA_LINK_NETNSID, the node's id of the peer's namespace; -1 when the
	// peer is in the node itself (or the link has none).
	NetnsID int            `json:"link_netnsid"`
	Addrs   []netip.Prefix `json:"addrs,omitempty"`
	Tunnel  *Tunnel        `json:"tunnel,omitempty"`
	// Peer is the sandbox side of a veth whose peer is in another namespace, when the
	// collector could find that namespace.
	Peer *Peer `json:"peer,omitempty"`
	// TCX are the eBPF programs attached at the link's tcx ingress hook, in the order
	// they run: podnet's fast path (fastpath.ProgName), or another tool's.
	TCX []TCXProgram `json:"tcx,omitempty"`
}

// TCXProgram is an eBPF program attached at a tcx hook.
type TCXProgram struct {
	ID   uint32 `json:"id"`
	Name string `json:"name"`
	// LinkID is the bpf link that holds it (bpftool link), 0 when none does.
	LinkID uint32 `json:"link_id,omitempty"`
}

// Tunnel is what matters of an overlay device (vxlan, ipip, gre, geneve).
type Tunnel struct {
	ID int `json:"id,omitempty"` // VNI
	// Dev is the underlay device the tunnel is bound to ("" when unbound).
	Dev    string     `json:"dev,omitempty"`
	Local  netip.Addr `json:"local,omitzero"`
	Remote netip.Addr `json:"remote,omitzero"` // vxlan: group or remote
	Port   int        `json:"port,omitempty"`
	// Learning: the vxlan device learns FDB entries from received packets.
	Learning bool `json:"learning,omitempty"`
}

// Peer is the sandbox end of a veth.
type Peer struct {
	// Netns names the sandbox namespace ("/run/netns/web", "/proc/1234/ns/net").
	Netns string         `json:"netns"`
	Name  string         `json:"name"`
	MAC   string         `json:"mac"`
	MTU   int            `json:"mtu"`
	Addrs []netip.Prefix `json:"addrs,omitempty"`
	// Gateways are the next hops of the sandbox's routes through this interface.
	Gateways []netip.Addr `json:"gateways,omitempty"`
}

// Route is one route of any table, as `ip route show table all` lists it.
type Route struct {
	Table int `json:"table"`
	// Type is unicast, local, broadcast, blackhole, unreachable, prohibit, throw...
	Type   string       `json:"type"`
	Dst    netip.Prefix `json:"dst"`
	Gw     netip.Addr   `json:"gw,omitzero"`
	Dev    string       `json:"dev,omitempty"`
	Src    netip.Addr   `json:"src,omitzero"`
	Proto  string       `json:"proto,omitempty"`
	Scope  string       `json:"scope,omitempty"`
	Metric int          `json:"metric,omitempty"`
	// Nexthops are the paths of a multipath route (Gw and Dev are then empty).
	Nexthops []Nexthop `json:"nexthops,omitempty"`
}

// Nexthop is one path of a multipath route.
type Nexthop struct {
	Gw  netip.Addr `json:"gw,omitzero"`
	Dev string     `json:"dev"`
}

// Routing tables with names.
const (
	tableDefault = 253
	tableMain    = 254
	tableLocal   = 255
)

// String prints r as `ip route` does (table, type and metric only when they matter).
func (r Route) String() string {
	var b strings.Builder
	if r.Type != "" && r.Type != "unicast" {
		b.WriteString(r.Type + " ")
	}
	if r.Dst.Bits() == 0 {
		b.WriteString("default")
	} else if r.Dst.IsSingleIP() {
		b.WriteString(r.Dst.Addr().String())
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Gw.IsValid() {
		b.WriteString(" via " + r.Gw.String())
	}
	if r.Dev != "" {
		b.WriteString(" dev " + r.Dev)
	}
	for _, nh := range r.Nexthops {
		b.WriteString(" nexthop")
		if nh.Gw.IsValid() {
			b.WriteString(" via " + nh.Gw.String())
		}
		b.WriteString(" dev " + nh.Dev)
	}
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	if t := tableName(r.Table); t != "main" {
		b.WriteString(" table " + t)
	}
	return b.String()
}

// devs returns the devices r leaves through.
func (r Route) devs() []string {
	if len(r.Nexthops) == 0 {
		return []string{r.Dev}
	}
	var out []string
	for _, nh := range r.Nexthops {
		out = append(out, nh.Dev)
	}
	return out
}

// via reports whether r leaves through dev (on one of its paths).
func (r Route) via(dev string) bool {
	for _, d := range r.devs() {
		if d == dev {
			return true
		}
	}
	return false
}

func (r Route) same(o Route) bool {
	return r.String() == o.String() && r.Type == o.Type
}

func tableName(t int) string {
	switch t {
	case tableLocal:
		return "local"
	case tableMain, 0:
		return "main"
	case tableDefault:
		return "default"
	}
	return fmt.Sprint(t)
}

// Rule is one policy routing rule.
type Rule struct {
	Family   int `json:"family"` // 4 or 6
	Priority int `json:"priority"`
	// Action is lookup, goto, nop, blackhole, unreachable or prohibit.
	Action string       `json:"action"`
	Table  int          `json:"table,omitempty"`
	Src    netip.Prefix `json:"src,omitzero"`
	Dst    netip.Prefix `json:"dst,omitzero"`
	Iif    string       `json:"iif,omitempty"`
	Oif    string       `json:"oif,omitempty"`
	Mark   uint32       `json:"fwmark,omitempty"`
	Invert bool         `json:"not,omitempty"`
	// Other: the rule has selectors the doctor does not evaluate (ports, protocol,
	// uid range, tos, tunnel id); such a rule is taken not to match.
	Other bool `json:"other,omitempty"`
	// SuppressPrefixlen: results with a prefix this long or shorter are ignored; -1 none.
	SuppressPrefixlen int `json:"suppress_prefixlength"`
}

// Neighbour is one ARP/NDP entry.
type Neighbour struct {
	Dev   string     `json:"dev"`
	IP    netip.Addr `json:"ip"`
	MAC   string     `json:"lladdr,omitempty"`
	State string     `json:"state"` // PERMANENT, REACHABLE, STALE, NOARP, FAILED...
}

// String prints n as `ip neigh` does.
func (n Neighbour) String() string {
	s := "neigh " + n.IP.String()
	if n.MAC != "" {
		s += " lladdr " + n.MAC
	}
	return s + " dev " + n.Dev + " " + n.State
}

// FDBEntry is one forwarding database entry of a bridge or a vxlan device.
type FDBEntry struct {
	Dev    string     `json:"dev"`
	MAC    string     `json:"mac"`
	Dst    netip.Addr `json:"dst,omitzero"`
	Master string     `json:"master,omitempty"`
	State  string     `json:"state,omitempty"`
}

// NftTable is one nftables table of any owner.
type NftTable struct {
	Family string `json:"family"` // ip, ip6, inet, arp, bridge, netdev
	Name   string `json:"name"`
	// Legacy: a table of legacy iptables (ip_tables, read with getsockopt), not of
	// nftables; its jumps carry rule numbers, not handles.
	Legacy bool       `json:"legacy,omitempty"`
	Chains []NftChain `json:"chains,omitempty"`
	Sets   []string   `json:"sets,omitempty"`
}

// NftChain is one chain; Jumps and Drops are read only for tables that hold chains of
// another plugin.
type NftChain struct {
	Name string `json:"name"`
	// Hook is set for a base chain (prerouting, input, forward, output, postrouting...).
	Hook   string    `json:"hook,omitempty"`
	Policy string    `json:"policy,omitempty"`
	Rules  int       `json:"rules"`
	Jumps  []NftJump `json:"jumps,omitempty"`
	// Drops counts rules with a drop or reject verdict.
	Drops int `json:"drops,omitempty"`
}

// NftJump is a rule that jumps (or goes) to another chain.
type NftJump struct {
	Target string `json:"target"`
	Handle uint64 `json:"handle,omitempty"`
	// Rule is the 1-based position of the rule in its chain (legacy iptables).
	Rule int `json:"rule,omitempty"`
}

// IPSet is one ipset of the namespace (the sets legacy iptables rules match on).
type IPSet struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Entries int    `json:"entries"`
	// References counts the iptables rules and list:set sets that use the set.
	References int `json:"references"`
}

// Intended is the podnet agent's records of one node: what the kernel should hold.
type Intended struct {
	// Agent is the agent's version.
	Agent     string         `json:"agent"`
	Networks  []api.Network  `json:"networks"`
	Endpoints []api.Endpoint `json:"endpoints"`
}

// Conntrack is the connection tracking table of the namespace.
type Conntrack struct {
	Count int64 `json:"count"`
	// Max is nf_conntrack_max (global: read-only outside the initial namespace).
	Max     int64 `json:"max"`
	Buckets int64 `json:"buckets,omitempty"`
	// Drop, EarlyDrop and InsertFailed sum /proc/net/stat/nf_conntrack over the CPUs.
	Drop         int64 `json:"drop"`
	EarlyDrop    int64 `json:"early_drop"`
	InsertFailed int64 `json:"insert_failed"`
}

// NeighTable is one of the kernel's neighbour tables (ARP, NDP): one for the whole
// machine, its entries and limits shared by every namespace.
type NeighTable struct {
	Name string `json:"name"` // "arp_cache" | "ndisc_cache"
	// Entries is the table's current number of entries, of every namespace.
	Entries int64 `json:"entries"`
	// GCThresh2 and GCThresh3 are the soft and hard limits
	// (net.ipv4.neigh.default.gc_thresh2/3, or ipv6): above the hard one, an entry is
	// refused unless one older than 5 s can be collected.
	GCThresh2 int64 `json:"gc_thresh2"`
	GCThresh3 int64 `json:"gc_thresh3"`
	// TableFulls counts the entries refused since boot (table_fulls).
	TableFulls int64 `json:"table_fulls"`
}

// ResolvConf is one resolv.conf the doctor was asked to check, and what its search
// domains answered.
type ResolvConf struct {
	Path string `json:"path"`
	// Sandboxes are the pod namespaces whose processes see this file (the first one's
	// process named in Path); none for a file given to the doctor.
	Sandboxes   []string   `json:"sandboxes,omitempty"`
	Nameservers []string   `json:"nameservers,omitempty"`
	Search      []string   `json:"search,omitempty"`
	Ndots       int        `json:"ndots"`
	Probes      []DNSProbe `json:"probes,omitempty"`
}

// DNSProbe is one query for a random label under a search domain.
type DNSProbe struct {
	Domain string `json:"domain"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	// Server is the nameserver that answered (or the last one tried).
	Server  string   `json:"server,omitempty"`
	Rcode   string   `json:"rcode,omitempty"`
	Answers []string `json:"answers,omitempty"`
	Err     string   `json:"error,omitempty"`
}

// sysctlName prints a /proc/sys key as sysctl does: dots between levels, dots inside
// a level (an interface name such as flannel.1) become slashes.
func sysctlName(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, ".", "/")
	}
	return strings.Join(parts, ".")
}
