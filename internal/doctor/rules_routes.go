package doctor

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/internal/spec"
)

// Routes into pod ranges [route-overlap], and leftovers of other plugins
// [stale-plugin-leftover]: a route of the node whose destination overlaps a pod range
// and that wins the lookup for some pod address is the root cause of those pods being
// unreachable. It is a leftover when the device it goes through belongs to a plugin
// that no longer runs pods here; leftovers that steal nothing are reported as
// harmless.

// plugin is another network plugin the doctor recognises by its names.
type plugin struct {
	key, name string
}

var (
	pluginCalico     = plugin{"calico", "Calico"}
	pluginFlannel    = plugin{"flannel", "flannel"}
	pluginCilium     = plugin{"cilium", "Cilium"}
	pluginWeave      = plugin{"weave", "Weave Net"}
	pluginKubeRouter = plugin{"kube-router", "kube-router"}
	pluginKubenet    = plugin{"kubenet", "kubenet"}
)

// pluginOfCarrier names the plugin whose pods a carrier's name says it carries.
func pluginOfCarrier(name string) string {
	switch {
	case spec.IsPodnetLink(name):
		return "podnet"
	case strings.HasPrefix(name, "cali"):
		return pluginCalico.key
	case name == "cni0":
		return pluginFlannel.key
	case strings.HasPrefix(name, "lxc"):
		return pluginCilium.key
	case name == "weave":
		return pluginWeave.key
	case name == "kube-bridge":
		return pluginKubeRouter.key
	case name == "cbr0":
		return pluginKubenet.key
	}
	return ""
}

// leftoverDevice returns the plugin that left l behind, if l is a device of a plugin
// that runs no pod on the node.
func (v *view) leftoverDevice(l *Link) (plugin, bool) {
	var p plugin
	n := l.Name
	switch {
	case n == "tunl0":
		// The kernel creates a down tunl0 without address in every namespace once the
		// ipip module is loaded: only one with an address was configured (by Calico).
		if !hasHostAddr(l) {
			return p, false
		}
		p = pluginCalico
	case n == "vxlan.calico", n == "vxlan-v6.calico", n == "wireguard.cali":
		p = pluginCalico
	case strings.HasPrefix(n, "flannel.") || strings.HasPrefix(n, "flannel-v6.") || n == "flannel-wg":
		p = pluginFlannel
	case strings.HasPrefix(n, "cilium_"):
		p = pluginCilium
	case n == "weave" || n == "datapath" || n == "vxlan-6784":
		p = pluginWeave
	case l.Kind == "bridge" && (n == "cni0" || n == "cbr0" || n == "kube-bridge"):
		if v.carrierOf[n] != nil {
			return p, false
		}
		p = plugin{pluginOfCarrier(n), map[string]string{"cni0": "flannel or the CNI bridge plugin", "cbr0": "kubenet", "kube-bridge": "kube-router"}[n]}
	default:
		return p, false
	}
	if v.current[p.key] {
		return p, false
	}
	return p, true
}

func hasHostAddr(l *Link) bool {
	for _, a := range l.Addrs {
		if !linkLocal(a.Addr()) {
			return true
		}
	}
	return false
}

// describeLink names l as a person reads it: "bridge cni0 with address 10.88.1.1/24",
// "vxlan flannel.1 (id 1)".
func describeLink(l *Link) string {
	kind := l.Kind
	if kind == "" || kind == "device" {
		kind = "link"
	}
	s := kind + " " + l.Name
	if l.Tunnel != nil && l.Tunnel.ID != 0 {
		s += fmt.Sprintf(" (id %d)", l.Tunnel.ID)
	}
	addrs := global(l.Addrs)
	switch len(addrs) {
	case 0:
	case 1:
		s += " with address " + addrs[0].String()
	default:
		s += " with addresses " + prefixes(addrs)
	}
	return s
}

