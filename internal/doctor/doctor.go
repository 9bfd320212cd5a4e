// Package doctor diagnoses a node network namespace the way a colleague would: it names
// the kernel object at fault, the evidence, and the command that fixes it, for the
// field incidents of container networks (DOMAIN.md section 8).
//
// Two layers. Collect reads one namespace into a Snapshot (netlink links, addresses,
// routes of every table, rules, neighbours and FDB; sysctls, per interface too; the
// nftables tables of every owner, the legacy iptables tables and the ipsets; conntrack
// counters; the sandboxes behind veths it can find; DNS probes of the search domains
// of resolv.conf files, the sandboxes' own included). Diagnose is pure:
// it applies the rules to a Snapshot and returns the findings, worst first, so that
// the rules are tested without root on recorded snapshots (testdata).
//
// Without an agent, the doctor learns the pod ranges from the kernel alone: the
// subnets of bridges that have veth ports whose peers live in other namespaces, and
// the host routes (/32, /128) through veths without a master (routed pods). A pod's
// MAC is known only when the sandbox of its veth is visible (see Collect). When a
// podnet agent serves the namespace, its records (Snapshot.Intended) add the ranges of
// its networks, its pods' addresses and MACs, and the drift between them and the
// kernel (class podnet-state-drift).
package doctor

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/nft"
)

// Severity of a finding.
type Severity string

// Severities, worst first. An error breaks traffic now, a warning breaks it under some
// conditions or soon, an info is worth knowing and harmless.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
	SeverityInfo    Severity = "info"
)

func (s Severity) rank() int {
	switch s {
	case SeverityError:
		return 0
	case SeverityWarning:
		return 1
	}
	return 2
}

// Classes of findings.
const (
	ClassRouteOverlap      = "route-overlap"
	ClassStaleLeftover     = "stale-plugin-leftover"
	ClassForwardDisabled   = "ip-forward-disabled"
	ClassProxyARPDisabled  = "proxy-arp-disabled"
	ClassMTUMismatch       = "mtu-mismatch"
	ClassNeighbourWrongMAC = "neighbour-wrong-mac"
	ClassDNSSearchWildcard = "dns-search-wildcard"
	ClassConntrackFull     = "conntrack-table-full"
	ClassNeighTableFull    = "neighbour-table-full"
	ClassRPFilterStrict    = "rp-filter-strict"
	ClassForeignBPF        = "foreign-bpf-program"
	// ClassFastPathDetached: podnet's fast path misses a bridged pod (needs the agent's
	// intended state).
	ClassFastPathDetached = "fast-path-detached"
	// ClassStateDrift: the kernel lacks what the agent's records say it has (needs the
	// agent's intended state).
	ClassStateDrift = "podnet-state-drift"
)

// Finding is one diagnosis.
type Finding struct {
	Class    string   `json:"class"`
	Severity Severity `json:"severity"`
	// Culprit names the kernel object at fault as `ip` (or sysctl, nft) prints it.
	Culprit string `json:"culprit"`
	// RootCause says what is wrong and what it breaks.
	RootCause string `json:"root_cause"`
	// Fix is the command (or commands, one per line) a person runs to fix it.
	Fix      string   `json:"fix"`
	Evidence []string `json:"evidence"`
}

// Report is the outcome of Diagnose.
type Report struct {
	Namespace string    `json:"namespace,omitempty"`
	Findings  []Finding `json:"findings"`
	// Notes say what the doctor could not see or check.
	Notes []string `json:"notes,omitempty"`
}

// ExitCode is 2 when a finding is an error, 1 when the worst is a warning, else 0.
func (r Report) ExitCode() int {
	code := 0
	for _, f := range r.Findings {
		switch f.Severity {
		case SeverityError:
			return 2
		case SeverityWarning:
			code = 1
		}
	}
	return code
}

// rule is one check over the view of a snapshot.
type rule func(v *view) []Finding

// rules in the order of DOMAIN.md section 8; findings of equal severity keep it.
var rules = []rule{
	routeRules, // route-overlap and stale-plugin-leftover
	forwardingRule,
	proxyARPRule,
	mtuRule,
	neighbourRule,
	dnsRule,
	conntrackRule,
	neighTableRule,
	rpFilterRule,
	bpfRule, // foreign-bpf-program and fast-path-detached
	driftRule,
}

