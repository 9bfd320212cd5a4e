package portproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMappingCanonical(t *testing.T) {
	be := netip.MustParseAddrPort("10.88.0.2:80")
	for _, tc := range []struct {
		in   Mapping
		want string // String() of the canonical form, or the error's text
		err  bool
	}{
		{in: Mapping{Protocol: "TCP", HostPort: 8080, Backend: be}, want: "tcp *:8080 -> 10.88.0.2:80"},
		{in: Mapping{Protocol: "udp", HostIP: netip.MustParseAddr("::ffff:192.0.2.1"), HostPort: 53, Backend: netip.MustParseAddrPort("[::ffff:10.88.0.2]:53")}, want: "udp 192.0.2.1:53 -> 10.88.0.2:53"},
		{in: Mapping{Protocol: "tcp", HostIP: netip.MustParseAddr("2001:db8::1"), HostPort: 443, Backend: netip.MustParseAddrPort("[fd00::2]:8443")}, want: "tcp [2001:db8::1]:443 -> [fd00::2]:8443"},
		{in: Mapping{Protocol: "sctp", HostPort: 1, Backend: be}, want: `protocol "sctp"`, err: true},
		{in: Mapping{Protocol: "tcp", Backend: be}, want: "host port 0", err: true},
		{in: Mapping{Protocol: "tcp", HostPort: 1}, want: "backend address", err: true},
		{in: Mapping{Protocol: "tcp", HostPort: 1, Backend: netip.MustParseAddrPort("0.0.0.0:80")}, want: "backend address", err: true},
		{in: Mapping{Protocol: "tcp", HostPort: 1, Backend: netip.MustParseAddrPort("10.0.0.1:0")}, want: "backend port 0", err: true},
	} {
		got, err := tc.in.canonical()
		if tc.err {
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "mapping ") {
				t.Errorf("%+v: error %v, want one naming the mapping and %q", tc.in, err, tc.want)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestMappingOverlaps(t *testing.T) {
	be := netip.MustParseAddrPort("10.88.0.2:80")
	mk := func(proto, ip string, port uint16) Mapping {
		m := Mapping{Protocol: proto, HostPort: port, Backend: be}
		if ip != "" {
			m.HostIP = netip.MustParseAddr(ip)
		}
		return m
	}
	for _, tc := range []struct {
		a, b Mapping
		want bool
	}{
		{mk("tcp", "", 80), mk("tcp", "", 80), true},
		{mk("tcp", "", 80), mk("udp", "", 80), false},
		{mk("tcp", "", 80), mk("tcp", "", 81), false},
		{mk("tcp", "", 80), mk("tcp", "192.0.2.1", 80), true},
		{mk("tcp", "0.0.0.0", 80), mk("tcp", "192.0.2.1", 80), true},
		{mk("tcp", "0.0.0.0", 80), mk("tcp", "::", 80), false}, // "::" is IPv6 only
		{mk("tcp", "::", 80), mk("tcp", "2001:db8::1", 80), true},
		{mk("tcp", "192.0.2.1", 80), mk("tcp", "192.0.2.2", 80), false},
		{mk("tcp", "192.0.2.1", 80), mk("tcp", "2001:db8::1", 80), false},
	} {
		if got := tc.a.overlaps(tc.b); got != tc.want {
			t.Errorf("%s overlaps %s = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := tc.b.overlaps(tc.a); got != tc.want {
			t.Errorf("%s overlaps %s = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestListenAddr(t *testing.T) {
	be := netip.MustParseAddrPort("10.88.0.2:80")
	for _, tc := range []struct {
		ip, network, addr string
	}{
		{"", "tcp", ":8080"},
		{"192.0.2.1", "tcp4", "192.0.2.1:8080"},
		{"0.0.0.0", "tcp4", "0.0.0.0:8080"},
		{"::", "tcp6", "[::]:8080"},
		{"2001:db8::1", "tcp6", "[2001:db8::1]:8080"},
	} {
		m := Mapping{Protocol: "tcp", HostPort: 8080, Backend: be}
		if tc.ip != "" {
			m.HostIP = netip.MustParseAddr(tc.ip)
		}
		if n, a := m.listenAddr(); n != tc.network || a != tc.addr {
			t.Errorf("%s: listen %s %s, want %s %s", m, n, a, tc.network, tc.addr)
		}
	}
}

func TestReplyControl(t *testing.T) {
	// An IPv4 datagram to 192.0.2.7 on interface 3: the reply's source is 192.0.2.7,
	// without pinning the interface.
	in4 := unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: 3, Spec_dst: [4]byte{192, 0, 2, 7}, Addr: [4]byte{192, 0, 2, 7}})
	if got := describeControl(t, replyControl(in4)); got != "ip pktinfo ifindex 0 src 192.0.2.7" {
		t.Errorf("v4 reply control: %s", got)
	}
	// IPv6 global or v4-mapped: interface not pinned; link-local: pinned.
	for _, tc := range []struct {
		addr string
		want string
	}{
		{"2001:db8::7", "ipv6 pktinfo ifindex 0 src 2001:db8::7"},
		{"::ffff:192.0.2.7", "ipv6 pktinfo ifindex 0 src ::ffff:192.0.2.7"},
		{"fe80::7", "ipv6 pktinfo ifindex 5 src fe80::7"},
	} {
		in6 := unix.PktInfo6(&unix.Inet6Pktinfo{Addr: netip.MustParseAddr(tc.addr).As16(), Ifindex: 5})
		if got := describeControl(t, replyControl(in6)); got != tc.want {
			t.Errorf("%s: reply control %s, want %s", tc.addr, got, tc.want)
		}
	}
	if got := replyControl(nil); got != nil {
		t.Errorf("no control message: %v", got)
	}
	if got := replyControl([]byte{1, 2, 3}); got != nil {
		t.Errorf("garbage: %v", got)
	}
}

// describeControl renders one packet-info control message.
func describeControl(t *testing.T, b []byte) string {
	t.Helper()
	msgs, err := unix.ParseSocketControlMessage(b)
	if err != nil || len(msgs) != 1 {
		return fmt.Sprintf("%d messages, %v", len(msgs), err)
	}
	m := msgs[0]
	switch {
	case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
		src := netip.AddrFrom4([4]byte(m.Data[4:8]))
		return fmt.Sprintf("ip pktinfo ifindex %d src %s", binary.NativeEndian.Uint32(m.Data[0:4]), src)
	case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
		src := netip.AddrFrom16([16]byte(m.Data[:16]))
		return fmt.Sprintf("ipv6 pktinfo ifindex %d src %s", binary.NativeEndian.Uint32(m.Data[16:20]), src)
	}
	return fmt.Sprintf("level %d type %d", m.Header.Level, m.Header.Type)
}

func TestManagerUnprivileged(t *testing.T) {
	// Validation happens before any socket: these need no namespace.
	mg := &Manager{proxies: map[Mapping]proxy{}}
	mg.cfg = Config{}.withDefaults()
	bad := Mapping{Protocol: "icmp", HostPort: 1, Backend: netip.MustParseAddrPort("10.0.0.1:1")}
	if err := mg.Add(bad); err == nil {
		t.Error("Add of an invalid mapping: no error")
	}
	if err := mg.Remove(Mapping{Protocol: "tcp", HostPort: 1, Backend: netip.MustParseAddrPort("10.0.0.1:1")}); err != nil {
		t.Errorf("Remove of an unknown mapping: %v", err)
	}
	if err := mg.Sync([]Mapping{bad}); err == nil || !strings.Contains(err.Error(), "icmp") {
		t.Errorf("Sync with an invalid mapping: %v", err)
	}
	if got := mg.Mappings(); len(got) != 0 {
		t.Errorf("Mappings = %v", got)
	}
	mg.closed = true
	if err := mg.Add(Mapping{Protocol: "tcp", HostPort: 1, Backend: netip.MustParseAddrPort("10.0.0.1:1")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
	c := Config{}.withDefaults()
	if c.DialTimeout != DefaultDialTimeout || c.UDPIdleTimeout != DefaultUDPIdleTimeout || c.MaxUDPSessions != DefaultMaxUDPSessions {
		t.Errorf("defaults: %+v", c)
	}
	ms := []Mapping{
		{Protocol: "udp", HostPort: 53, Backend: netip.MustParseAddrPort("10.0.0.1:53")},
		{Protocol: "tcp", HostPort: 81, Backend: netip.MustParseAddrPort("10.0.0.1:1")},
		{Protocol: "tcp", HostPort: 80, HostIP: netip.MustParseAddr("192.0.2.1"), Backend: netip.MustParseAddrPort("10.0.0.1:1")},
		{Protocol: "tcp", HostPort: 80, Backend: netip.MustParseAddrPort("10.0.0.1:1")},
	}
	slices.SortFunc(ms, compareMappings)
	var got []string
	for _, m := range ms {
		got = append(got, m.String())
	}
	want := []string{"tcp *:80 -> 10.0.0.1:1", "tcp 192.0.2.1:80 -> 10.0.0.1:1", "tcp *:81 -> 10.0.0.1:1", "udp *:53 -> 10.0.0.1:53"}
	if !slices.Equal(got, want) {
		t.Errorf("sorted %q, want %q", got, want)
	}
}
