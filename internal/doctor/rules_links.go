package doctor

import (
	"fmt"
	"net/netip"
	"strings"
)

// Rules on links and neighbours: MTU of overlays and pods [mtu-mismatch], neighbour
// entries of pod addresses [neighbour-wrong-mac].

// ExecPrefix returns what a person puts before a command to run it in the network
// namespace at path: "ip netns exec NAME " for a named one, "nsenter -t PID -n " for a
// process's, "nsenter --net=PATH " otherwise; "" for an empty path.
func ExecPrefix(path string) string {
	switch {
	case path == "":
		return ""
	case strings.HasPrefix(path, "/run/netns/") && !strings.Contains(path[len("/run/netns/"):], "/"):
		return "ip netns exec " + path[len("/run/netns/"):] + " "
	case strings.HasPrefix(path, "/var/run/netns/") && !strings.Contains(path[len("/var/run/netns/"):], "/"):
		return "ip netns exec " + path[len("/var/run/netns/"):] + " "
	case strings.HasPrefix(path, "/proc/") && strings.HasSuffix(path, "/ns/net"):
		return "nsenter -t " + strings.TrimSuffix(strings.TrimPrefix(path, "/proc/"), "/ns/net") + " -n "
	}
	return "nsenter --net=" + path + " "
}

// overhead returns the bytes a tunnel device adds to each packet, by the family of its
// underlay; 0 for a link that is no tunnel the doctor knows.
func overhead(kind string, v6 bool) int {
	ip := 20
	if v6 {
		ip = 40
	}
	switch kind {
	case "vxlan", "geneve":
		return ip + 8 + 8 + 14 // UDP, VXLAN/Geneve header, inner Ethernet
	case "ipip", "sit":
		return ip
	case "gre":
		return ip + 4
	case "gretap":
		return ip + 4 + 14
	case "wireguard":
		return ip + 8 + 32
	}
	return 0
}

// underlay returns the link a tunnel's packets leave through, and how the doctor knows.
func (v *view) underlay(l *Link) (*Link, string) {
	t := l.Tunnel
	if t == nil {
		return nil, ""
	}
	if t.Dev != "" && v.links[t.Dev] != nil {
		return v.links[t.Dev], "bound to " + t.Dev
	}
	if t.Local.IsValid() {
		for i := range v.s.Links {
			if _, ok := addrOf(&v.s.Links[i], t.Local); ok {
				return &v.s.Links[i], "local address " + t.Local.String() + " is on " + v.s.Links[i].Name
			}
		}
	}
	var dsts []netip.Addr
	if t.Remote.IsValid() && !t.Remote.IsMulticast() {
		dsts = append(dsts, t.Remote)
	}
	for _, e := range v.s.FDB {
		if e.Dev == l.Name && e.Dst.IsValid() && !e.Dst.IsMulticast() {
			dsts = append(dsts, e.Dst)
		}
	}
	var best *Link
	how := ""
	for _, d := range dsts {
		r, ok := v.fib.lookup(d, netip.Addr{})
		if !ok || v.links[r.Dev] == nil || r.Dev == l.Name {
			continue
		}
		if u := v.links[r.Dev]; best == nil || u.MTU < best.MTU {
			best, how = u, "remote "+d.String()+" is reached by "+r.String()
		}
	}
	return best, how
}