// Diagnose applies every rule to s and returns the findings, worst first.
func Diagnose(s *Snapshot) Report {
	v := newView(s)
	rep := Report{Namespace: s.Namespace, Findings: []Finding{}, Notes: slices.Clone(s.Notes)}
	for _, r := range rules {
		for _, f := range r(v) {
			if f.Evidence == nil {
				f.Evidence = []string{}
			}
			rep.Findings = append(rep.Findings, f)
		}
	}
	slices.SortStableFunc(rep.Findings, func(a, b Finding) int { return cmp.Compare(a.Severity.rank(), b.Severity.rank()) })
	return rep
}

// view is a snapshot with the indexes and the derived topology the rules share.
type view struct {
	s       *Snapshot
	fib     *fib
	links   map[string]*Link
	byIndex map[int]*Link
	ports   map[string][]*Link // bridge -> its ports
	// carriers are the links that carry pods, in snapshot order.
	carriers  []*carrier
	carrierOf map[string]*carrier
	// pods maps the addresses of visible sandboxes to their veth.
	pods map[netip.Addr]pod
	// macs maps a MAC to the node's links that have it.
	macs map[string][]string
	// local are the addresses of the node's links.
	local map[netip.Addr]bool
	// current are the plugins whose pods the node runs now ("podnet", "calico"...).
	current map[string]bool
}

// carrier is a bridge with veth ports to sandboxes, or a routed veth (no master, host
// routes to pods through it).
type carrier struct {
	link   *Link
	bridge bool
	// ranges: a bridge's address prefixes, a routed veth's host routes.
	ranges []netip.Prefix
	// veths: a bridge's ports to sandboxes; the veth itself when routed.
	veths []*Link
}

// describe names c and its pod range as a person would.
func (c *carrier) describe() string {
	if c.bridge {
		return "bridge " + c.link.Name + " (" + prefixes(global(c.link.Addrs)) + ") with " + plural(len(c.veths), "veth port") + ": pod range " + prefixes(c.ranges)
	}
	return "routed veth " + c.link.Name + " (no master) with host routes to " + prefixes(c.ranges)
}

// pod is a sandbox address the doctor sees.
type pod struct {
	host *Link // the node's end of its veth
	peer *Peer
}

func (p pod) String() string {
	return p.peer.Name + " in sandbox " + p.peer.Netns + " behind " + p.host.Name + ", mac " + p.peer.MAC
}

func newView(s *Snapshot) *view {
	v := &view{s: s, fib: newFIB(s), links: map[string]*Link{}, byIndex: map[int]*Link{}, ports: map[string][]*Link{},
		carrierOf: map[string]*carrier{}, pods: map[netip.Addr]pod{}, macs: map[string][]string{}, local: map[netip.Addr]bool{}, current: map[string]bool{}}
	for i := range s.Links {
		l := &s.Links[i]
		v.links[l.Name] = l
		v.byIndex[l.Index] = l
		if l.Master != "" {
			v.ports[l.Master] = append(v.ports[l.Master], l)
		}
		for _, a := range l.Addrs {
			v.local[a.Addr()] = true
		}
		if l.MAC != "" && l.MAC != "00:00:00:00:00:00" {
			v.macs[l.MAC] = append(v.macs[l.MAC], l.Name)
		}
	}
	hostRoutes := map[string][]netip.Prefix{}
	for _, r := range s.Routes {
		if (r.Type == "unicast" || r.Type == "") && r.Dst.IsSingleIP() && !r.Gw.IsValid() && len(r.Nexthops) == 0 && !linkLocal(r.Dst.Addr()) {
			hostRoutes[r.Dev] = append(hostRoutes[r.Dev], r.Dst)
		}
	}
	for i := range s.Links {
		l := &s.Links[i]
		var c *carrier
		switch {
		case l.Kind == "bridge":
			var veths []*Link
			for _, p := range v.ports[l.Name] {
				if v.sandboxVeth(p) {
					veths = append(veths, p)
				}
			}
			if len(veths) > 0 {
				c = &carrier{link: l, bridge: true, ranges: subnets(l.Addrs), veths: veths}
			}
		case v.sandboxVeth(l) && l.Master == "" && len(hostRoutes[l.Name]) > 0:
			c = &carrier{link: l, ranges: hostRoutes[l.Name], veths: []*Link{l}}
		}
		if c == nil {
			continue
		}
		v.carriers = append(v.carriers, c)
		v.carrierOf[l.Name] = c
		for _, veth := range c.veths {
			if veth.Peer == nil {
				continue
			}
			for _, a := range veth.Peer.Addrs {
				if !linkLocal(a.Addr()) {
					v.pods[a.Addr()] = pod{host: veth, peer: veth.Peer}
				}
			}
		}
		if p := pluginOfCarrier(l.Name); p != "" {
			v.current[p] = true
		}
	}
	if s.Intended != nil {
		v.addIntended(s.Intended)
	}
	for _, t := range s.Tables {
		if t.Name == nft.TableName && (t.Family == "inet" || t.Family == "bridge") {
			v.current["podnet"] = true
		}
	}
	return v
}

