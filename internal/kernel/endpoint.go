package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/plan"
)

// ErrSandboxIfExists means the sandbox already has an interface with the requested name.
var ErrSandboxIfExists = errors.New("sandbox interface exists")

// AddEndpoint creates the endpoint's veth pair with the sandbox end directly inside
// sandbox, addresses it, brings it up and adds its routes; then the host end's sysctls
// (routed) are written, the host end comes up and the node routes through it are
// added. A host veth that is up with the node routes its alias lists marks a complete
// endpoint (EndpointComplete). On any failure everything it created is removed. A
// leftover host veth of the same name (same endpoint key, from a crash) is replaced.
// Finally the sandbox addresses are announced (see announce) so that stale neighbour
// entries are replaced at once.
func (n *Node) AddEndpoint(sandbox netns.NsHandle, ep plan.Endpoint) (err error) {
	attrs := netlink.LinkAttrs{Name: ep.HostIf, MTU: ep.MTU, HardwareAddr: ep.HostMAC, TxQLen: -1}
	if ep.Master != "" {
		master, err := n.h.LinkByName(ep.Master)
		if err != nil {
			return fmt.Errorf("look up bridge %s: %w", ep.Master, err)
		}
		attrs.MasterIndex = master.Attrs().Index
	}
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         ep.SandboxIf,
		PeerMTU:          uint32(ep.MTU),
		PeerHardwareAddr: ep.MAC,
		PeerNamespace:    netlink.NsFd(int(sandbox)),
	}
	if err := n.h.LinkAdd(veth); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create veth %s: %w", ep.HostIf, err)
		}
		exists, lerr := n.LinkExists(ep.HostIf)
		if lerr != nil || !exists {
			return fmt.Errorf("%w: %s", ErrSandboxIfExists, ep.SandboxIf)
		}
		if err := n.DeleteLink(ep.HostIf); err != nil {
			return err
		}
		if err := n.h.LinkAdd(veth); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%w: %s", ErrSandboxIfExists, ep.SandboxIf)
			}
			return fmt.Errorf("create veth %s: %w", ep.HostIf, err)
		}
	}
	defer func() {
		if err != nil {
			_ = n.DeleteLink(ep.HostIf)
		}
	}()
	if ep.Hairpin {
		if err := n.h.LinkSetHairpin(veth, true); err != nil {
			return fmt.Errorf("host interface %s: hairpin mode: %w", ep.HostIf, err)
		}
	}
	sh, link, err := configureSandbox(sandbox, ep)
	if err != nil {
		return err
	}
	defer sh.Close()
	if alias := nodeRoutesAlias(ep.NodeRoutes); alias != "" {
		// Not at creation: the kernel ignores an alias in a request that creates a veth.
		if err := n.h.LinkSetAlias(veth, alias); err != nil {
			return fmt.Errorf("host interface %s: set alias: %w", ep.HostIf, err)
		}
	}
	if len(ep.HostSysctls) > 0 {
		err := Do(n.ns, func() error {
			for _, sc := range ep.HostSysctls {
				if err := writeProcSys(sc.Key, sc.Value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("host interface %s: %w", ep.HostIf, err)
		}
	}
	if err := n.h.LinkSetUp(veth); err != nil {
		return fmt.Errorf("set %s up: %w", ep.HostIf, err)
	}
	// IPv4 refuses routes through a device that is down: the node routes come right
	// after, and EndpointComplete checks them (the alias lists them).
	for _, r := range ep.NodeRoutes {
		if err := n.h.RouteReplace(routeOf(veth.Attrs().Index, r)); err != nil {
			return fmt.Errorf("host interface %s: add node route %s: %w", ep.HostIf, r.Dst, err)
		}
	}
	dev := veth.Attrs().Index
	if ep.Master != "" {
		dev = veth.Attrs().MasterIndex
	}
	if err := setNeighbors(n.h, dev, ep.NodeNeighbors); err != nil {
		return fmt.Errorf("host interface %s: %w", ep.HostIf, err)
	}
	return n.announce(sandbox, sh, link, ep)
}

// setNeighbors writes neighbour entries in state stale: used at once, confirmed by a
// unicast probe later. They spare the first packet a resolution, nothing more: when
// the kernel's neighbour table is full (ENOBUFS: gc_thresh3 entries, 1,024 by default,
// counted over every namespace of the machine, and none old enough to collect, as when
// a node attaches a thousand pods in a few seconds), an entry is left out and ARP or ND
// resolves the address at the first packet.
func setNeighbors(h *netlink.Handle, ifindex int, ns []plan.Neighbor) error {
	for _, ne := range ns {
		family := netlink.FAMILY_V4
		if ne.IP.Is6() {
			family = netlink.FAMILY_V6
		}
		err := h.NeighSet(&netlink.Neigh{LinkIndex: ifindex, Family: family, State: netlink.NUD_STALE, IP: ne.IP.AsSlice(), HardwareAddr: ne.MAC})
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			return fmt.Errorf("neighbour %s lladdr %s: %w", ne.IP, ne.MAC, err)
		}
	}
	return nil
}

// EndpointComplete reports whether the host veth of an endpoint exists, is up, and has
// the node routes its alias lists (routed endpoints), which AddEndpoint does last.
func (n *Node) EndpointComplete(hostIf string) (bool, error) {
	link, err := n.h.LinkByName(hostIf)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return false, nil
	}
	want, ok := parseNodeRoutesAlias(link.Attrs().Alias)
	if !ok || len(want) == 0 {
		return true, nil // no node routes planned (bridge endpoint)
	}
	missing, err := n.missingNodeRoutes(link, want)
	return len(missing) == 0, err
}

