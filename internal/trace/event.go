package trace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Attributes of NFT_MSG_TRACE that golang.org/x/sys/unix does not define yet (Linux
// 6.16, include/uapi/linux/netfilter/nf_tables.h: the packet's conntrack view).
const (
	nftaTraceCtID        = 18 // NFTA_TRACE_CT_ID: u32, the id ctnetlink reports (CTA_ID)
	nftaTraceCtDirection = 19 // NFTA_TRACE_CT_DIRECTION: u8, 0 original, 1 reply
	nftaTraceCtStatus    = 20 // NFTA_TRACE_CT_STATUS: be32, IPS_* bits
	nftaTraceCtState     = 21 // NFTA_TRACE_CT_STATE: be32, NF_CT_STATE_* bits
)

// Event types (NFTA_TRACE_TYPE).
const (
	TypeRule   = "rule"   // a rule matched; Verdict is what it said (continue for a rule without verdict)
	TypeReturn = "return" // the end of a regular chain (or a return rule): back to the caller
	TypePolicy = "policy" // the end of a base chain: its policy decided
)

// Event is one nf_tables trace message: a packet marked with nftrace that went through
// a rule, or through the end of a chain. The kernel sends the packet's headers, its
// interfaces and its conntrack view with the first event of each base chain only
// (HasPacket); the other events of the same base chain have the same ID.
type Event struct {
	// ID is the kernel's pseudo-id of the packet: the same within one base chain, and
	// usually from one hook to the next, but not to be relied upon across hooks.
	ID     uint32 `json:"id"`
	Type   string `json:"type"`
	Family string `json:"family"` // of the table: inet, ip, ip6, bridge, netdev, arp
	// NFProto is the protocol the hook processes: ipv4 or ipv6 in an inet table.
	NFProto string `json:"nfproto"`
	Table   string `json:"table"`
	Chain   string `json:"chain"`
	// Handle is the rule's handle (TypeRule, and a return rule); 0 for the end of a chain.
	Handle  uint64 `json:"handle,omitempty"`
	Verdict string `json:"verdict,omitempty"` // accept, drop, continue, jump CHAIN, goto CHAIN, return, queue, stolen
	// Policy is the verdict of a base chain's policy (TypePolicy).
	Policy string `json:"policy,omitempty"`
	Mark   uint32 `json:"mark,omitempty"`

	HasPacket bool   `json:"hasPacket,omitempty"`
	IIF       int    `json:"iif,omitempty"`
	OIF       int    `json:"oif,omitempty"`
	LL        []byte `json:"ll,omitempty"`
	Network   []byte `json:"network,omitempty"`
	Transport []byte `json:"transport,omitempty"`
	// Ct is the conntrack view of the packet, from Linux 6.16 on; nil before, or when
	// the packet has not been seen by conntrack yet (raw priority) or is invalid.
	Ct *CtInfo `json:"ct,omitempty"`
}

// CtInfo is the conntrack view of a traced packet.
type CtInfo struct {
	ID        uint32 `json:"id,omitempty"` // 0: untracked
	Direction string `json:"direction,omitempty"`
	State     string `json:"state"`            // new, established, related, untracked, as nft names them
	Status    uint32 `json:"status,omitempty"` // IPS_* bits
}

// ErrNotTrace is returned by Decode for a netlink message that is not an nf_tables trace.
var ErrNotTrace = errors.New("not an nf_tables trace message")

// traceType is the header type of NFT_MSG_TRACE.
const traceType = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_TRACE)

