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
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/plan"
)

// ErrHostIfGone means the endpoint's host veth does not exist in the node (its sandbox
// went away, which takes the veth pair with it): there is nothing to repair.
var ErrHostIfGone = errors.New("host interface gone")

// RepairEndpoint compares the node side of an endpoint with its plan and restores what
// differs, reading first and writing only what differs: on an intact endpoint it
// changes nothing and returns no repairs. It returns what it repaired as short
// strings for logging ("master pn-blue", "route 10.1.0.5/32", "sysctl
// net.ipv4.conf.pnv….proxy_arp=1"), also when it fails part way.
//
// Compared, in the order AddEndpoint sets them: the host end's sysctls (the same
// ep.HostSysctls AddEndpoint writes), MAC, MTU, master (a port of ep.Master, which a
// bridge deleted and recreated has lost, and then its hairpin mode; routed: none),
// the alias EndpointComplete reads, up; then the node routes through it (routed:
// POD/32 and POD/128 dev HOSTVETH) and the node's neighbour entries for the sandbox.
// A neighbour entry with another MAC than planned is rewritten unless the kernel has
// confirmed it (reachable); a missing one is written again only when the link itself
// was repaired (down, or off its bridge: the kernel flushed the entries), since
// otherwise the kernel legitimately lets unused entries expire and resolves them on
// use. Addresses and routes of the bridge are EnsureBridge's; the sandbox side is
// the runtime's and is not touched.
//
// An error wrapping ErrHostIfGone means the host veth does not exist.
func (n *Node) RepairEndpoint(ep plan.Endpoint) (repaired []string, err error) {
	link, err := n.h.LinkByName(ep.HostIf)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("host interface %s: %w", ep.HostIf, ErrHostIfGone)
		}
		return nil, fmt.Errorf("host interface %s: %w", ep.HostIf, err)
	}
	if link.Type() != "veth" {
		return nil, fmt.Errorf("host interface %s: has type %s, want veth", ep.HostIf, link.Type())
	}
	var master netlink.Link
	if ep.Master != "" {
		if master, err = n.h.LinkByName(ep.Master); err != nil {
			return nil, fmt.Errorf("host interface %s: look up bridge %s: %w", ep.HostIf, ep.Master, err)
		}
	}
	attrs := link.Attrs()
	neighDev := attrs.Index
	if master != nil {
		neighDev = master.Attrs().Index
	}

	// One switch into the node for the /proc/sys values and the neighbour entries.
	var neighs []*netlink.Neigh
	err = Do(n.ns, func() error {
		for _, sc := range ep.HostSysctls {
			b, err := os.ReadFile("/proc/sys/" + sc.Key)
			if err != nil {
				return fmt.Errorf("sysctl %s: %w", strings.ReplaceAll(sc.Key, "/", "."), err)
			}
			if strings.TrimSpace(string(b)) == sc.Value {
				continue
			}
			if err := writeProcSys(sc.Key, sc.Value); err != nil {
				return err
			}
			repaired = append(repaired, "sysctl "+strings.ReplaceAll(sc.Key, "/", ".")+"="+sc.Value)
		}
		for _, ne := range ep.NodeNeighbors {
			got, err := getNeighbor(neighDev, ne.IP)
			if err != nil {
				return fmt.Errorf("neighbour %s: %w", ne.IP, err)
			}
			neighs = append(neighs, got)
		}
		return nil
	})
	if err != nil {
		return repaired, fmt.Errorf("host interface %s: %w", ep.HostIf, err)
	}

	linkRepaired := false
	fix := func(what string, f func() error) error {
		if err := f(); err != nil {
			return fmt.Errorf("host interface %s: repair %s: %w", ep.HostIf, what, err)
		}
		repaired = append(repaired, what)
		return nil
	}
	if ep.HostMAC != nil && attrs.HardwareAddr.String() != ep.HostMAC.String() {
		linkRepaired = true
		if err := fix("mac "+ep.HostMAC.String(), func() error { return n.h.LinkSetHardwareAddr(link, ep.HostMAC) }); err != nil {
			return repaired, err
		}
	}
	if ep.MTU != 0 && attrs.MTU != ep.MTU {
		if err := fix(fmt.Sprintf("mtu %d", ep.MTU), func() error { return n.h.LinkSetMTU(link, ep.MTU) }); err != nil {
			return repaired, err
		}
	}
	switch {
	case master != nil && attrs.MasterIndex != master.Attrs().Index:
		linkRepaired = true
		err := fix("master "+ep.Master, func() error {
			if err := n.h.LinkSetMasterByIndex(link, master.Attrs().Index); err != nil {
				return err
			}
			// Hairpin mode is a setting of the bridge port: a new port has it off.
			if ep.Hairpin {
				return n.h.LinkSetHairpin(link, true)
			}
			return nil
		})
		if err != nil {
			return repaired, err
		}
	case master == nil && attrs.MasterIndex != 0:
		linkRepaired = true
		if err := fix("master none", func() error { return n.h.LinkSetNoMaster(link) }); err != nil {
			return repaired, err
		}
	}
	if alias := nodeRoutesAlias(ep.NodeRoutes); alias != "" && attrs.Alias != alias {
		if err := fix("alias", func() error { return n.h.LinkSetAlias(link, alias) }); err != nil {
			return repaired, err
		}
	}
	if attrs.Flags&net.FlagUp == 0 {
		linkRepaired = true
		if err := fix("up", func() error { return n.h.LinkSetUp(link) }); err != nil {
			return repaired, err
		}
	}

	// Node routes: IPv4 refuses them through a device that is down, so after up.
	want := make([]netip.Prefix, 0, len(ep.NodeRoutes))
	for _, r := range ep.NodeRoutes {
		want = append(want, r.Dst)
	}
	if len(want) > 0 {
		missing, err := n.missingNodeRoutes(link, want)
		if err != nil {
			return repaired, err
		}
		for _, r := range ep.NodeRoutes {
			if !slices.Contains(missing, r.Dst) {
				continue
			}
			if err := fix("route "+r.Dst.String(), func() error { return n.h.RouteReplace(routeOf(attrs.Index, r)) }); err != nil {
				return repaired, err
			}
		}
	}

	for i, ne := range ep.NodeNeighbors {
		got := neighs[i]
		switch {
		case got == nil || got.HardwareAddr == nil: // missing, incomplete or failed
			if !linkRepaired {
				continue
			}
		case got.HardwareAddr.String() == ne.MAC.String():
			continue
		case got.State&netlink.NUD_REACHABLE != 0: // the sandbox answered with that MAC
			continue
		}
		if err := fix("neighbour "+ne.IP.String(), func() error { return setNeighbors(n.h, neighDev, []plan.Neighbor{ne}) }); err != nil {
			return repaired, err
		}
	}
	return repaired, nil
}

// getNeighbor looks up the neighbour entry for ip on ifindex, in the namespace of the
// current thread (inside Do). It asks the kernel for that one entry (RTM_GETNEIGH
// without dump, Linux 5.0+) instead of listing the whole table. nil when there is none.
func getNeighbor(ifindex int, ip netip.Addr) (*netlink.Neigh, error) {
	family := unix.AF_INET
	if ip.Is6() {
		family = unix.AF_INET6
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, 0)
	req.AddData(&netlink.Ndmsg{Family: uint8(family), Index: uint32(ifindex)})
	req.AddData(nl.NewRtAttr(netlink.NDA_DST, ip.AsSlice()))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	return netlink.NeighDeserialize(msgs[0])
}
