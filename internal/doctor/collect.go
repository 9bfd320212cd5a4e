package doctor

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/fastpath"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/xtables"
)

// Options of Collect.
type Options struct {
	// Name says which namespace ns is: its path, or "" for the caller's own. It names
	// the namespace in the report and in the fixes ("ip netns exec NAME ...").
	Name string
	// ResolvConfs are resolv.conf files whose search domains to probe.
	ResolvConfs []string
	// DNSTimeout bounds each DNS query (default 1 s).
	DNSTimeout time.Duration
	// Intended is the podnet agent's records when an agent manages ns (nil: none).
	Intended *Intended
}

// dumpRetries bounds the retries of a netlink dump interrupted by concurrent changes.
const dumpRetries = 5

// Collect reads the network namespace ns into a snapshot: everything through netlink
// and nftables sockets bound to ns and /proc/sys read from a thread inside it; it
// never changes anything (the only packets it sends are the DNS probes, from inside
// ns). What it could not read is in Snapshot.Notes, unless nothing at all could be
// read (an error).
//
// Sandboxes: a veth whose peer is in another namespace carries that namespace's id
// (IFLA_LINK_NETNSID). Collect finds the namespace among the named ones (/run/netns),
// those of running processes (/proc/PID/ns/net) and those held open by a process
// (/proc/PID/fd), and reads the peer there (MAC, MTU, addresses, gateways). A
// namespace that nothing names or holds any more cannot be found: the peer stays
// unknown (a note says how many).
func Collect(ctx context.Context, ns netns.NsHandle, opts Options) (*Snapshot, error) {
	s := &Snapshot{Namespace: opts.Name, ExecPrefix: ExecPrefix(opts.Name), Sysctls: map[string]string{}, RPFilterDrops: -1, Intended: opts.Intended}
	if s.Namespace == "" {
		s.Namespace = "this namespace"
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in namespace: %w", err)
	}
	defer h.Close()
	if err := collectNetlink(h, s); err != nil {
		return nil, err
	}
	if err := collectTCX(ns, s); err != nil {
		s.Notes = append(s.Notes, "eBPF programs at tcx ingress: "+err.Error())
	}
	if err := collectRules(ns, s); err != nil {
		s.Notes = append(s.Notes, "policy routing rules: "+err.Error()+" (the kernel's default rules were assumed)")
	}
	if err := collectProc(ns, s); err != nil {
		return nil, err
	}
	s.NeighTables = collectNeighTables()
	if err := collectNftables(ns, s); err != nil {
		s.Notes = append(s.Notes, "nftables: "+err.Error())
	}
	if err := collectLegacy(ns, s); err != nil {
		s.Notes = append(s.Notes, "legacy iptables and ipsets: "+err.Error())
	}
	sandboxes := collectPeers(h, ns, s)
	timeout := opts.DNSTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	for _, path := range opts.ResolvConfs {
		rc, notes, err := probeResolvConf(ctx, ns, path, timeout)
		if err != nil {
			return nil, fmt.Errorf("--resolv-conf: %w", err)
		}
		s.ResolvConfs = append(s.ResolvConfs, rc)
		s.Notes = append(s.Notes, notes...)
	}
	// The pods' own resolv.conf, asked from inside the pod: its nameservers are what
	// the pod reaches.
	for _, src := range sandboxResolvConfs(sandboxes) {
		if err := probeSandbox(ctx, s, src, timeout); err != nil {
			s.Notes = append(s.Notes, fmt.Sprintf("resolv.conf of sandbox %s: %v", src.sandboxes[0], err))
		}
	}
	return s, nil
}

// ReadIntended reads the records of the agent c talks to, for Options.Intended.
func ReadIntended(ctx context.Context, c *api.Client) (*Intended, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	in := &Intended{Agent: st.Version}
	if in.Networks, err = c.Networks(ctx); err != nil {
		return nil, err
	}
	if in.Endpoints, err = c.Endpoints(ctx, ""); err != nil {
		return nil, err
	}
	return in, nil
}