// nodeRoutesAlias is the alias AddEndpoint gives a host veth before it comes up: the
// node routes the endpoint needs, so that EndpointComplete can tell from the kernel
// alone whether they were all added (IPv4 refuses routes through a device that is
// down, so they cannot come before it). "" when there are none.
func nodeRoutesAlias(routes []plan.Route) string {
	if len(routes) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(nodeRoutesAliasPrefix)
	for _, r := range routes {
		b.WriteString(" ")
		b.WriteString(r.Dst.String())
	}
	return b.String()
}

const nodeRoutesAliasPrefix = "podnet node routes:"

func parseNodeRoutesAlias(alias string) ([]netip.Prefix, bool) {
	rest, ok := strings.CutPrefix(alias, nodeRoutesAliasPrefix)
	if !ok {
		return nil, false
	}
	var out []netip.Prefix
	for _, f := range strings.Fields(rest) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, false
		}
		out = append(out, p)
	}
	return out, true
}

// missingNodeRoutes returns the prefixes of want that have no main-table route through link.
func (n *Node) missingNodeRoutes(link netlink.Link, want []netip.Prefix) ([]netip.Prefix, error) {
	routes, err := retry(func() ([]netlink.Route, error) { return n.h.RouteList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("host interface %s: list routes: %w", link.Attrs().Name, err)
	}
	var missing []netip.Prefix
	for _, p := range want {
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && prefixOf(r.Dst) == p }) {
			missing = append(missing, p)
		}
	}
	return missing, nil
}

// configureSandbox does the sandbox side in one namespace switch: sysctls, then through
// a netlink socket opened inside the sandbox the addresses, links up and routes. It
// returns that socket's handle and the sandbox link.
func configureSandbox(sandbox netns.NsHandle, ep plan.Endpoint) (*netlink.Handle, netlink.Link, error) {
	has6 := slices.ContainsFunc(ep.Addrs, func(p netip.Prefix) bool { return p.Addr().Is6() })
	var sh *netlink.Handle
	err := Do(sandbox, func() error {
		// Announce addresses on link up and on hardware address changes (announce).
		if err := setIPv4Conf(ep.SandboxIf, ipv4DevconfARPNotify, 1); err != nil {
			return fmt.Errorf("sysctl net.ipv4.conf.%s.arp_notify=1: %w", ep.SandboxIf, err)
		}
		if has6 {
			if err := writeProcSys("net/ipv6/conf/"+ep.SandboxIf+"/ndisc_notify", "1"); err != nil {
				return err
			}
		}
		var err error
		sh, err = netlink.NewHandle() // its socket stays bound to the sandbox
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox %s: %w", ep.SandboxIf, err)
	}
	link, err := configureSandboxLink(sh, ep)
	if err != nil {
		sh.Close()
		return nil, nil, err
	}
	return sh, link, nil
}

func configureSandboxLink(sh *netlink.Handle, ep plan.Endpoint) (netlink.Link, error) {
	link, err := sh.LinkByName(ep.SandboxIf)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", ep.SandboxIf, err)
	}
	for _, p := range ep.Addrs {
		if err := sh.AddrAdd(link, addrOf(p)); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("sandbox %s: add address %s: %w", ep.SandboxIf, p, err)
		}
	}
	if err := sh.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("sandbox %s: set up: %w", ep.SandboxIf, err)
	}
	if lo, err := sh.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
		if err := sh.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("sandbox lo: set up: %w", err)
		}
	}
	for _, r := range ep.Routes {
		if err := sh.RouteReplace(routeOf(link.Attrs().Index, r)); err != nil {
			return nil, fmt.Errorf("sandbox %s: add route %s via %s: %w", ep.SandboxIf, r.Dst, r.GW, err)
		}
	}
	if err := setNeighbors(sh, link.Attrs().Index, ep.SandboxNeighbors); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", ep.SandboxIf, err)
	}
	return link, nil
}

