package trace

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// Tuple is one direction of a conntrack entry.
type Tuple struct {
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	SPort uint16     `json:"sport,omitempty"`
	DPort uint16     `json:"dport,omitempty"`
}

func (t Tuple) String() string {
	if t.SPort == 0 && t.DPort == 0 {
		return fmt.Sprintf("%s -> %s", t.Src, t.Dst)
	}
	return fmt.Sprintf("%s -> %s", netip.AddrPortFrom(t.Src, t.SPort), netip.AddrPortFrom(t.Dst, t.DPort))
}

// Conn is a conntrack entry: the tuple of the original direction, as the first packet
// came, and the tuple a reply must have, which NAT changed if it applied.
type Conn struct {
	Proto    uint8  `json:"proto"`
	Original Tuple  `json:"original"`
	Reply    Tuple  `json:"reply"`
	TCPState string `json:"tcpState,omitempty"`
	Mark     uint32 `json:"mark,omitempty"`
}

// NAT describes the translations of c: "dnat to 10.0.0.2:80", "snat to 192.0.2.1:40000".
func (c Conn) NAT() []string {
	var out []string
	if c.Reply.Src != c.Original.Dst || c.Reply.SPort != c.Original.DPort {
		out = append(out, "dnat to "+endpoint(c.Reply.Src, c.Reply.SPort))
	}
	if c.Reply.Dst != c.Original.Src || c.Reply.DPort != c.Original.SPort {
		out = append(out, "snat to "+endpoint(c.Reply.Dst, c.Reply.DPort))
	}
	return out
}

func endpoint(a netip.Addr, port uint16) string {
	if port == 0 {
		return a.String()
	}
	return netip.AddrPortFrom(a, port).String()
}

// ReadConntrack returns the conntrack entries of namespace ns whose original direction
// is a connection of f.
func ReadConntrack(ns netns.NsHandle, f Flow) ([]Conn, error) {
	flows, err := kernel.ConntrackFlows(ns, f.Dst.Is6())
	if err != nil {
		return nil, err
	}
	var out []Conn
	for _, fl := range flows {
		c := Conn{Proto: fl.Forward.Protocol, Original: tupleOf(fl.Forward), Reply: tupleOf(fl.Reverse), Mark: fl.Mark}
		if tcp, ok := fl.ProtoInfo.(*netlink.ProtoInfoTCP); ok {
			c.TCPState = tcpStateName(tcp.State)
		}
		h := Header{Src: c.Original.Src, Dst: c.Original.Dst, Proto: c.Proto, SPort: c.Original.SPort, DPort: c.Original.DPort}
		if f.matches(h) {
			out = append(out, c)
		}
	}
	return out, nil
}

func tupleOf(t netlink.IPTuple) Tuple {
	return Tuple{Src: addrOf(t.SrcIP), Dst: addrOf(t.DstIP), SPort: t.SrcPort, DPort: t.DstPort}
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func tcpStateName(s uint8) string {
	names := []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}
	if int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("state-%d", s)
}