func mtuRule(v *view) []Finding {
	var out []Finding
	for i := range v.s.Links {
		l := &v.s.Links[i]
		if l.Tunnel == nil || !l.Up {
			continue
		}
		if _, leftover := v.leftoverDevice(l); leftover {
			continue
		}
		under, how := v.underlay(l)
		v6 := l.Tunnel.Local.Is6() || l.Tunnel.Remote.Is6()
		oh := overhead(l.Kind, v6)
		allowed := l.MTU
		if under != nil && oh > 0 {
			allowed = min(l.MTU, under.MTU-oh)
			if l.MTU > under.MTU-oh {
				out = append(out, Finding{
					Class:    ClassMTUMismatch,
					Severity: SeverityError,
					Culprit:  fmt.Sprintf("link %s mtu %d", l.Name, l.MTU),
					RootCause: fmt.Sprintf("%s (%s) sends its packets through %s (mtu %d) and adds %d bytes of headers: a packet larger than %d bytes becomes a frame larger than %s carries. Small packets pass, large ones vanish.",
						l.Name, l.Kind, under.Name, under.MTU, oh, under.MTU-oh, under.Name),
					Fix:      v.fix(fmt.Sprintf("ip link set dev %s mtu %d", l.Name, under.MTU-oh)),
					Evidence: []string{fmt.Sprintf("%s: %s, mtu %d; underlay %s (%s), mtu %d", l.Name, l.Kind, l.MTU, under.Name, how, under.MTU)},
				})
			}
		}
		// Pods whose traffic may leave through the tunnel must not send more than it carries.
		var routes []string
		for _, r := range v.s.Routes {
			if r.via(l.Name) && r.Type != "local" && r.Type != "broadcast" && !linkLocal(r.Dst.Addr()) {
				routes = append(routes, r.String())
			}
		}
		if len(routes) == 0 {
			continue
		}
		var ev, fixes []string
		culprit := ""
		for _, c := range v.carriers {
			for _, veth := range c.veths {
				mtu, name := veth.MTU, veth.Name
				fixes1 := []string{v.fix(fmt.Sprintf("ip link set dev %s mtu %d", veth.Name, allowed))}
				if p := veth.Peer; p != nil {
					fixes1 = append(fixes1, ExecPrefix(p.Netns)+fmt.Sprintf("ip link set dev %s mtu %d", p.Name, allowed))
					if p.MTU > mtu {
						mtu, name = p.MTU, p.Name+" (sandbox "+p.Netns+")"
					}
				}
				if mtu <= allowed {
					continue
				}
				if culprit == "" {
					culprit = fmt.Sprintf("link %s mtu %d", name, mtu)
				}
				if len(ev) < 5 {
					ev = append(ev, fmt.Sprintf("pod veth %s (sandbox side %s): mtu %d", veth.Name, peerName(veth), mtu))
				}
				fixes = append(fixes, fixes1...)
			}
		}
		if culprit == "" {
			continue
		}
		ev = append(ev, fmt.Sprintf("%s carries %s: %s", l.Name, plural(len(routes), "route"), strings.Join(first(routes, 3), "; ")))
		out = append(out, Finding{
			Class:    ClassMTUMismatch,
			Severity: SeverityWarning,
			Culprit:  culprit,
			RootCause: fmt.Sprintf("Pods send packets larger than the %d bytes %s carries: they depend on ICMP \"fragmentation needed\" from the node to shrink them, and where that is filtered (or for traffic without DF) large packets are lost or fragmented.",
				allowed, l.Name),
			Fix:      strings.Join(fixes, "\n"),
			Evidence: ev,
		})
	}
	return out
}

func peerName(veth *Link) string {
	if veth.Peer == nil {
		return "not visible"
	}
	return veth.Peer.Name + " in " + veth.Peer.Netns
}

func neighbourRule(v *view) []Finding {
	var out []Finding
	for _, n := range v.s.Neighbours {
		if n.MAC == "" || n.State == "FAILED" || n.State == "INCOMPLETE" {
			continue
		}
		c := v.carrierOf[n.Dev]
		if c == nil || linkLocal(n.IP) {
			continue
		}
		if _, own := addrOf(c.link, n.IP); own || !containsAny(c.ranges, n.IP) {
			continue
		}
		p, known := v.pods[n.IP]
		if known && p.host != c.link && p.host.Master != c.link.Name {
			known = false // that address is a pod of another carrier
		}
		var owner string
		switch {
		case known && strings.EqualFold(p.peer.MAC, n.MAC):
			continue
		case known:
			owner = "belongs to no interface the doctor sees"
		}
		for _, ip := range sortedPods(v) {
			if other := v.pods[ip]; strings.EqualFold(other.peer.MAC, n.MAC) {
				owner = "is the MAC of the pod " + ip.String() + " (" + other.String() + ")"
				break
			}
		}
		if links := v.macs[strings.ToLower(n.MAC)]; len(links) > 0 {
			owner = "is the MAC of the node's own " + strings.Join(links, ", ")
		}
		if owner == "" {
			continue // the pod is not visible and the MAC is nobody's the doctor knows
		}
		f := Finding{
			Class:    ClassNeighbourWrongMAC,
			Severity: SeverityWarning,
			Culprit:  n.String(),
			Evidence: []string{c.describe(), fmt.Sprintf("%s %s", n.MAC, owner)},
			Fix:      v.fix(fmt.Sprintf("ip neigh del %s dev %s", n.IP, n.Dev)),
		}
		podText := "the pod " + n.IP.String()
		if known {
			podText += " (" + p.String() + ")"
			f.Evidence = append(f.Evidence, fmt.Sprintf("pod %s is %s", n.IP, p))
		}
		f.RootCause = fmt.Sprintf("The node's neighbour entry for %s holds the MAC %s, which %s: the node sends every frame for %s there, so the pod is unreachable from the node and through it.",
			podText, n.MAC, owner, n.IP)
		if n.State == "PERMANENT" || n.State == "NOARP" {
			f.Severity = SeverityError
			f.RootCause += " The entry is " + n.State + ": the kernel never corrects it."
			if known {
				f.Fix = v.fix(fmt.Sprintf("ip neigh replace %s lladdr %s dev %s nud permanent", n.IP, p.peer.MAC, n.Dev))
			}
		} else {
			f.RootCause += " The entry is " + n.State + ": the kernel re-checks it only after failed probes."
		}
		out = append(out, f)
	}
	return out
}

func containsAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