// CheckEndpoint verifies that the endpoint's interfaces, addresses and routes exist as
// planned: the host end is a port of its bridge, or (no bridge: routed) has no master,
// its planned MAC, is up, has its node routes and sysctls. The error names the first
// thing missing.
func (n *Node) CheckEndpoint(sandbox netns.NsHandle, ep plan.Endpoint) error {
	host, err := n.h.LinkByName(ep.HostIf)
	if err != nil {
		return fmt.Errorf("host interface %s: %w", ep.HostIf, err)
	}
	if ep.Master != "" {
		if master, err := n.h.LinkByName(ep.Master); err != nil || host.Attrs().MasterIndex != master.Attrs().Index {
			return fmt.Errorf("host interface %s is not a port of bridge %s", ep.HostIf, ep.Master)
		}
	} else if err := n.checkRoutedHost(host, ep); err != nil {
		return err
	}
	sh, err := netlink.NewHandleAt(sandbox)
	if err != nil {
		return fmt.Errorf("netlink handle for sandbox: %w", err)
	}
	defer sh.Close()
	link, err := sh.LinkByName(ep.SandboxIf)
	if err != nil {
		return fmt.Errorf("sandbox interface %s: %w", ep.SandboxIf, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("sandbox interface %s is down", ep.SandboxIf)
	}
	if ep.MAC != nil && link.Attrs().HardwareAddr.String() != ep.MAC.String() {
		return fmt.Errorf("sandbox interface %s has mac %s, want %s", ep.SandboxIf, link.Attrs().HardwareAddr, ep.MAC)
	}
	addrs, err := sh.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("sandbox %s: list addresses: %w", ep.SandboxIf, err)
	}
	for _, p := range ep.Addrs {
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return prefixOf(a.IPNet) == p }) {
			return fmt.Errorf("sandbox interface %s lacks address %s", ep.SandboxIf, p)
		}
	}
	routes, err := sh.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("sandbox %s: list routes: %w", ep.SandboxIf, err)
	}
	for _, r := range ep.Routes {
		ok := slices.ContainsFunc(routes, func(kr netlink.Route) bool {
			dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if r.Dst.Addr().Is6() {
				dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			if kr.Dst != nil {
				dst = prefixOf(kr.Dst)
			}
			gw, _ := netip.AddrFromSlice(kr.Gw)
			return dst == r.Dst && gw.Unmap() == r.GW
		})
		if !ok {
			return fmt.Errorf("sandbox interface %s lacks route %s via %s", ep.SandboxIf, r.Dst, r.GW)
		}
	}
	return nil
}

// checkRoutedHost verifies the host end of an endpoint without a bridge: no master,
// its MAC, up, its node routes and its sysctls.
func (n *Node) checkRoutedHost(host netlink.Link, ep plan.Endpoint) error {
	attrs := host.Attrs()
	if attrs.MasterIndex != 0 {
		return fmt.Errorf("host interface %s is a port of interface %d, want no master", ep.HostIf, attrs.MasterIndex)
	}
	if ep.HostMAC != nil && attrs.HardwareAddr.String() != ep.HostMAC.String() {
		return fmt.Errorf("host interface %s has mac %s, want %s", ep.HostIf, attrs.HardwareAddr, ep.HostMAC)
	}
	if attrs.Flags&net.FlagUp == 0 {
		return fmt.Errorf("host interface %s is down", ep.HostIf)
	}
	var want []netip.Prefix
	for _, r := range ep.NodeRoutes {
		want = append(want, r.Dst)
	}
	missing, err := n.missingNodeRoutes(host, want)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("node lacks route %s dev %s", missing[0], ep.HostIf)
	}
	return Do(n.ns, func() error {
		for _, sc := range ep.HostSysctls {
			b, err := os.ReadFile("/proc/sys/" + sc.Key)
			if err != nil {
				return fmt.Errorf("host interface %s: %w", ep.HostIf, err)
			}
			if got := strings.TrimSpace(string(b)); got != sc.Value {
				return fmt.Errorf("host interface %s: sysctl %s is %s, want %s", ep.HostIf, strings.ReplaceAll(sc.Key, "/", "."), got, sc.Value)
			}
		}
		return nil
	})
}

func routeOf(ifindex int, r plan.Route) *netlink.Route {
	rt := &netlink.Route{LinkIndex: ifindex, Dst: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())}}
	if r.GW.IsValid() {
		rt.Gw = r.GW.AsSlice()
	} else {
		rt.Scope = netlink.SCOPE_LINK
	}
	if r.Dst.Bits() == 0 {
		rt.Dst = nil
		rt.Family = netlink.FAMILY_V4
		if r.Dst.Addr().Is6() {
			rt.Family = netlink.FAMILY_V6
		}
	}
	return rt
}

// ipv4DevconfARPNotify is IPV4_DEVCONF_ARP_NOTIFY (linux/ip.h): net.ipv4.conf.*.arp_notify.
const ipv4DevconfARPNotify = 22

// setIPv4Conf sets an IPv4 setting (IPV4_DEVCONF_*) of interface name in the current
// namespace through netlink (RTM_SETLINK, IFLA_AF_SPEC, AF_INET, IFLA_INET_CONF) rather
// than /proc/sys: the path's lookup compares the interface's entry of every namespace
// that has an interface of that name (every sandbox has an eth0), so its cost grows with
// the node's sandboxes. IPv6 has no such message for its settings (inet6_set_link_af).
func setIPv4Conf(name string, id int, value uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	conf := spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(id, nl.Uint32Attr(value))
	req.AddData(spec)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}
