package trace

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// readRecorded returns the trace messages of testdata/name.nlmsg (captured from the kernel
// by the privileged tests with PODNET_TRACE_RECORD=1) and the rest of their input.
func readRecorded(t *testing.T, name string) ([]netlink.Message, Input) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name+".nlmsg"))
	must(t, err, "read "+name+".nlmsg")
	var msgs []netlink.Message
	for len(raw) > 0 {
		if len(raw) < 16 {
			t.Fatalf("%s.nlmsg: %d bytes left, less than a header", name, len(raw))
		}
		n := int(binary.NativeEndian.Uint32(raw[:4]))
		if n < 16 || n > len(raw) {
			t.Fatalf("%s.nlmsg: message of length %d, %d bytes left", name, n, len(raw))
		}
		var m netlink.Message
		must(t, m.UnmarshalBinary(raw[:n]), "unmarshal message")
		msgs = append(msgs, m)
		raw = raw[n:]
	}
	js, err := os.ReadFile(filepath.Join("testdata", name+".input.json"))
	must(t, err, "read "+name+".input.json")
	var in Input
	must(t, json.Unmarshal(js, &in), "parse "+name+".input.json")
	return msgs, in
}

// decodeAll decodes every message; each must be a trace event.
func decodeAll(t *testing.T, msgs []netlink.Message) []Event {
	t.Helper()
	var out []Event
	for i, m := range msgs {
		e, err := Decode(m)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		out = append(out, e)
	}
	return out
}

// The first events of a recorded trace of a SYN from a1 to a2 across bridge pn-a:
// the bridge marker's rule, then its policy, then podnet's bridge anti-spoofing; the
// conntrack view of that untracked flow, and of a tracked one (routed).
func TestDecodeRecorded(t *testing.T) {
	msgs, in := readRecorded(t, "bridge")
	events := decodeAll(t, msgs)
	first := events[0]
	if first.Family != "bridge" || first.NFProto != "bridge" || first.Table != TableName || first.Chain != chainMarkPrerouting ||
		first.Type != TypeRule || first.Handle == 0 || first.Verdict != "continue" || !first.HasPacket || first.IIF == 0 || first.Ct != nil {
		t.Errorf("first event %+v: want the bridge marker's rule, with the packet, before conntrack", first)
	}
	h, ok := ParseHeader(first.Network, first.Transport)
	if !ok || h.Src != in.Flow.Src || h.Dst != in.Flow.Dst || h.Proto != unix.IPPROTO_TCP || h.DPort != in.Flow.Port || h.TCPFlags != 0x02 {
		t.Errorf("first packet %s: want the SYN of %s", h, in.Flow)
	}
	if len(first.LL) < 14 || binary.BigEndian.Uint16(first.LL[12:14]) != 0x0800 {
		t.Errorf("link layer header %x: want an Ethernet header of IPv4", first.LL)
	}
	if e := events[2]; e.Type != TypePolicy || e.Policy != "accept" || e.HasPacket || e.ID != first.ID {
		t.Errorf("third event %+v: want the marker chain's policy, same packet id", e)
	}
	if e := events[3]; e.Family != "bridge" || e.Table != "podnet" || e.Chain != "antispoof" || e.Verdict != "accept" || e.Handle == 0 {
		t.Errorf("fourth event %+v: want podnet's bridge anti-spoofing accepting", e)
	}
	// Traffic within a bridge is untracked: the events say so, and the replies are
	// marked by their headers.
	i := slices.IndexFunc(events, func(e Event) bool { return e.Ct != nil })
	if i < 0 {
		t.Fatal("no event with the conntrack view")
	}
	if ct := events[i].Ct; ct.ID != 0 || ct.State != "untracked" {
		t.Errorf("first conntrack view %+v: want untracked", ct)
	}
	if !slices.ContainsFunc(events, func(e Event) bool {
		return e.Ct != nil && e.Ct.State == "untracked" && e.Chain == chainMarkUntracked
	}) {
		t.Error("no reply marked by the untracked reply marker")
	}
	if !slices.ContainsFunc(events, func(e Event) bool { return e.NFProto == "ipv4" && e.Family == "inet" && e.OIF != 0 }) {
		t.Error("no inet event with an output interface")
	}

	// Routed traffic is tracked: from conntrack on, the events say the connection's id,
	// state and direction.
	msgs, _ = readRecorded(t, "routed")
	events = decodeAll(t, msgs)
	i = slices.IndexFunc(events, func(e Event) bool { return e.Ct != nil })
	if i < 0 {
		t.Fatal("routed: no event with the conntrack view")
	}
	if ct := events[i].Ct; ct.ID == 0 || ct.State != "new" || ct.Direction != "original" {
		t.Errorf("routed: first conntrack view %+v: want a new connection, original direction", ct)
	}
	if !slices.ContainsFunc(events, func(e Event) bool {
		return e.Ct != nil && e.Ct.Direction == "reply" && e.Ct.State == "established" && e.Chain == chainMarkReplyPrerouting
	}) {
		t.Error("routed: no reply marked by the reply marker")
	}
}

func TestDecodeRecordedDrop(t *testing.T) {
	msgs, _ := readRecorded(t, "isolation")
	events := decodeAll(t, msgs)
	if !slices.ContainsFunc(events, func(e Event) bool {
		return e.Table == "podnet" && e.Chain == "forward" && e.Type == TypeRule && e.Verdict == "drop" && e.Handle != 0
	}) {
		t.Error("no drop by podnet's forward chain")
	}
}