// Decode decodes one NFT_MSG_TRACE message.
func Decode(m netlink.Message) (Event, error) {
	if m.Header.Type != traceType {
		return Event{}, fmt.Errorf("message type %#x: %w", m.Header.Type, ErrNotTrace)
	}
	if len(m.Data) < 4 {
		return Event{}, fmt.Errorf("trace message of %d bytes", len(m.Data))
	}
	e := Event{Family: familyName(m.Data[0])}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return Event{}, fmt.Errorf("trace message: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	var ct CtInfo
	var hasCt bool
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TRACE_ID:
			e.ID = ad.Uint32()
		case unix.NFTA_TRACE_TYPE:
			switch t := ad.Uint32(); t {
			case unix.NFT_TRACETYPE_RULE:
				e.Type = TypeRule
			case unix.NFT_TRACETYPE_RETURN:
				e.Type = TypeReturn
			case unix.NFT_TRACETYPE_POLICY:
				e.Type = TypePolicy
			default:
				e.Type = fmt.Sprintf("type-%d", t)
			}
		case unix.NFTA_TRACE_TABLE:
			e.Table = ad.String()
		case unix.NFTA_TRACE_CHAIN:
			e.Chain = ad.String()
		case unix.NFTA_TRACE_RULE_HANDLE:
			e.Handle = ad.Uint64()
		case unix.NFTA_TRACE_VERDICT:
			ad.Nested(func(nd *netlink.AttributeDecoder) error {
				e.Verdict = decodeVerdict(nd)
				return nil
			})
		case unix.NFTA_TRACE_POLICY:
			e.Policy = verdictName(int32(ad.Uint32()), "")
		case unix.NFTA_TRACE_NFPROTO:
			e.NFProto = nfprotoName(uint8(ad.Uint32()))
		case unix.NFTA_TRACE_MARK:
			e.Mark = ad.Uint32()
		case unix.NFTA_TRACE_IIF:
			e.IIF, e.HasPacket = int(ad.Uint32()), true
		case unix.NFTA_TRACE_OIF:
			e.OIF, e.HasPacket = int(ad.Uint32()), true
		case unix.NFTA_TRACE_LL_HEADER:
			e.LL, e.HasPacket = ad.Bytes(), true
		case unix.NFTA_TRACE_NETWORK_HEADER:
			e.Network, e.HasPacket = ad.Bytes(), true
		case unix.NFTA_TRACE_TRANSPORT_HEADER:
			e.Transport, e.HasPacket = ad.Bytes(), true
		case nftaTraceCtID:
			// The kernel puts the id as it is (no byte swap), as ctnetlink does for CTA_ID:
			// read both the same way, big-endian.
			ct.ID, hasCt = ad.Uint32(), true
		case nftaTraceCtDirection:
			if ad.Uint8() == 0 {
				ct.Direction = "original"
			} else {
				ct.Direction = "reply"
			}
			hasCt = true
		case nftaTraceCtStatus:
			ct.Status, hasCt = ad.Uint32(), true
		case nftaTraceCtState:
			ct.State, hasCt = ctStateName(ad.Uint32()), true
		}
	}
	if err := ad.Err(); err != nil {
		return Event{}, fmt.Errorf("trace message: %w", err)
	}
	if hasCt {
		e.Ct = &ct
	}
	return e, nil
}

func decodeVerdict(ad *netlink.AttributeDecoder) string {
	var code int32
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	return verdictName(code, chain)
}

// verdictName names a verdict code as nft does.
func verdictName(code int32, chain string) string {
	switch code {
	case unix.NFT_CONTINUE:
		return "continue"
	case unix.NFT_BREAK:
		return "break"
	case unix.NFT_JUMP:
		return "jump " + chain
	case unix.NFT_GOTO:
		return "goto " + chain
	case unix.NFT_RETURN:
		return "return"
	}
	// Netfilter verdicts (linux/netfilter.h), in the low byte (NF_VERDICT_MASK).
	switch uint32(code) & 0xff {
	case 0:
		return "drop"
	case 1:
		return "accept"
	case 2:
		return "stolen"
	case 3:
		return "queue"
	case 4:
		return "repeat"
	case 5:
		return "stop"
	}
	return fmt.Sprintf("verdict %d", code)
}

// familyName names an nf_tables family as nft does.
func familyName(f uint8) string {
	switch f {
	case unix.NFPROTO_INET:
		return "inet"
	case unix.NFPROTO_IPV4:
		return "ip"
	case unix.NFPROTO_IPV6:
		return "ip6"
	case unix.NFPROTO_BRIDGE:
		return "bridge"
	case unix.NFPROTO_NETDEV:
		return "netdev"
	case unix.NFPROTO_ARP:
		return "arp"
	}
	return fmt.Sprintf("family-%d", f)
}

