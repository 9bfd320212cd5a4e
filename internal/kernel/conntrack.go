package kernel

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// conntrackDumpRetries bounds how often a deletion pass is repeated when the conntrack
// dump was interrupted by concurrent changes (the pass still deletes what it saw).
const conntrackDumpRetries = 5

// FlushConntrack deletes the conntrack entries of ns whose original direction goes to
// dport (and to dst, unless dst is zero) over proto ("tcp" or "udp"), and returns how
// many it deleted. Removing a UDP port mapping needs it: as long as an entry for a
// client's flow exists, the kernel keeps sending that flow to the old backend.
//
// It works through a netfilter netlink socket opened in ns; the caller's namespace is
// not changed. Entries that vanish on their own meanwhile are not errors. Called twice,
// the second call deletes nothing and returns 0.
func FlushConntrack(ns netns.NsHandle, proto string, dst netip.Addr, dport uint16) (int, error) {
	var protoNum uint8
	switch proto {
	case "tcp":
		protoNum = unix.IPPROTO_TCP
	case "udp":
		protoNum = unix.IPPROTO_UDP
	default:
		return 0, fmt.Errorf("flush conntrack: protocol %q: want tcp or udp", proto)
	}
	if dport == 0 {
		return 0, fmt.Errorf("flush conntrack %s: port 0", proto)
	}
	dst = dst.Unmap().WithZone("")
	what := fmt.Sprintf("%s dport %d", proto, dport)
	if dst.IsValid() {
		what = fmt.Sprintf("%s dst %s dport %d", proto, dst, dport)
	}

	filter := &netlink.ConntrackFilter{}
	if err := filter.AddProtocol(protoNum); err != nil {
		return 0, fmt.Errorf("flush conntrack %s: %w", what, err)
	}
	if err := filter.AddPort(netlink.ConntrackOrigDstPort, dport); err != nil {
		return 0, fmt.Errorf("flush conntrack %s: %w", what, err)
	}
	families := []netlink.InetFamily{unix.AF_INET, unix.AF_INET6}
	if dst.IsValid() {
		if err := filter.AddIP(netlink.ConntrackOrigDstIP, dst.AsSlice()); err != nil {
			return 0, fmt.Errorf("flush conntrack %s: %w", what, err)
		}
		families = families[:1]
		if dst.Is6() {
			families = []netlink.InetFamily{unix.AF_INET6}
		}
	}

	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return 0, fmt.Errorf("flush conntrack %s: netlink handle: %w", what, err)
	}
	defer h.Close()

	total := 0
	for _, family := range families {
		for attempt := 1; ; attempt++ {
			n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, family, filter)
			total += int(n)
			if err == nil {
				break
			}
			if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == conntrackDumpRetries {
				return total, fmt.Errorf("flush conntrack %s: %w", what, err)
			}
		}
	}
	return total, nil
}

// ConntrackFlows returns the conntrack entries of ns of one address family (the IPv4
// ones, or with v6 the IPv6 ones), dumped again when the dump was interrupted by
// concurrent changes.
func ConntrackFlows(ns netns.NsHandle, v6 bool) ([]*netlink.ConntrackFlow, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("read conntrack: %w", err)
	}
	defer h.Close()
	family := netlink.InetFamily(unix.AF_INET)
	if v6 {
		family = unix.AF_INET6
	}
	var flows []*netlink.ConntrackFlow
	for range conntrackDumpRetries {
		if flows, err = h.ConntrackTableList(netlink.ConntrackTable, family); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read conntrack: %w", err)
	}
	return flows, nil
}
