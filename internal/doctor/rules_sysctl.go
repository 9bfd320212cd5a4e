package doctor

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// Rules on sysctls: forwarding [ip-forward-disabled], proxy ARP on routed host veths
// [proxy-arp-disabled], the conntrack table [conntrack-table-full] and strict reverse
// path filtering [rp-filter-strict].

// podFamilies reports whether the node carries IPv4 and IPv6 pods.
func (v *view) podFamilies() (has4, has6 bool) {
	for _, c := range v.carriers {
		for _, p := range c.ranges {
			has4, has6 = has4 || p.Addr().Is4(), has6 || p.Addr().Is6()
		}
	}
	return has4, has6
}

// carrierEvidence describes the first carriers with pods of the family (IPv4: v4).
func (v *view) carrierEvidence(v4 bool) []string {
	var ev []string
	n := 0
	for _, c := range v.carriers {
		if !hasFamily(c.ranges, v4) {
			continue
		}
		if n++; n <= 3 {
			ev = append(ev, c.describe())
		}
	}
	if n > 3 {
		ev = append(ev, fmt.Sprintf("and %d more links carrying pods", n-3))
	}
	return ev
}

func forwardingRule(v *view) []Finding {
	has4, has6 := v.podFamilies()
	var out []Finding
	off := func(key, family string) {
		out = append(out, Finding{
			Class:    ClassForwardDisabled,
			Severity: SeverityError,
			Culprit:  "sysctl " + sysctlName(key) + "=0",
			RootCause: fmt.Sprintf("%s forwarding is off in this namespace: the node drops every %s packet of its pods that is not for the node itself, so pods cannot reach other nodes, other networks or the outside, and replies cannot reach them.",
				family, family),
			Fix:      v.fix("sysctl -w " + sysctlName(key) + "=1"),
			Evidence: v.carrierEvidence(family == "IPv4"),
		})
	}
	if val, ok := v.sysctl("net/ipv4/ip_forward"); has4 && ok && val == "0" {
		off("net/ipv4/ip_forward", "IPv4")
	} else if has4 {
		// IPv4 forwards only what enters through an interface whose forwarding is on.
		seen := map[string]bool{}
		var ins []string
		for _, c := range v.carriers {
			ins = append(ins, c.link.Name)
		}
		for _, r := range v.s.Routes {
			if r.Dst.Bits() == 0 && r.Dst.Addr().Is4() {
				ins = append(ins, r.devs()...)
			}
		}
		for _, dev := range ins {
			key := "net/ipv4/conf/" + dev + "/forwarding"
			if val, ok := v.sysctl(key); ok && val == "0" && !seen[dev] {
				seen[dev] = true
				what := "the packets pods send through it"
				if v.carrierOf[dev] == nil {
					what = "the replies to pods that come back through it (it holds a default route)"
				}
				out = append(out, Finding{
					Class:     ClassForwardDisabled,
					Severity:  SeverityError,
					Culprit:   "sysctl " + sysctlName(key) + "=0",
					RootCause: fmt.Sprintf("IPv4 forwarding is on for the node but off for %s: the kernel forwards nothing that enters through %s, so it drops %s.", dev, dev, what),
					Fix:       v.fix("sysctl -w " + sysctlName(key) + "=1"),
					Evidence:  v.carrierEvidence(true),
				})
			}
		}
	}
	// IPv6 forwards by net.ipv6.conf.all.forwarding alone (per-interface values only
	// switch router behaviour: RA, NDP).
	if val, ok := v.sysctl("net/ipv6/conf/all/forwarding"); has6 && ok && val == "0" {
		off("net/ipv6/conf/all/forwarding", "IPv6")
	}
	return out
}