// nfprotoName names the protocol of a hook as nft's meta nfproto does.
func nfprotoName(p uint8) string {
	switch p {
	case unix.NFPROTO_IPV4:
		return "ipv4"
	case unix.NFPROTO_IPV6:
		return "ipv6"
	case unix.NFPROTO_BRIDGE:
		return "bridge"
	case unix.NFPROTO_ARP:
		return "arp"
	case unix.NFPROTO_NETDEV:
		return "netdev"
	case unix.NFPROTO_INET:
		return "inet"
	}
	return fmt.Sprintf("nfproto-%d", p)
}

// Conntrack state bits as the ct expression sees them (NF_CT_STATE_BIT of enum
// ip_conntrack_info: the reply variants share the bits of the original ones).
const (
	ctStateInvalid     = 1 << 0
	ctStateEstablished = 1 << 1
	ctStateRelated     = 1 << 2
	ctStateNew         = 1 << 3
	ctStateUntracked   = 1 << 6
)

func ctStateName(bits uint32) string {
	return bitNames(bits, []bitName{
		{ctStateInvalid, "invalid"}, {ctStateEstablished, "established"}, {ctStateRelated, "related"},
		{ctStateNew, "new"}, {ctStateUntracked, "untracked"},
	})
}

// Conntrack status bits (enum ip_conntrack_status), named as nft names them.
var ctStatusBits = []bitName{
	{1 << 0, "expected"}, {1 << 1, "seen-reply"}, {1 << 2, "assured"}, {1 << 3, "confirmed"},
	{1 << 4, "snat"}, {1 << 5, "dnat"}, {1 << 6, "seq-adjust"}, {1 << 7, "snat-done"}, {1 << 8, "dnat-done"},
	{1 << 9, "dying"}, {1 << 10, "fixed-timeout"}, {1 << 11, "template"}, {1 << 12, "untracked"},
	{1 << 13, "helper"}, {1 << 14, "offload"}, {1 << 15, "hw-offload"},
}

// Conntrack status bits.
const (
	ipsSeenReply = 1 << 1
	ipsDstNAT    = 1 << 5
)

type bitName struct {
	bit  uint32
	name string
}

// bitNames lists the names of the bits set in v, comma-separated, with the bits it has
// no name for in hex.
func bitNames(v uint32, names []bitName) string {
	var out []string
	for _, b := range names {
		if v&b.bit != 0 {
			out = append(out, b.name)
			v &^= b.bit
		}
	}
	if v != 0 {
		out = append(out, fmt.Sprintf("%#x", v))
	}
	return strings.Join(out, ",")
}

// Header is what a trace event shows of a packet's IP and transport headers.
type Header struct {
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	Proto uint8      `json:"proto"`
	SPort uint16     `json:"sport,omitempty"` // TCP, UDP, SCTP
	DPort uint16     `json:"dport,omitempty"`
	// TCPFlags are the flags of a TCP segment, FIN 0x01 to CWR 0x80.
	TCPFlags uint8 `json:"tcpFlags,omitempty"`
	// ICMP type, code and echo id of an ICMP or ICMPv6 message.
	ICMPType uint8  `json:"icmpType,omitempty"`
	ICMPCode uint8  `json:"icmpCode,omitempty"`
	ICMPID   uint16 `json:"icmpID,omitempty"`
	// ICMPEcho is set for an echo request or reply (ICMPID is then meaningful).
	ICMPEcho bool `json:"icmpEcho,omitempty"`
}

// ParseHeader decodes the network and transport headers of a trace event (each cut
// after 40 and 20 bytes by the kernel). ok is false when network holds no IPv4 or IPv6
// header.
func ParseHeader(network, transport []byte) (h Header, ok bool) {
	if len(network) < 1 {
		return Header{}, false
	}
	switch network[0] >> 4 {
	case 4:
		if len(network) < 20 {
			return Header{}, false
		}
		h.Src = netip.AddrFrom4([4]byte(network[12:16]))
		h.Dst = netip.AddrFrom4([4]byte(network[16:20]))
		h.Proto = network[9]
	case 6:
		if len(network) < 40 {
			return Header{}, false
		}
		h.Src = netip.AddrFrom16([16]byte(network[8:24]))
		h.Dst = netip.AddrFrom16([16]byte(network[24:40]))
		h.Proto = network[6] // the kernel gives the transport header after extension headers
	default:
		return Header{}, false
	}
	t := transport
	switch h.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_UDPLITE, unix.IPPROTO_SCTP:
		if len(t) >= 4 {
			h.SPort, h.DPort = binary.BigEndian.Uint16(t[0:2]), binary.BigEndian.Uint16(t[2:4])
		}
		if h.Proto == unix.IPPROTO_TCP && len(t) >= 14 {
			h.TCPFlags = t[13]
		}
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		if len(t) >= 2 {
			h.ICMPType, h.ICMPCode = t[0], t[1]
		}
		if isEcho(h.Proto, h.ICMPType) && len(t) >= 6 {
			h.ICMPEcho, h.ICMPID = true, binary.BigEndian.Uint16(t[4:6])
		}
	}
	return h, true
}

