package doctor

import (
	"fmt"
	"slices"
	"strings"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

// reconcileFix is the fix of a drift: the agent restores its records' kernel objects on
// its own, so the person's part is to find out why it did not.
const reconcileFix = "# podnet's agent restores it at its next reconcile (every --reconcile-interval, 10s by default);\n# if it stays missing, the agent's log names the reconcile error"

// driftRule compares the agent's records with the kernel: a bridge of a network, an
// attached endpoint's host veth and its host routes (routed) that are missing, and
// podnet veths that no record owns.
func driftRule(v *view) []Finding {
	in := v.s.Intended
	if in == nil {
		return nil
	}
	var out []Finding
	for _, n := range in.Networks {
		if n.Driver == api.DriverBridge && n.Bridge != "" && v.links[n.Bridge] == nil {
			out = append(out, Finding{
				Class: ClassStateDrift, Severity: SeverityError,
				Culprit:   "bridge " + n.Bridge + " (missing)",
				RootCause: fmt.Sprintf("The agent's network %s uses bridge %s, but the namespace has no such link: every pod of %s is cut off from its gateway and from the other pods.", n.Name, n.Bridge, n.Name),
				Fix:       reconcileFix,
				Evidence:  []string{fmt.Sprintf("network %s: driver bridge, bridge %s, subnets %s", n.Name, n.Bridge, subnetList(n))},
			})
		}
	}
	owned := map[string]bool{}
	for _, ep := range in.Endpoints {
		owned[ep.HostIf] = true
		if ep.State != api.StateAttached {
			continue // an ADD or DEL in flight
		}
		host := v.links[ep.HostIf]
		evidence := fmt.Sprintf("endpoint %s: host veth %s, addresses %s, sandbox %s", ep.EndpointKey, ep.HostIf, prefixes(ep.IPs), ep.Netns)
		switch {
		case host == nil:
			out = append(out, Finding{
				Class: ClassStateDrift, Severity: SeverityError,
				Culprit:   "veth " + ep.HostIf + " (missing)",
				RootCause: fmt.Sprintf("The agent's endpoint %s is attached through host veth %s, which does not exist: the pod (%s) has no network.", ep.EndpointKey, ep.HostIf, prefixes(ep.IPs)),
				Fix:       reconcileFix,
				Evidence:  []string{evidence},
			})
			continue
		case !host.Up:
			out = append(out, Finding{
				Class: ClassStateDrift, Severity: SeverityError,
				Culprit:   "link " + host.Name + " state DOWN",
				RootCause: fmt.Sprintf("The host veth %s of endpoint %s is down: the pod (%s) sends into nothing.", host.Name, ep.EndpointKey, prefixes(ep.IPs)),
				Fix:       v.fix("ip link set " + host.Name + " up"),
				Evidence:  []string{evidence},
			})
			continue
		}
		if host.Master != "" {
			continue // bridged: no host routes
		}
		for _, a := range ep.IPs {
			if v.hasHostRoute(a.Addr().String(), host.Name) {
				continue
			}
			out = append(out, Finding{
				Class: ClassStateDrift, Severity: SeverityError,
				Culprit:   fmt.Sprintf("route %s dev %s (missing)", a.Addr(), host.Name),
				RootCause: fmt.Sprintf("The routed endpoint %s has address %s behind %s, but the node has no host route to it: replies to the pod leave by another route or nowhere.", ep.EndpointKey, a.Addr(), host.Name),
				Fix:       v.fix(fmt.Sprintf("ip route replace %s dev %s scope link", a.Addr(), host.Name)),
				Evidence:  []string{evidence},
			})
		}
	}
	for i := range v.s.Links {
		l := &v.s.Links[i]
		if l.Kind != "veth" || !strings.HasPrefix(l.Name, spec.VethPrefix) || owned[l.Name] {
			continue
		}
		out = append(out, Finding{
			Class: ClassStateDrift, Severity: SeverityWarning,
			Culprit:   describeLink(l),
			RootCause: fmt.Sprintf("The podnet host veth %s belongs to no endpoint of the agent: the leftover of an ADD or DEL that was interrupted. It holds no address the agent hands out, and the agent's reconcile removes it.", l.Name),
			Fix:       v.fix("ip link del " + l.Name),
			Evidence:  []string{fmt.Sprintf("the agent has %s, none with host veth %s", plural(len(in.Endpoints), "endpoint"), l.Name)},
		})
	}
	return out
}

// hasHostRoute reports whether the main table routes addr (a host route) through dev.
func (v *view) hasHostRoute(addr, dev string) bool {
	return slices.ContainsFunc(v.s.Routes, func(r Route) bool {
		return r.Table == 254 && r.Dst.IsSingleIP() && r.Dst.Addr().String() == addr && r.Dev == dev
	})
}

func subnetList(n api.Network) string {
	var s []string
	for _, sub := range n.Subnets {
		s = append(s, sub.Prefix.String())
	}
	return strings.Join(s, ", ")
}