func proxyARPRule(v *view) []Finding {
	var out []Finding
	all, _ := v.sysctl("net/ipv4/conf/all/proxy_arp")
	for _, c := range v.carriers {
		l := c.link
		if c.bridge || !hasFamily(c.ranges, true) {
			continue
		}
		own := func(a netip.Addr) bool { _, ok := addrOf(l, a); return ok }
		var gw netip.Addr
		switch {
		case l.Peer != nil:
			for _, g := range l.Peer.Gateways {
				if g.Is4() && !own(g) {
					gw = g
				}
			}
			if !gw.IsValid() {
				continue // the pod's gateway is an address of l, or it has none
			}
		case hasFamilyAddr(l.Addrs, true):
			continue // the pod's gateway is probably that address: no proxy needed
		}
		key := "net/ipv4/conf/" + l.Name + "/proxy_arp"
		val, ok := v.sysctl(key)
		if !ok {
			continue
		}
		ev := []string{c.describe()}
		if gw.IsValid() {
			ev = append(ev, fmt.Sprintf("the pod (%s in %s) routes through %s, which is no address of %s: only proxy ARP answers for it", l.Peer.Name, l.Peer.Netns, gw, l.Name))
		} else {
			ev = append(ev, l.Name+" has no IPv4 address: the pod's gateway can only be answered by proxy ARP (the sandbox is not visible to check its routes)")
		}
		if val != "1" && all != "1" {
			ev = append(ev, fmt.Sprintf("%s=%s, net.ipv4.conf.all.proxy_arp=%s", sysctlName(key), val, all))
			out = append(out, Finding{
				Class:    ClassProxyARPDisabled,
				Severity: SeverityError,
				Culprit:  "sysctl " + sysctlName(key) + "=" + val,
				RootCause: fmt.Sprintf("%s is a routed host veth without proxy ARP: the pod's ARP requests for its gateway%s go unanswered, so the pod cannot send anything beyond its own link.",
					l.Name, gwText(gw)),
				Fix:      v.fix("sysctl -w "+sysctlName(key)+"=1", "sysctl -w "+sysctlName("net/ipv4/neigh/"+l.Name+"/proxy_delay")+"=0"),
				Evidence: ev,
			})
			continue
		}
		if !gw.IsValid() {
			continue
		}
		// The kernel proxies only for an address it routes through another interface.
		r, ok := v.fib.lookup(gw, netip.Addr{})
		if ok && (r.Type == "" || r.Type == "unicast") && !r.via(l.Name) {
			continue
		}
		route := "no route at all"
		if ok {
			route = "only " + r.String()
		}
		ev = append(ev, fmt.Sprintf("lookup %s: %s", gw, route))
		out = append(out, Finding{
			Class:    ClassProxyARPDisabled,
			Severity: SeverityError,
			Culprit:  fmt.Sprintf("no route to %s except through %s", gw, l.Name),
			RootCause: fmt.Sprintf("Proxy ARP is on for %s, but the kernel answers an ARP request only for an address it routes through another interface, and the node has %s to the pod's gateway %s: the pod cannot resolve its gateway.",
				l.Name, route, gw),
			Fix: v.fix("ip link add pngw0 type dummy", "ip link set pngw0 up",
				fmt.Sprintf("ip route add %s/32 dev pngw0 table default", gw)),
			Evidence: ev,
		})
	}
	return out
}

func gwText(gw netip.Addr) string {
	if gw.IsValid() {
		return " " + gw.String()
	}
	return ""
}

func hasFamily(ps []netip.Prefix, v4 bool) bool {
	for _, p := range ps {
		if p.Addr().Is4() == v4 {
			return true
		}
	}
	return false
}

func hasFamilyAddr(ps []netip.Prefix, v4 bool) bool {
	for _, p := range ps {
		if p.Addr().Is4() == v4 && !linkLocal(p.Addr()) {
			return true
		}
	}
	return false
}

// Thresholds of the conntrack table: near full, full.
const (
	conntrackWarn  = 0.80
	conntrackError = 0.95
)