// isEcho reports whether an ICMP(v6) type is an echo request or reply.
func isEcho(proto, typ uint8) bool {
	if proto == unix.IPPROTO_ICMP {
		return typ == 8 || typ == 0
	}
	return typ == 128 || typ == 129
}

// Reversed is the header of the reply to h.
func (h Header) Reversed() Header {
	r := h
	r.Src, r.Dst, r.SPort, r.DPort = h.Dst, h.Src, h.DPort, h.SPort
	return r
}

// String prints h as "tcp 10.0.0.2:41000 -> 10.0.0.3:80 [S]".
func (h Header) String() string {
	if !h.Src.IsValid() {
		return "?"
	}
	var b strings.Builder
	b.WriteString(protoName(h.Proto))
	if h.Proto == unix.IPPROTO_ICMPV6 {
		b.Reset()
		b.WriteString("icmpv6")
	}
	b.WriteString(" ")
	switch {
	case h.SPort != 0 || h.DPort != 0:
		fmt.Fprintf(&b, "%s -> %s", netip.AddrPortFrom(h.Src, h.SPort), netip.AddrPortFrom(h.Dst, h.DPort))
	default:
		fmt.Fprintf(&b, "%s -> %s", h.Src, h.Dst)
	}
	switch h.Proto {
	case unix.IPPROTO_TCP:
		b.WriteString(" [" + tcpFlagsShort(h.TCPFlags) + "]")
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		b.WriteString(" " + icmpTypeName(h.Proto, h.ICMPType))
		if h.ICMPEcho {
			fmt.Fprintf(&b, " id %d", h.ICMPID)
		} else if h.ICMPCode != 0 {
			fmt.Fprintf(&b, " code %d", h.ICMPCode)
		}
	}
	return b.String()
}

// tcpFlagsShort prints TCP flags the way tcpdump does: S, F, R, P, U, E, W, "." for ACK.
func tcpFlagsShort(f uint8) string {
	var b strings.Builder
	for _, x := range []struct {
		bit uint8
		c   byte
	}{{0x02, 'S'}, {0x01, 'F'}, {0x04, 'R'}, {0x08, 'P'}, {0x20, 'U'}, {0x40, 'E'}, {0x80, 'W'}, {0x10, '.'}} {
		if f&x.bit != 0 {
			b.WriteByte(x.c)
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// icmpTypeName names an ICMP or ICMPv6 type as nft does.
func icmpTypeName(proto, typ uint8) string {
	names := icmpTypes
	if proto == unix.IPPROTO_ICMPV6 {
		names = icmp6Types
	}
	if n, ok := names[typ]; ok {
		return n
	}
	return fmt.Sprintf("type %d", typ)
}

var icmpTypes = map[uint8]string{
	0: "echo-reply", 3: "destination-unreachable", 4: "source-quench", 5: "redirect", 8: "echo-request",
	9: "router-advertisement", 10: "router-solicitation", 11: "time-exceeded", 12: "parameter-problem",
	13: "timestamp-request", 14: "timestamp-reply", 15: "info-request", 16: "info-reply",
	17: "address-mask-request", 18: "address-mask-reply",
}

var icmp6Types = map[uint8]string{
	1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded", 4: "parameter-problem",
	128: "echo-request", 129: "echo-reply", 130: "mld-listener-query", 131: "mld-listener-report",
	132: "mld-listener-done", 133: "nd-router-solicit", 134: "nd-router-advert", 135: "nd-neighbor-solicit",
	136: "nd-neighbor-advert", 137: "nd-redirect", 138: "router-renumbering", 143: "mld2-listener-report",
}