func routeRules(v *view) []Finding {
	var out []Finding
	byRoute := map[string]int{} // route -> index in out
	blamed := map[string]bool{} // leftover devices already named as a cause
	for _, r := range v.s.Routes {
		switch r.Type {
		case "", "unicast", "local", "blackhole", "unreachable", "prohibit":
		default:
			continue
		}
		if r.Dst.Bits() == 0 || linkLocal(r.Dst.Addr()) {
			continue
		}
		for _, c := range v.carriers {
			if r.via(c.link.Name) {
				continue
			}
			for _, p := range c.ranges {
				if !p.Overlaps(r.Dst) {
					continue
				}
				a := v.sample(r.Dst, p)
				own, ok := v.fib.lookupWhere(a, netip.Addr{}, func(x Route) bool { return x.via(c.link.Name) })
				if !ok {
					continue // the carrier has no route of its own for a: not this problem
				}
				win, ok := v.fib.lookup(a, netip.Addr{})
				if !ok || !win.same(r) {
					if r.Dst.Bits() < p.Bits() && r.Gw.IsValid() && c.bridge {
						out = appendShadow(v, out, byRoute, r, c, p)
					}
					continue
				}
				key := r.String()
				if i, ok := byRoute[key]; ok {
					out[i].Evidence = append(out[i].Evidence, c.describe())
					continue
				}
				f := v.stealing(r, c, p, a, own, blamed)
				if i, ok := byRoute[f.Culprit]; ok { // a leftover already named: one finding
					for _, e := range f.Evidence {
						if !slices.Contains(out[i].Evidence, e) {
							out[i].Evidence = append(out[i].Evidence, e)
						}
					}
					byRoute[key] = i
					continue
				}
				byRoute[key], byRoute[f.Culprit] = len(out), len(out)
				out = append(out, f)
			}
		}
	}
	out = append(out, v.leftoverDevices(blamed)...)
	out = append(out, v.leftoverTables()...)
	return append(out, v.leftoverSets()...)
}

// sample returns an address of both r and p to look up: the first of r's (when r is
// inside p) or of p's, skipping the network address and the node's own addresses.
func (v *view) sample(r, p netip.Prefix) netip.Addr {
	in := r
	if r.Bits() < p.Bits() {
		in = p
	}
	return v.sampleIn(in)
}

// sampleIn returns the first address of p that is not its network address nor an
// address of the node (which the local table would answer), as far as p has one.
func (v *view) sampleIn(p netip.Prefix) netip.Addr {
	a := p.Addr()
	if !p.IsSingleIP() {
		a = a.Next()
	}
	for p.Contains(a.Next()) && v.local[a] {
		a = a.Next()
	}
	return a
}

// stealing is the finding for a route r that wins over the pod route own of c for a.
func (v *view) stealing(r Route, c *carrier, p netip.Prefix, a netip.Addr, own Route, blamed map[string]bool) Finding {
	overlap := r.Dst
	if p.Bits() > r.Dst.Bits() {
		overlap = p
	}
	why := "is more specific than the pod range " + p.String()
	switch {
	case r.Dst.Bits() == p.Bits() && r.Table == own.Table:
		why = "has the same destination as the pod route " + own.String() + " and a lower metric"
	case r.Dst.Bits() <= own.Dst.Bits():
		why = "is in table " + tableName(r.Table) + ", which the rules consult before table " + tableName(own.Table) + " of the pod route " + own.String()
	}
	what := "sends traffic for the pods in " + overlap.String() + " to " + strings.Join(r.devs(), "/") + " instead of " + c.link.Name
	switch r.Type {
	case "local":
		what = "takes traffic for " + a.String() + " as its own (it is an address of " + r.Dev + ") instead of sending it to " + c.link.Name
	case "blackhole", "unreachable", "prohibit":
		what = "drops traffic for the pods in " + overlap.String() + " (" + r.Type + ") instead of sending it to " + c.link.Name
	}
	f := Finding{
		Class:     ClassRouteOverlap,
		Severity:  SeverityError,
		Culprit:   "route " + r.String(),
		RootCause: fmt.Sprintf("The route %s %s, so the node %s.", r.String(), why, what),
		Fix:       v.fix("ip route del " + r.String()),
		Evidence: []string{
			c.describe(),
			fmt.Sprintf("lookup %s: %s wins over the pod route %s", a, r.String(), own.String()),
		},
	}
	if r.Type == "local" {
		if addr, ok := addrOf(v.links[r.Dev], r.Dst.Addr()); ok {
			f.Culprit = "address " + addr.String() + " dev " + r.Dev
			f.Fix = v.fix("ip addr del " + addr.String() + " dev " + r.Dev)
		}
	}
	n := 0
	for _, ip := range sortedPods(v) {
		if overlap.Contains(ip) && n < 3 {
			f.Evidence = append(f.Evidence, "pod "+ip.String()+" is "+v.pods[ip].String()+": unreachable from the node")
			n++
		}
	}
	if l := v.links[r.Dev]; l != nil {
		if pl, ok := v.leftoverDevice(l); ok {
			blamed[l.Name] = true
			f.Class = ClassStaleLeftover
			f.Culprit = describeLink(l)
			f.RootCause = fmt.Sprintf("%s, a leftover of %s (%s), still holds the route %s, which %s: the node %s.",
				l.Name, pl.name, leftoverWhy(v, l), r.String(), why, what)
			f.Fix = v.fix("ip link del " + l.Name)
		}
	}
	return f
}