func conntrackRule(v *view) []Finding {
	ct := v.s.Conntrack
	if ct == nil || ct.Max <= 0 {
		return nil
	}
	fill := float64(ct.Count) / float64(ct.Max)
	if fill < conntrackWarn {
		return nil
	}
	f := Finding{
		Class:    ClassConntrackFull,
		Severity: SeverityWarning,
		Culprit:  fmt.Sprintf("sysctl net.netfilter.nf_conntrack_max=%d", ct.Max),
		RootCause: fmt.Sprintf("The conntrack table of this namespace is near full (%d of %d entries, %.0f%%): once full, the kernel drops the first packet of every new connection it cannot track, silently (new connections hang, DNS lookups time out).",
			ct.Count, ct.Max, 100*fill),
		Evidence: []string{
			fmt.Sprintf("net.netfilter.nf_conntrack_count=%d, net.netfilter.nf_conntrack_max=%d", ct.Count, ct.Max),
			fmt.Sprintf("since the namespace was created: %d packets dropped by conntrack, %d entries evicted early, %d insertions failed", ct.Drop, ct.EarlyDrop, ct.InsertFailed),
		},
	}
	if fill >= conntrackError {
		f.Severity = SeverityError
		f.RootCause = fmt.Sprintf("The conntrack table of this namespace is full (%d of %d entries): the kernel drops the first packet of every new connection it cannot track, silently (new connections hang, DNS lookups time out).", ct.Count, ct.Max)
	}
	if ct.Buckets > 0 {
		f.Evidence = append(f.Evidence, "net.netfilter.nf_conntrack_buckets="+strconv.FormatInt(ct.Buckets, 10))
	}
	fix := fmt.Sprintf("sysctl -w net.netfilter.nf_conntrack_max=%d", 2*ct.Max)
	if v.s.ExecPrefix != "" {
		f.Fix = "# nf_conntrack_max is global (read-only inside a namespace): raise it on the host\n" + fix +
			"\n# and find what fills the table: " + v.s.ExecPrefix + "conntrack -L | awk '{print $1, $4, $5}' | sort | uniq -c | sort -rn | head"
	} else {
		f.Fix = fix + "\n# and find what fills the table: conntrack -L | awk '{print $1, $4, $5}' | sort | uniq -c | sort -rn | head"
	}
	return []Finding{f}
}

// neighTableRule: the machine's neighbour table near its hard limit (gc_thresh3). Above
// it the kernel refuses a new entry unless it can collect one older than 5 s: when pods
// come faster than that (a node filled with hundreds of pods at once), neighbour
// resolution fails ("neighbour table overflow"), and packets to addresses it cannot
// resolve are dropped. The table and its limits are the whole machine's.
func neighTableRule(v *view) []Finding {
	var out []Finding
	for _, t := range v.s.NeighTables {
		if t.GCThresh3 <= 0 || float64(t.Entries) < neighTableWarn*float64(t.GCThresh3) {
			continue
		}
		family := "ipv4"
		if t.Name == "ndisc_cache" {
			family = "ipv6"
		}
		key := "net." + family + ".neigh.default.gc_thresh3"
		f := Finding{
			Class:    ClassNeighTableFull,
			Severity: SeverityWarning,
			Culprit:  fmt.Sprintf("sysctl %s=%d", key, t.GCThresh3),
			RootCause: fmt.Sprintf("The machine's %s neighbour table is near its hard limit (%d of %d entries, shared by every namespace): above it the kernel refuses new entries it cannot make room for, so new neighbours (pods, gateways) cannot be resolved and their packets are dropped.",
				family, t.Entries, t.GCThresh3),
			Evidence: []string{
				fmt.Sprintf("%s: %d entries; %s=%d, gc_thresh2=%d", t.Name, t.Entries, key, t.GCThresh3, t.GCThresh2),
				fmt.Sprintf("%d entries refused since boot (table_fulls)", t.TableFulls),
			},
			Fix: fmt.Sprintf("# global: set on the host\nsysctl -w net.%s.neigh.default.gc_thresh2=%d net.%s.neigh.default.gc_thresh3=%d",
				family, 2*t.GCThresh3, family, 4*t.GCThresh3),
		}
		if t.Entries >= t.GCThresh3 {
			f.Severity = SeverityError
			f.RootCause = fmt.Sprintf("The machine's %s neighbour table is full (%d entries, hard limit %d, shared by every namespace): the kernel refuses new entries it cannot make room for, so new neighbours (pods, gateways) cannot be resolved and their packets are dropped.",
				family, t.Entries, t.GCThresh3)
		}
		out = append(out, f)
	}
	return out
}

// neighTableWarn is the fill of a neighbour table that the doctor warns about.
const neighTableWarn = 0.80