// A message built attribute by attribute: every attribute the decoder knows.
func TestDecodeAttributes(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Uint32(unix.NFTA_TRACE_ID, 0xdeadbeef)
	ae.Uint32(unix.NFTA_TRACE_TYPE, unix.NFT_TRACETYPE_RULE)
	ae.String(unix.NFTA_TRACE_TABLE, "filter")
	ae.String(unix.NFTA_TRACE_CHAIN, "forward")
	ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 42)
	ae.Nested(unix.NFTA_TRACE_VERDICT, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(unix.NFTA_VERDICT_CODE, uint32(0xfffffffd)) // NFT_JUMP
		nae.String(unix.NFTA_VERDICT_CHAIN, "isolation")
		return nil
	})
	ae.Uint32(unix.NFTA_TRACE_NFPROTO, unix.NFPROTO_IPV6)
	ae.Uint32(unix.NFTA_TRACE_MARK, 0x10)
	ae.Uint32(unix.NFTA_TRACE_IIF, 3)
	ae.Uint16(unix.NFTA_TRACE_IIFTYPE, 1)
	ae.Uint32(unix.NFTA_TRACE_OIF, 4)
	src, dst := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	ip6 := make([]byte, 40)
	ip6[0], ip6[6] = 0x60, unix.IPPROTO_UDP
	copy(ip6[8:], src.AsSlice())
	copy(ip6[24:], dst.AsSlice())
	ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ip6)
	ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, []byte{0x9c, 0x40, 0, 53, 0, 8, 0, 0})
	ae.Uint32(nftaTraceCtID, 7)
	ae.Uint8(nftaTraceCtDirection, 1)
	ae.Uint32(nftaTraceCtStatus, ipsSeenReply|ipsDstNAT)
	ae.Uint32(nftaTraceCtState, ctStateEstablished)
	attrs, err := ae.Encode()
	must(t, err, "encode")
	m := netlink.Message{Header: netlink.Header{Type: traceType}, Data: append([]byte{unix.NFPROTO_INET, 0, 0, 0}, attrs...)}
	e, err := Decode(m)
	must(t, err, "decode")
	want := Event{ID: 0xdeadbeef, Type: TypeRule, Family: "inet", NFProto: "ipv6", Table: "filter", Chain: "forward", Handle: 42,
		Verdict: "jump isolation", Mark: 0x10, HasPacket: true, IIF: 3, OIF: 4, Network: ip6, Transport: []byte{0x9c, 0x40, 0, 53, 0, 8, 0, 0},
		Ct: &CtInfo{ID: 7, Direction: "reply", State: "established", Status: ipsSeenReply | ipsDstNAT}}
	gotJS, _ := json.Marshal(e)
	wantJS, _ := json.Marshal(want)
	if string(gotJS) != string(wantJS) {
		t.Errorf("decoded\n %s\nwant\n %s", gotJS, wantJS)
	}
	h, ok := ParseHeader(e.Network, e.Transport)
	if !ok || h.String() != "udp [2001:db8::1]:40000 -> [2001:db8::2]:53" {
		t.Errorf("header %q, %v", h, ok)
	}
	if s := bitNames(e.Ct.Status, ctStatusBits); s != "seen-reply,dnat" {
		t.Errorf("status %q", s)
	}

	// A policy event, and a message of another kind.
	ae = netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Uint32(unix.NFTA_TRACE_TYPE, unix.NFT_TRACETYPE_POLICY)
	ae.Uint32(unix.NFTA_TRACE_POLICY, 0) // NF_DROP
	attrs, _ = ae.Encode()
	e, err = Decode(netlink.Message{Header: netlink.Header{Type: traceType}, Data: append([]byte{unix.NFPROTO_BRIDGE, 0, 0, 0}, attrs...)})
	if err != nil || e.Type != TypePolicy || e.Policy != "drop" || e.Family != "bridge" || e.HasPacket {
		t.Errorf("policy event %+v, %v", e, err)
	}
	if _, err := Decode(netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE)}}); !errors.Is(err, ErrNotTrace) {
		t.Errorf("NEWRULE message: %v, want ErrNotTrace", err)
	}
}

func TestParseHeader(t *testing.T) {
	v4 := func(proto byte) []byte {
		b := make([]byte, 20)
		b[0], b[9] = 0x45, proto
		copy(b[12:], []byte{10, 0, 0, 1})
		copy(b[16:], []byte{10, 0, 0, 2})
		return b
	}
	for _, c := range []struct {
		name               string
		network, transport []byte
		want               string
		ok                 bool
	}{
		{"tcp syn-ack", v4(unix.IPPROTO_TCP), []byte{0, 80, 0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x12}, "tcp 10.0.0.1:80 -> 10.0.0.2:40000 [S.]", true},
		{"icmp echo", v4(unix.IPPROTO_ICMP), []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}, "icmp 10.0.0.1 -> 10.0.0.2 echo-request id 4660", true},
		{"icmp unreachable", v4(unix.IPPROTO_ICMP), []byte{3, 3, 0, 0, 0, 0, 0, 0}, "icmp 10.0.0.1 -> 10.0.0.2 destination-unreachable code 3", true},
		{"gre", v4(unix.IPPROTO_GRE), nil, "gre 10.0.0.1 -> 10.0.0.2", true},
		{"short", []byte{0x45, 0}, nil, "?", false},
		{"arp", []byte{0, 1, 8, 0}, nil, "?", false},
	} {
		h, ok := ParseHeader(c.network, c.transport)
		if ok != c.ok || h.String() != c.want {
			t.Errorf("%s: %q, %v; want %q, %v", c.name, h, ok, c.want, c.ok)
		}
	}
}