// addIntended completes the kernel's view with the agent's records: the range of a
// bridge network before its first pod, and the pods whose sandboxes the collector
// could not see.
func (v *view) addIntended(in *Intended) {
	v.current["podnet"] = true
	for _, n := range in.Networks {
		l := v.links[n.Bridge]
		if n.Driver != api.DriverBridge || l == nil || v.carrierOf[l.Name] != nil {
			continue
		}
		c := &carrier{link: l, bridge: true}
		for _, sub := range n.Subnets {
			c.ranges = append(c.ranges, sub.Prefix)
		}
		v.carriers = append(v.carriers, c)
		v.carrierOf[l.Name] = c
	}
	for _, ep := range in.Endpoints {
		host := v.links[ep.HostIf]
		if host == nil {
			continue
		}
		peer := host.Peer
		if peer == nil {
			peer = &Peer{Netns: ep.Netns, Name: ep.IfName, MAC: ep.MAC, Addrs: ep.IPs}
		}
		for _, a := range ep.IPs {
			if _, seen := v.pods[a.Addr()]; !seen {
				v.pods[a.Addr()] = pod{host: host, peer: peer}
			}
		}
	}
}

// sandboxVeth reports whether l is a veth whose peer is in another namespace.
func (v *view) sandboxVeth(l *Link) bool {
	if l.Kind != "veth" {
		return false
	}
	if l.NetnsID < 0 {
		if p, ok := v.byIndex[l.PeerIndex]; ok && p.Kind == "veth" {
			return false // both ends in the node
		}
	}
	return true
}

// carrierFor returns the carrier whose pod range holds a, if any.
func (v *view) carrierFor(a netip.Addr) *carrier {
	for _, c := range v.carriers {
		for _, p := range c.ranges {
			if p.Contains(a) {
				return c
			}
		}
	}
	return nil
}

// sysctl returns the value of key and whether it exists.
func (v *view) sysctl(key string) (string, bool) {
	val, ok := v.s.Sysctls[key]
	return val, ok
}

// fix prefixes each command line of cmds with the namespace's exec prefix.
func (v *view) fix(cmds ...string) string {
	for i, c := range cmds {
		if !strings.HasPrefix(c, "#") {
			cmds[i] = v.s.ExecPrefix + c
		}
	}
	return strings.Join(cmds, "\n")
}

// subnets returns the masked prefixes of addrs, without link-local and host prefixes.
func subnets(addrs []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		if linkLocal(a.Addr()) || a.IsSingleIP() {
			continue
		}
		if m := a.Masked(); !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// global returns the addresses of ps that are not link-local.
func global(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if !linkLocal(p.Addr()) {
			out = append(out, p)
		}
	}
	return out
}

func linkLocal(a netip.Addr) bool {
	return a.IsLinkLocalUnicast() || a.IsLoopback() || a.IsMulticast()
}

func prefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	if len(s) > 4 {
		s = append(s[:4], "...")
	}
	return strings.Join(s, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