func rpFilterRule(v *view) []Finding {
	var out []Finding
	all := atoi(v.s.Sysctls["net/ipv4/conf/all/rp_filter"])
	for i := range v.s.Links {
		l := &v.s.Links[i]
		if l.Name == "lo" || !l.Up {
			continue
		}
		key := "net/ipv4/conf/" + l.Name + "/rp_filter"
		val, ok := v.sysctl(key)
		if !ok || max(all, atoi(val)) != 1 {
			continue
		}
		var local netip.Addr // the destination of packets arriving on l
		for _, a := range l.Addrs {
			if a.Addr().Is4() && !linkLocal(a.Addr()) {
				local = a.Addr()
				break
			}
		}
		// Sources that arrive on l: its subnets, and what its routes lead to.
		var sources []netip.Prefix
		sources = append(sources, subnets(l.Addrs)...)
		defaultVia := false
		for _, r := range v.s.Routes {
			if !r.via(l.Name) || !r.Dst.Addr().Is4() || (r.Type != "" && r.Type != "unicast") || linkLocal(r.Dst.Addr()) {
				continue
			}
			if r.Dst.Bits() == 0 {
				defaultVia = true
			} else {
				sources = append(sources, r.Dst)
			}
		}
		var ev []string
		var culpritRoute Route
		var from netip.Prefix
		for i, src := range sources {
			if !src.Addr().Is4() || slices.Contains(sources[:i], src) {
				continue
			}
			a := v.sampleIn(src)
			r, ok := v.fib.lookup(a, local)
			if !ok || r.via(l.Name) || (r.Type != "" && r.Type != "unicast") {
				continue
			}
			if !from.IsValid() {
				from, culpritRoute = src, r
			}
			ev = append(ev, fmt.Sprintf("a packet from %s arriving on %s: the route back is %s", a, l.Name, r.String()))
		}
		if defaultVia {
			// Traffic from anywhere may arrive on l; the best default route must leave there.
			r, ok := v.fib.lookupWhere(netip.IPv4Unspecified(), local, func(r Route) bool { return r.Dst.Bits() == 0 })
			if ok && !r.via(l.Name) && (r.Type == "" || r.Type == "unicast") {
				if !from.IsValid() {
					from, culpritRoute = netip.PrefixFrom(netip.IPv4Unspecified(), 0), r
				}
				ev = append(ev, fmt.Sprintf("%s has a default route too, but the one that wins is %s: replies to connections that leave through %s come back where the filter drops them", l.Name, r.String(), l.Name))
			}
		}
		if !from.IsValid() {
			continue
		}
		culprit := key
		if atoi(val) != 1 {
			culprit = "net/ipv4/conf/all/rp_filter"
		}
		ev = append(ev, fmt.Sprintf("net.ipv4.conf.all.rp_filter=%d, %s=%s (the stricter wins)", all, sysctlName(key), val))
		if v.s.RPFilterDrops > 0 {
			ev = append(ev, fmt.Sprintf("TcpExt IPReversePathFilter=%d: packets the filter dropped in this namespace so far", v.s.RPFilterDrops))
		}
		fromText := from.String()
		if from.Bits() == 0 {
			fromText = "anywhere"
		}
		out = append(out, Finding{
			Class:    ClassRPFilterStrict,
			Severity: SeverityWarning,
			Culprit:  "sysctl " + sysctlName(culprit) + "=1",
			RootCause: fmt.Sprintf("Strict reverse path filtering is on for %s, but the route back to %s leaves through %s (%s): packets from there that arrive on %s, replies included, are dropped as spoofed.",
				l.Name, fromText, culpritRoute.Dev+nexthopDevs(culpritRoute), culpritRoute.String(), l.Name),
			Fix:      v.fix("sysctl -w " + sysctlName(key) + "=2"),
			Evidence: ev,
		})
	}
	return out
}

func nexthopDevs(r Route) string {
	if r.Dev != "" || len(r.Nexthops) == 0 {
		return ""
	}
	s := ""
	for i, d := range r.devs() {
		if i > 0 {
			s += "/"
		}
		s += d
	}
	return s
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