// probeSandbox probes the search domains of one sandbox resolv.conf from inside the
// sandbox.
func probeSandbox(ctx context.Context, s *Snapshot, src sandboxResolvConf, timeout time.Duration) error {
	ns, err := netns.GetFromPath(src.netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	rc, notes, err := probeResolvConf(ctx, ns, src.path, timeout)
	if err != nil {
		return err
	}
	rc.Sandboxes = src.sandboxes
	s.ResolvConfs = append(s.ResolvConfs, rc)
	s.Notes = append(s.Notes, notes...)
	return nil
}

// collectLegacy reads the legacy iptables tables (as Tables with Legacy set) and the
// ipsets of ns.
func collectLegacy(ns netns.NsHandle, s *Snapshot) error {
	var tables []xtables.Table
	var sets []xtables.Set
	err := kernel.Do(ns, func() (err error) {
		if tables, err = xtables.Tables(); err != nil {
			return err
		}
		sets, err = xtables.Sets()
		return err
	})
	if err != nil {
		return err
	}
	for _, t := range tables {
		st := NftTable{Family: t.Family, Name: t.Name, Legacy: true}
		for _, c := range t.Chains {
			sc := NftChain{Name: c.Name, Hook: c.Hook, Policy: c.Policy, Rules: c.Rules, Drops: c.Drops}
			for _, j := range c.Jumps {
				sc.Jumps = append(sc.Jumps, NftJump{Target: j.Target, Rule: j.Rule})
			}
			st.Chains = append(st.Chains, sc)
		}
		s.Tables = append(s.Tables, st)
	}
	for _, set := range sets {
		s.IPSets = append(s.IPSets, IPSet{Name: set.Name, Type: set.Type, Entries: set.Entries, References: set.References})
	}
	return nil
}

// retry runs a netlink dump again while the kernel reports it interrupted.
func retry(dump func() error) error {
	var err error
	for range dumpRetries {
		if err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

func collectNetlink(h *netlink.Handle, s *Snapshot) error {
	var links []netlink.Link
	if err := retry(func() (err error) { links, err = h.LinkList(); return err }); err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var addrs []netlink.Addr
	if err := retry(func() (err error) { addrs, err = h.AddrList(nil, netlink.FAMILY_ALL); return err }); err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	byLink := map[int][]netip.Prefix{}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			byLink[a.LinkIndex] = append(byLink[a.LinkIndex], p)
		}
	}
	for _, l := range links {
		a := l.Attrs()
		sl := Link{Index: a.Index, Name: a.Name, Kind: l.Type(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0,
			Master: names[a.MasterIndex], NetnsID: a.NetNsID, Addrs: byLink[a.Index]}
		if len(a.HardwareAddr) == 6 {
			sl.MAC = a.HardwareAddr.String()
		}
		if _, veth := l.(*netlink.Veth); veth {
			sl.PeerIndex = a.ParentIndex
		}
		if t, ok := kernel.TunnelOf(l, names); ok {
			sl.Tunnel = &Tunnel{ID: t.ID, Dev: t.Dev, Local: t.Local, Remote: t.Remote, Port: t.Port, Learning: t.Learning}
		}
		s.Links = append(s.Links, sl)
	}

	var routes []netlink.Route
	if err := retry(func() (err error) {
		routes, err = h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		return err
	}); err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		sr, ok := route(r, names)
		if ok {
			s.Routes = append(s.Routes, sr)
		}
	}

	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var neighs []netlink.Neigh
		if err := retry(func() (err error) { neighs, err = h.NeighList(0, fam); return err }); err != nil {
			return fmt.Errorf("list neighbours: %w", err)
		}
		for _, n := range neighs {
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			sn := Neighbour{Dev: names[n.LinkIndex], IP: ip.Unmap(), State: nudState(n.State)}
			if len(n.HardwareAddr) > 0 {
				sn.MAC = n.HardwareAddr.String()
			}
			s.Neighbours = append(s.Neighbours, sn)
		}
	}
	tunnels := map[string]bool{}
	for _, l := range s.Links {
		if l.Tunnel != nil {
			tunnels[l.Name] = true
		}
	}
	if len(tunnels) > 0 {
		var fdb []netlink.Neigh
		if err := retry(func() (err error) { fdb, err = h.NeighList(0, unix.AF_BRIDGE); return err }); err != nil {
			return fmt.Errorf("list fdb: %w", err)
		}
		for _, e := range fdb {
			if !tunnels[names[e.LinkIndex]] {
				continue // bridge port entries are not used by the rules
			}
			se := FDBEntry{Dev: names[e.LinkIndex], MAC: e.HardwareAddr.String(), Master: names[e.MasterIndex], State: nudState(e.State)}
			if ip, ok := netip.AddrFromSlice(e.IP); ok {
				se.Dst = ip.Unmap()
			}
			s.FDB = append(s.FDB, se)
		}
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a, bits), true
}

