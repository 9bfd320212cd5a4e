package trace

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Protocols a Flow may name.
const (
	TCP  = "tcp"
	UDP  = "udp"
	ICMP = "icmp" // ICMP for IPv4, ICMPv6 for IPv6; probes are echo requests
)

// Flow is what a trace follows: packets from Src to Dst, of protocol Proto, to port Port.
// Zero fields match anything: no Src, any source; no Proto, any protocol; Port 0, any
// port. Src and Dst, when both are set, are of one family.
type Flow struct {
	Src   netip.Addr `json:"src,omitzero"`
	Dst   netip.Addr `json:"dst"`
	Proto string     `json:"proto,omitempty"`
	Port  uint16     `json:"port,omitempty"`
}

// ParseTo parses the destination of a flow as `podnet trace --to` takes it:
// IP[:PORT][/tcp|udp|icmp], an IPv6 address with a port in brackets ([2001:db8::1]:80).
// A port without a protocol means TCP.
func ParseTo(s string) (Flow, error) {
	var f Flow
	rest := s
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		f.Proto = strings.ToLower(rest[i+1:])
		rest = rest[:i]
		switch f.Proto {
		case TCP, UDP, ICMP:
		default:
			return Flow{}, fmt.Errorf("destination %q: protocol %q: want tcp, udp or icmp", s, f.Proto)
		}
	}
	if a, err := netip.ParseAddr(strings.Trim(rest, "[]")); err == nil {
		f.Dst = a
	} else {
		ap, err := netip.ParseAddrPort(rest)
		if err != nil {
			return Flow{}, fmt.Errorf("destination %q: want IP[:PORT][/tcp|udp|icmp]", s)
		}
		if ap.Port() == 0 {
			return Flow{}, fmt.Errorf("destination %q: port 0", s)
		}
		f.Dst, f.Port = ap.Addr(), ap.Port()
	}
	if f.Dst.Zone() != "" {
		return Flow{}, fmt.Errorf("destination %q: an address with a zone cannot be traced", s)
	}
	f.Dst = f.Dst.Unmap()
	switch {
	case f.Port != 0 && f.Proto == "":
		f.Proto = TCP
	case f.Port != 0 && f.Proto == ICMP:
		return Flow{}, fmt.Errorf("destination %q: icmp has no port", s)
	}
	return f, nil
}

// Validate checks that f can be traced: a destination, one family, a known protocol.
func (f Flow) Validate() error {
	switch {
	case !f.Dst.IsValid():
		return fmt.Errorf("flow %s: no destination", f)
	case f.Src.IsValid() && f.Src.Is4() != f.Dst.Is4():
		return fmt.Errorf("flow %s: source and destination of different families", f)
	case f.Port != 0 && f.Proto != TCP && f.Proto != UDP:
		return fmt.Errorf("flow %s: a port needs tcp or udp", f)
	}
	switch f.Proto {
	case "", TCP, UDP, ICMP:
		return nil
	}
	return fmt.Errorf("flow %s: protocol %q: want tcp, udp or icmp", f, f.Proto)
}

// String prints f the way `podnet trace` takes it: "tcp 10.0.0.2 -> 10.0.0.3:80".
func (f Flow) String() string {
	src := "*"
	if f.Src.IsValid() {
		src = f.Src.String()
	}
	dst := f.Dst.String()
	if f.Port != 0 {
		dst = netip.AddrPortFrom(f.Dst, f.Port).String()
	}
	proto := f.Proto
	if proto == "" {
		proto = "any"
	}
	return proto + " " + src + " -> " + dst
}

// l4proto is the IP protocol number of f, 0 for any.
func (f Flow) l4proto() uint8 {
	switch f.Proto {
	case TCP:
		return unix.IPPROTO_TCP
	case UDP:
		return unix.IPPROTO_UDP
	case ICMP:
		if f.Dst.Is6() {
			return unix.IPPROTO_ICMPV6
		}
		return unix.IPPROTO_ICMP
	}
	return 0
}

// matches reports whether a packet with header h goes the way of f (original
// direction).
func (f Flow) matches(h Header) bool {
	if !h.Src.IsValid() {
		return false
	}
	return (!f.Src.IsValid() || h.Src == f.Src) && h.Dst == f.Dst &&
		(f.l4proto() == 0 || h.Proto == f.l4proto()) && (f.Port == 0 || h.DPort == f.Port)
}

// protoName names IP protocol p as nft does.
func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "ipv6-icmp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	case unix.IPPROTO_GRE:
		return "gre"
	case unix.IPPROTO_ESP:
		return "esp"
	case unix.IPPROTO_AH:
		return "ah"
	case unix.IPPROTO_UDPLITE:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}
