package trace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Route is a route decision of one namespace for a packet of the flow, and the state of
// the neighbour it leads to.
type Route struct {
	// Namespace says whose decision it is: "source" (the sandbox the probe left from) or
	// "node".
	Namespace string     `json:"namespace"`
	Dst       netip.Addr `json:"dst"`
	Src       netip.Addr `json:"src,omitzero"`
	Iif       string     `json:"iif,omitempty"` // a packet received on Iif (forwarded), else one sent
	// Result is the route as `ip route get` prints it ("198.51.100.11 via 198.51.100.1 dev
	// eth0 src 198.51.100.10"), or "local" for an address of the namespace.
	Result string `json:"result,omitempty"`
	// Neighbour is the neighbour entry of the next hop ("198.51.100.1 lladdr ... REACHABLE"),
	// "none" when there is none yet.
	Neighbour string `json:"neighbour,omitempty"`
	// Err is why there is no route ("network is unreachable").
	Err string `json:"error,omitempty"`
}

func (r Route) String() string {
	q := r.Dst.String()
	if r.Src.IsValid() {
		q += " from " + r.Src.String()
	}
	if r.Iif != "" {
		q += " iif " + r.Iif
	}
	if r.Err != "" {
		return q + ": " + r.Err
	}
	s := q + ": " + r.Result
	if r.Neighbour != "" {
		s += "; neighbour " + r.Neighbour
	}
	return s
}

// LookupRoute asks namespace ns (named namespace in the result) for its route to dst, for
// a packet from src (zero: the namespace's choice) received on iif ("" for a packet the
// namespace sends itself).
func LookupRoute(ns netns.NsHandle, namespace string, dst, src netip.Addr, iif string) Route {
	r := Route{Namespace: namespace, Dst: dst, Src: src, Iif: iif}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer h.Close()
	opts := &netlink.RouteGetOptions{Iif: iif}
	if src.IsValid() {
		opts.SrcAddr = src.AsSlice()
	}
	routes, err := h.RouteGetWithOptions(dst.AsSlice(), opts)
	if err != nil {
		r.Err = routeError(err)
		return r
	}
	if len(routes) == 0 {
		r.Err = "no route"
		return r
	}
	rt := routes[0]
	var dev string
	if l, err := h.LinkByIndex(rt.LinkIndex); err == nil {
		dev = l.Attrs().Name
	}
	switch rt.Type {
	case unix.RTN_LOCAL:
		r.Result = "local"
		if dev != "" {
			r.Result += " dev " + dev
		}
		return r
	case unix.RTN_UNREACHABLE, unix.RTN_PROHIBIT, unix.RTN_BLACKHOLE:
		r.Err = map[int]string{unix.RTN_UNREACHABLE: "unreachable route", unix.RTN_PROHIBIT: "prohibit route", unix.RTN_BLACKHOLE: "blackhole route"}[rt.Type]
		return r
	}
	var b strings.Builder
	b.WriteString(dst.String())
	next := dst
	if rt.Gw != nil {
		gw, _ := netip.AddrFromSlice(rt.Gw)
		next = gw.Unmap()
		fmt.Fprintf(&b, " via %s", next)
	}
	if dev != "" {
		fmt.Fprintf(&b, " dev %s", dev)
	}
	if rt.Src != nil {
		fmt.Fprintf(&b, " src %s", rt.Src)
	}
	r.Result = b.String()
	r.Neighbour = neighbour(h, rt.LinkIndex, next)
	return r
}

func routeError(err error) string {
	switch {
	case errors.Is(err, unix.ENETUNREACH):
		return "no route (network is unreachable)"
	case errors.Is(err, unix.EHOSTUNREACH):
		return "no route (no route to host)"
	case errors.Is(err, unix.EINVAL):
		return "no route (invalid: is forwarding off, or the source an address of the node?)"
	case errors.Is(err, unix.EXDEV):
		return "refused by the reverse path filter (rp_filter)"
	}
	return err.Error()
}

// neighbour returns the neighbour entry of ip on interface index link, as ip neigh
// prints it.
func neighbour(h *netlink.Handle, link int, ip netip.Addr) string {
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	neighs, err := h.NeighList(link, fam)
	if err != nil {
		return ""
	}
	for _, n := range neighs {
		a, _ := netip.AddrFromSlice(n.IP)
		if a.Unmap() != ip {
			continue
		}
		s := ip.String()
		if len(n.HardwareAddr) > 0 {
			s += " lladdr " + net.HardwareAddr(n.HardwareAddr).String()
		}
		return s + " " + neighState(n.State)
	}
	return "none"
}

func neighState(s int) string {
	var names []string
	for _, x := range []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_FAILED, "FAILED"},
		{netlink.NUD_NOARP, "NOARP"}, {netlink.NUD_PERMANENT, "PERMANENT"},
	} {
		if s&x.bit != 0 {
			names = append(names, x.name)
		}
	}
	if len(names) == 0 {
		return "NONE"
	}
	return strings.Join(names, ",")
}