// addrOf16 converts a netlink address (nil, 4 or 16 bytes) to a netip.Addr.
func addrOf16(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || a.Unmap().IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

var routeTypes = map[int]string{
	unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast",
	unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast", unix.RTN_BLACKHOLE: "blackhole",
	unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit", unix.RTN_THROW: "throw", unix.RTN_NAT: "nat",
}

func route(r netlink.Route, names map[int]string) (Route, bool) {
	var dst netip.Prefix
	switch {
	case r.Dst != nil:
		p, ok := prefixOf(r.Dst)
		if !ok {
			return Route{}, false
		}
		dst = p
	case r.Family == netlink.FAMILY_V4:
		dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	case r.Family == netlink.FAMILY_V6:
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	default:
		return Route{}, false
	}
	sr := Route{Table: r.Table, Type: routeTypes[r.Type], Dst: dst, Gw: addrOf16(r.Gw), Dev: names[r.LinkIndex],
		Src: addrOf16(r.Src), Proto: r.Protocol.String(), Scope: r.Scope.String(), Metric: r.Priority}
	if sr.Type == "" {
		sr.Type = "unicast"
	}
	for _, nh := range r.MultiPath {
		sr.Nexthops = append(sr.Nexthops, Nexthop{Gw: addrOf16(nh.Gw), Dev: names[nh.LinkIndex]})
	}
	return sr, true
}

func nudState(s int) string {
	switch {
	case s&netlink.NUD_PERMANENT != 0:
		return "PERMANENT"
	case s&netlink.NUD_NOARP != 0:
		return "NOARP"
	case s&netlink.NUD_REACHABLE != 0:
		return "REACHABLE"
	case s&netlink.NUD_STALE != 0:
		return "STALE"
	case s&netlink.NUD_DELAY != 0:
		return "DELAY"
	case s&netlink.NUD_PROBE != 0:
		return "PROBE"
	case s&netlink.NUD_FAILED != 0:
		return "FAILED"
	case s&netlink.NUD_INCOMPLETE != 0:
		return "INCOMPLETE"
	}
	return "NONE"
}

// Attributes of a fib rule (linux/fib_rules.h).
const (
	fraDst               = 1
	fraSrc               = 2
	fraIifname           = 3
	fraGoto              = 4
	fraPriority          = 6
	fraFwmark            = 10
	fraTunID             = 12
	fraSuppressPrefixlen = 14
	fraTable             = 15
	fraOifname           = 17
	fraUIDRange          = 20
	fraIPProto           = 22
	fraSportRange        = 23
	fraDportRange        = 24
	fibRuleInvert        = 0x2
)

var ruleActions = map[byte]string{1: "lookup", 2: "goto", 3: "nop", 6: "blackhole", 7: "unreachable", 8: "prohibit"}

// collectRules dumps the policy routing rules. It reads the dump itself: the netlink
// library drops each rule's action (lookup, blackhole, ...).
func collectRules(ns netns.NsHandle, s *Snapshot) error {
	c, err := mdnl.Dial(unix.NETLINK_ROUTE, &mdnl.Config{NetNS: int(ns)})
	if err != nil {
		return err
	}
	defer c.Close()
	msgs, err := c.Execute(mdnl.Message{
		Header: mdnl.Header{Type: unix.RTM_GETRULE, Flags: mdnl.Request | mdnl.Dump},
		Data:   make([]byte, 12), // struct fib_rule_hdr, family AF_UNSPEC
	})
	if err != nil {
		return fmt.Errorf("dump rules: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 12 {
			continue
		}
		hdr := m.Data[:12]
		r := Rule{Priority: 0, Action: ruleActions[hdr[7]], Table: int(hdr[4]), SuppressPrefixlen: -1,
			Invert: binary.NativeEndian.Uint32(hdr[8:12])&fibRuleInvert != 0, Other: hdr[3] != 0}
		switch hdr[0] {
		case unix.AF_INET:
			r.Family = 4
		case unix.AF_INET6:
			r.Family = 6
		default:
			continue
		}
		if r.Action == "" {
			r.Action = fmt.Sprintf("action-%d", hdr[7])
		}
		ad, err := mdnl.NewAttributeDecoder(m.Data[12:])
		if err != nil {
			return err
		}
		for ad.Next() {
			switch ad.Type() {
			case fraDst:
				r.Dst = attrPrefix(ad.Bytes(), hdr[1])
			case fraSrc:
				r.Src = attrPrefix(ad.Bytes(), hdr[2])
			case fraIifname:
				r.Iif = ad.String()
			case fraOifname:
				r.Oif = ad.String()
			case fraGoto:
				r.Table = int(ad.Uint32())
			case fraPriority:
				r.Priority = int(ad.Uint32())
			case fraFwmark:
				r.Mark = ad.Uint32()
			case fraTable:
				r.Table = int(ad.Uint32())
			case fraSuppressPrefixlen:
				if v := ad.Uint32(); v != 0xffffffff {
					r.SuppressPrefixlen = int(v)
				}
			case fraTunID, fraUIDRange, fraIPProto, fraSportRange, fraDportRange:
				r.Other = true
			}
		}
		if err := ad.Err(); err != nil {
			return err
		}
		s.Rules = append(s.Rules, r)
	}
	return nil
}

func attrPrefix(b []byte, bits byte) netip.Prefix {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, int(bits))
}