// leftoverWhy says why l is taken for a leftover.
func leftoverWhy(v *view, l *Link) string {
	if l.Kind == "bridge" && len(v.ports[l.Name]) == 0 {
		return "a bridge without any port"
	}
	if l.Kind == "bridge" {
		return "a bridge without a port to a sandbox"
	}
	return "no pod of this node is attached through its plugin"
}

func addrOf(l *Link, a netip.Addr) (netip.Prefix, bool) {
	if l == nil {
		return netip.Prefix{}, false
	}
	for _, p := range l.Addrs {
		if p.Addr() == a {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// appendShadow reports, once per route, that a pod range hides part of a less specific
// route via a router: hosts of that network in the pod range are out of reach.
func appendShadow(v *view, out []Finding, byRoute map[string]int, r Route, c *carrier, p netip.Prefix) []Finding {
	key := "shadow " + r.String()
	if i, ok := byRoute[key]; ok {
		out[i].Evidence = append(out[i].Evidence, c.describe())
		return out
	}
	byRoute[key] = len(out)
	return append(out, Finding{
		Class:    ClassRouteOverlap,
		Severity: SeverityInfo,
		Culprit:  "route " + r.String(),
		RootCause: fmt.Sprintf("The pod range %s of %s lies inside the route %s: pods work, but hosts of that network with addresses in %s are out of reach from this node and its pods.",
			p, c.link.Name, r.String(), p),
		Fix:      v.fix("# renumber the pod range out of " + r.Dst.String() + ", or accept that hosts in " + p.String() + " behind " + r.Gw.String() + " are out of reach"),
		Evidence: []string{c.describe()},
	})
}

func sortedPods(v *view) []netip.Addr {
	ips := make([]netip.Addr, 0, len(v.pods))
	for ip := range v.pods {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return ips
}

// leftoverDevices reports the devices of other plugins that steal no pod traffic.
func (v *view) leftoverDevices(blamed map[string]bool) []Finding {
	var out []Finding
	for i := range v.s.Links {
		l := &v.s.Links[i]
		p, ok := v.leftoverDevice(l)
		if !ok || blamed[l.Name] {
			continue
		}
		var routes []string
		for _, r := range v.s.Routes {
			if r.via(l.Name) && r.Type != "local" && r.Type != "broadcast" && !linkLocal(r.Dst.Addr()) {
				routes = append(routes, r.String())
			}
		}
		f := Finding{
			Class:     ClassStaleLeftover,
			Severity:  SeverityInfo,
			Culprit:   describeLink(l),
			RootCause: fmt.Sprintf("%s is a leftover of %s (%s). None of its routes reaches into a pod range of this node: harmless, it is not the cause of a pod problem.", l.Name, p.name, leftoverWhy(v, l)),
			Fix:       v.fix("ip link del " + l.Name),
			Evidence:  []string{fmt.Sprintf("%s: %s, mtu %d, %s", l.Name, l.Kind, l.MTU, map[bool]string{true: "up", false: "down"}[l.Up])},
		}
		if len(routes) > 0 {
			f.Evidence = append(f.Evidence, plural(len(routes), "route")+" through it, none into a pod range: "+strings.Join(first(routes, 3), "; "))
		}
		out = append(out, f)
	}
	return out
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

// chainPlugins maps the chain and set name prefixes of other plugins to them.
var chainPlugins = []struct {
	prefix string
	plugin plugin
}{
	{"cali-", pluginCalico}, {"felix-", pluginCalico},
	{"FLANNEL-", pluginFlannel},
	{"CILIUM_", pluginCilium}, {"OLD_CILIUM_", pluginCilium},
	{"WEAVE", pluginWeave},
}

func chainPlugin(name string) (plugin, bool) {
	for _, cp := range chainPlugins {
		if strings.HasPrefix(name, cp.prefix) {
			return cp.plugin, true
		}
	}
	return plugin{}, false
}

// leftoverSets reports the ipsets of plugins that run no pod here, one finding per
// plugin: harmless by themselves (a rule that uses one is reported with its table),
// an info.
func (v *view) leftoverSets() []Finding {
	var out []Finding
	byPlugin := map[plugin][]IPSet{}
	var order []plugin
	for _, s := range v.s.IPSets {
		p, ok := chainPlugin(s.Name)
		if !ok || v.current[p.key] {
			continue
		}
		if byPlugin[p] == nil {
			order = append(order, p)
		}
		byPlugin[p] = append(byPlugin[p], s)
	}
	for _, p := range order {
		sets := byPlugin[p]
		var names, evidence, fixes []string
		for _, s := range sets {
			names = append(names, s.Name)
			evidence = append(evidence, fmt.Sprintf("ipset %s (%s): entries %d, references %d", s.Name, s.Type, s.Entries, s.References))
			fixes = append(fixes, "ipset destroy "+s.Name)
		}
		out = append(out, Finding{
			Class: ClassStaleLeftover, Severity: SeverityInfo,
			Culprit:   "ipset " + sets[0].Name,
			RootCause: fmt.Sprintf("Leftovers of %s, which runs no pod on this node (no interface of its own carries pods): %s %s. A set alone filters nothing: harmless, not the cause of a pod problem.", p.name, map[bool]string{true: "ipset", false: "ipsets"}[len(names) == 1], strings.Join(first(names, 6), ", ")),
			Fix:       v.fix(fixes...),
			Evidence:  first(evidence, 6),
		})
	}
	return out
}

// leftoverTables reports, per table and plugin, the chains and sets of plugins that
// run no pod here: an error when a hook still reaches a chain that drops, a warning
// when a hook reaches them, else an info.
func (v *view) leftoverTables() []Finding {
	var out []Finding
	for _, t := range v.s.Tables {
		byName := map[string]*NftChain{}
		for i := range t.Chains {
			byName[t.Chains[i].Name] = &t.Chains[i]
		}
		// Chains reachable from a base chain.
		reach := map[string]bool{}
		var walk func(string)
		walk = func(name string) {
			if reach[name] || byName[name] == nil {
				return
			}
			reach[name] = true
			for _, j := range byName[name].Jumps {
				walk(j.Target)
			}
		}
		for _, c := range t.Chains {
			if c.Hook != "" {
				walk(c.Name)
			}
		}
		type group struct {
			p      plugin
			chains []*NftChain
			sets   []string
		}
		var groups []*group
		get := func(p plugin) *group {
			for _, g := range groups {
				if g.p == p {
					return g
				}
			}
			g := &group{p: p}
			groups = append(groups, g)
			return g
		}
		for i := range t.Chains {
			if p, ok := chainPlugin(t.Chains[i].Name); ok && !v.current[p.key] {
				get(p).chains = append(get(p).chains, &t.Chains[i])
			}
		}
		for _, s := range t.Sets {
			if p, ok := chainPlugin(s); ok && !v.current[p.key] {
				get(p).sets = append(get(p).sets, s)
			}
		}
		for _, g := range groups {
			out = append(out, v.leftoverTable(t, g.p, g.chains, g.sets, byName, reach))
		}
	}
	return out
}

func (v *view) leftoverTable(t NftTable, p plugin, chains []*NftChain, sets []string, byName map[string]*NftChain, reach map[string]bool) Finding {
	tbl := t.Family + " " + t.Name
	// A legacy table's commands: iptables-legacy, rules by number (the last first, so
	// that deleting one does not renumber the next).
	ipt := "iptables-legacy -t " + t.Name
	if t.Family == "ip6" {
		ipt = "ip6tables-legacy -t " + t.Name
	}
	culprit := "chain " + tbl + " " // + the chain
	if t.Legacy {
		tbl += " (legacy iptables)"
	}
	ours := map[string]bool{}
	for _, c := range chains {
		ours[c.Name] = true
	}
	var entries, evidence, fixes []string
	drops := 0
	for _, c := range t.Chains {
		for i := range c.Jumps {
			j := c.Jumps[i]
			if !ours[j.Target] || ours[c.Name] {
				continue
			}
			entries = append(entries, j.Target)
			if t.Legacy {
				evidence = append(evidence, fmt.Sprintf("chain %s jumps to %s (rule %d)", c.Name, j.Target, j.Rule))
				fixes = append(fixes, fmt.Sprintf("%s -D %s %d", ipt, c.Name, j.Rule))
			} else {
				evidence = append(evidence, fmt.Sprintf("chain %s jumps to %s (rule handle %d)", c.Name, j.Target, j.Handle))
				fixes = append(fixes, fmt.Sprintf("nft delete rule %s %s handle %d", tbl, c.Name, j.Handle))
			}
		}
	}
	if t.Legacy {
		slices.Reverse(fixes)
	}
	var reached []string
	for _, c := range chains {
		if reach[c.Name] {
			reached = append(reached, c.Name)
			drops += c.Drops
			if c.Hook != "" {
				entries = append(entries, c.Name)
				evidence = append(evidence, fmt.Sprintf("chain %s is a base chain of hook %s", c.Name, c.Hook))
			}
		}
	}
	switch {
	case t.Legacy:
		for _, c := range chains {
			fixes = append(fixes, ipt+" -F "+c.Name)
		}
		for _, c := range chains {
			fixes = append(fixes, ipt+" -X "+c.Name)
		}
	case len(chains) == len(t.Chains) && len(chains) > 0:
		fixes = []string{"nft delete table " + tbl}
	default:
		for _, c := range chains {
			fixes = append(fixes, "nft flush chain "+tbl+" "+c.Name)
		}
		for _, c := range chains {
			fixes = append(fixes, "nft delete chain "+tbl+" "+c.Name)
		}
		for _, s := range sets {
			fixes = append(fixes, "nft delete set "+tbl+" "+s)
		}
	}
	var names []string
	for _, c := range chains {
		names = append(names, c.Name)
	}
	f := Finding{Class: ClassStaleLeftover, Fix: v.fix(fixes...)}
	if len(names) > 0 {
		evidence = append(evidence, fmt.Sprintf("%s of %s in table %s: %s", plural(len(names), "chain"), p.name, tbl, strings.Join(first(names, 6), ", ")))
	}
	if len(sets) > 0 {
		evidence = append(evidence, fmt.Sprintf("%s of %s in table %s: %s", plural(len(sets), "set"), p.name, tbl, strings.Join(first(sets, 6), ", ")))
	}
	gone := fmt.Sprintf("%s runs no pod on this node (no interface of its own carries pods)", p.name)
	switch {
	case len(entries) > 0 && drops > 0:
		f.Severity = SeverityError
		f.Culprit = culprit + entries[0]
		f.RootCause = fmt.Sprintf("Chains of %s are still hooked into table %s: packets go through %s, whose chains hold %s with a drop or reject verdict. %s, so nothing keeps those rules right for the pods of today.",
			p.name, tbl, entries[0], plural(drops, "rule"), gone)
	case len(entries) > 0:
		f.Severity = SeverityWarning
		f.Culprit = culprit + entries[0]
		f.RootCause = fmt.Sprintf("Chains of %s are still hooked into table %s: packets go through %s. %s; the chains drop nothing today, but they see every packet and may mark or accept it before the current plugin does.",
			p.name, tbl, entries[0], gone)
	default:
		f.Severity = SeverityInfo
		f.Culprit = "table " + strings.TrimSuffix(culprit[len("chain "):], " ")
		if len(chains) > 0 {
			f.Culprit = culprit + chains[0].Name
		}
		f.RootCause = fmt.Sprintf("Table %s holds leftovers of %s, but no hook reaches them: harmless, not the cause of a pod problem. %s.", tbl, p.name, gone)
	}
	if len(reached) > 0 {
		evidence = append(evidence, fmt.Sprintf("reached from a hook: %s", strings.Join(first(reached, 6), ", ")))
	}
	if t.Legacy {
		f.Culprit += " (legacy iptables)"
	}
	f.Evidence = evidence
	return f
}