// collectProc reads the sysctls and counters of ns from a thread inside it.
func collectProc(ns netns.NsHandle, s *Snapshot) error {
	keys := []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
		"net/netfilter/nf_conntrack_count", "net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_buckets"}
	// Not those of bridge ports: the bridge, not its port, holds the IPv4 settings that
	// apply to what its ports carry. (Each read costs an open of /proc/sys: a thousand
	// bridged pods would make three thousand of them for nothing.)
	for _, dev := range append([]string{"all", "default"}, unbridged(s)...) {
		for _, k := range []string{"rp_filter", "proxy_arp", "forwarding"} {
			keys = append(keys, "net/ipv4/conf/"+dev+"/"+k)
		}
	}
	var ctStat, netstat []byte
	err := kernel.Do(ns, func() error {
		for _, k := range keys {
			b, err := os.ReadFile("/proc/sys/" + k)
			if err != nil {
				continue // absent: no such interface any more, no conntrack, no IPv6
			}
			s.Sysctls[k] = strings.TrimSpace(string(b))
		}
		// /proc/net is the process's namespace; thread-self/net is this thread's.
		ctStat, _ = os.ReadFile("/proc/thread-self/net/stat/nf_conntrack")
		netstat, _ = os.ReadFile("/proc/thread-self/net/netstat")
		return nil
	})
	if err != nil {
		return fmt.Errorf("read /proc/sys in namespace: %w", err)
	}
	if max, ok := s.Sysctls["net/netfilter/nf_conntrack_max"]; ok {
		ct := &Conntrack{}
		ct.Max, _ = strconv.ParseInt(max, 10, 64)
		ct.Count, _ = strconv.ParseInt(s.Sysctls["net/netfilter/nf_conntrack_count"], 10, 64)
		ct.Buckets, _ = strconv.ParseInt(s.Sysctls["net/netfilter/nf_conntrack_buckets"], 10, 64)
		stat := parseConntrackStat(string(ctStat))
		ct.Drop, ct.EarlyDrop, ct.InsertFailed = stat["drop"], stat["early_drop"], stat["insert_failed"]
		s.Conntrack = ct
	}
	if v, ok := parseNetstat(string(netstat), "TcpExt", "IPReversePathFilter"); ok {
		s.RPFilterDrops = v
	}
	return nil
}

// collectNeighTables reads the machine's neighbour tables: their statistics, which only
// the initial namespace lists (/proc/1/net), and their limits, which only it has as
// sysctls (read in the doctor's own namespace; none when that is another one).
func collectNeighTables() []NeighTable {
	var out []NeighTable
	for _, t := range []struct{ name, family string }{{"arp_cache", "ipv4"}, {"ndisc_cache", "ipv6"}} {
		stat, err := os.ReadFile("/proc/1/net/stat/" + t.name)
		if err != nil {
			continue
		}
		limit := func(k string) int64 {
			b, _ := os.ReadFile("/proc/sys/net/" + t.family + "/neigh/default/" + k)
			v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return v
		}
		nt := NeighTable{Name: t.name, GCThresh2: limit("gc_thresh2"), GCThresh3: limit("gc_thresh3")}
		nt.Entries, nt.TableFulls = parseNeighStat(string(stat))
		out = append(out, nt)
	}
	return out
}

// parseNeighStat returns entries (the table's, repeated on every CPU's line) and the
// sum of table_fulls over the CPUs of /proc/net/stat/arp_cache or ndisc_cache.
func parseNeighStat(text string) (entries, tableFulls int64) {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) < 2 {
		return 0, 0
	}
	names := strings.Fields(lines[0])
	for i, l := range lines[1:] {
		for j, f := range strings.Fields(l) {
			if j >= len(names) {
				break
			}
			v, _ := strconv.ParseInt(f, 16, 64)
			switch {
			case names[j] == "entries" && i == 0:
				entries = v
			case names[j] == "table_fulls":
				tableFulls += v
			}
		}
	}
	return entries, tableFulls
}

// unbridged lists the links that are no bridge's port.
func unbridged(s *Snapshot) []string {
	var names []string
	for _, l := range s.Links {
		if l.Master == "" {
			names = append(names, l.Name)
		}
	}
	return names
}

// parseConntrackStat sums the per-CPU columns of /proc/net/stat/nf_conntrack (a header
// line of names, then one line of hexadecimal numbers per CPU).
func parseConntrackStat(text string) map[string]int64 {
	out := map[string]int64{}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) < 2 {
		return out
	}
	names := strings.Fields(lines[0])
	for _, l := range lines[1:] {
		for i, f := range strings.Fields(l) {
			if i < len(names) {
				v, _ := strconv.ParseInt(f, 16, 64)
				out[names[i]] += v
			}
		}
	}
	return out
}

// parseNetstat returns the counter name of group in /proc/net/netstat (pairs of lines:
// "Group: names..." then "Group: values...").
func parseNetstat(text, group, name string) (int64, bool) {
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != group+":" || len(values) != len(names) {
			continue
		}
		for j, n := range names {
			if n == name {
				v, err := strconv.ParseInt(values[j], 10, 64)
				return v, err == nil
			}
		}
	}
	return 0, false
}

var nftFamilies = map[nftables.TableFamily]string{
	nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6", nftables.TableFamilyINet: "inet",
	nftables.TableFamilyARP: "arp", nftables.TableFamilyBridge: "bridge", nftables.TableFamilyNetdev: "netdev",
}

func hookName(family nftables.TableFamily, h *nftables.ChainHook) string {
	if h == nil {
		return ""
	}
	if family == nftables.TableFamilyNetdev {
		return map[nftables.ChainHook]string{0: "ingress", 1: "egress"}[*h]
	}
	if family == nftables.TableFamilyARP {
		return map[nftables.ChainHook]string{0: "input", 1: "output"}[*h]
	}
	if n, ok := map[nftables.ChainHook]string{0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting", 5: "ingress"}[*h]; ok {
		return n
	}
	return fmt.Sprint(*h)
}

// collectNftables lists the tables, chains and sets of every owner; the rules only of
// tables that hold chains of another plugin (for what jumps to them). Read only.
func collectNftables(ns netns.NsHandle, s *Snapshot) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return err
	}
	tables, err := c.ListTables()
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return fmt.Errorf("list chains: %w", err)
	}
	for _, t := range tables {
		st := NftTable{Family: nftFamilies[t.Family], Name: t.Name}
		if st.Family == "" {
			st.Family = fmt.Sprint(t.Family)
		}
		var mine []*nftables.Chain
		foreign := false
		for _, ch := range chains {
			if ch.Table == nil || ch.Table.Name != t.Name || ch.Table.Family != t.Family {
				continue
			}
			mine = append(mine, ch)
			if _, ok := chainPlugin(ch.Name); ok {
				foreign = true
			}
		}
		for _, ch := range mine {
			sc := NftChain{Name: ch.Name, Hook: hookName(t.Family, ch.Hooknum)}
			if ch.Policy != nil {
				sc.Policy = map[nftables.ChainPolicy]string{nftables.ChainPolicyDrop: "drop", nftables.ChainPolicyAccept: "accept"}[*ch.Policy]
			}
			if foreign {
				rules, err := c.GetRules(t, ch)
				if err != nil {
					return fmt.Errorf("list rules of %s %s %s: %w", st.Family, t.Name, ch.Name, err)
				}
				sc.Rules = len(rules)
				for _, r := range rules {
					for _, e := range r.Exprs {
						switch e := e.(type) {
						case *expr.Verdict:
							switch e.Kind {
							case expr.VerdictJump, expr.VerdictGoto:
								sc.Jumps = append(sc.Jumps, NftJump{Target: e.Chain, Handle: r.Handle})
							case expr.VerdictDrop:
								sc.Drops++
							}
						case *expr.Reject:
							sc.Drops++
						}
					}
				}
			}
			st.Chains = append(st.Chains, sc)
		}
		sets, err := c.GetSets(t)
		if err != nil {
			return fmt.Errorf("list sets of %s %s: %w", st.Family, t.Name, err)
		}
		for _, set := range sets {
			if !set.Anonymous {
				st.Sets = append(st.Sets, set.Name)
			}
		}
		s.Tables = append(s.Tables, st)
	}
	slices.SortFunc(s.Tables, func(a, b NftTable) int { return strings.Compare(a.Family+" "+a.Name, b.Family+" "+b.Name) })
	return nil
}

// collectTCX adds the programs attached at each link's tcx ingress hook.
func collectTCX(ns netns.NsHandle, s *Snapshot) error {
	progs, err := fastpath.TCXIngress(ns)
	if err != nil {
		return err
	}
	for _, p := range progs {
		for i := range s.Links {
			if l := &s.Links[i]; l.Name == p.Ifname {
				l.TCX = append(l.TCX, TCXProgram{ID: uint32(p.ID), Name: p.Name, LinkID: uint32(p.LinkID)})
			}
		}
	}
	return nil
}
