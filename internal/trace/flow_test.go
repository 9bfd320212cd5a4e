package trace

import (
	"net/netip"
	"testing"
)

func TestParseTo(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // Flow.String without a source; "" for an error
	}{
		{"10.0.0.2", "any * -> 10.0.0.2"},
		{"10.0.0.2:80", "tcp * -> 10.0.0.2:80"},
		{"10.0.0.2:53/udp", "udp * -> 10.0.0.2:53"},
		{"10.0.0.2/icmp", "icmp * -> 10.0.0.2"},
		{"10.0.0.2/TCP", "tcp * -> 10.0.0.2"},
		{"2001:db8::1", "any * -> 2001:db8::1"},
		{"[2001:db8::1]:443/tcp", "tcp * -> [2001:db8::1]:443"},
		{"2001:db8::1/icmp", "icmp * -> 2001:db8::1"},
		{"::ffff:10.0.0.2", "any * -> 10.0.0.2"},
		{"10.0.0.2:80/icmp", ""},
		{"10.0.0.2:0", ""},
		{"10.0.0.2/sctp", ""},
		{"host:80", ""},
		{"fe80::1%eth0", ""},
	} {
		f, err := ParseTo(c.in)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%q: %v, want an error", c.in, f)
		case c.want != "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.want != "" && f.String() != c.want:
			t.Errorf("%q: %q, want %q", c.in, f, c.want)
		}
	}
}

func TestFlowValidateAndMatch(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if err := (Flow{Src: a, Dst: netip.MustParseAddr("2001:db8::1")}).Validate(); err == nil {
		t.Error("two families: valid")
	}
	if err := (Flow{Src: a}).Validate(); err == nil {
		t.Error("no destination: valid")
	}
	if err := (Flow{Dst: b, Proto: ICMP, Port: 8}).Validate(); err == nil {
		t.Error("icmp with a port: valid")
	}
	f := Flow{Src: a, Dst: b, Proto: TCP, Port: 80}
	h := Header{Src: a, Dst: b, Proto: 6, SPort: 40000, DPort: 80}
	if !f.matches(h) || f.matches(h.Reversed()) || !f.matches(Header{Src: a, Dst: b, Proto: 6, DPort: 80}) {
		t.Error("matches: wrong on the flow's own packets")
	}
	if f.matches(Header{Src: a, Dst: b, Proto: 17, DPort: 80}) || (Flow{Dst: b}).matches(Header{Src: b, Dst: a}) {
		t.Error("matches: other protocol or destination")
	}
	if !(Flow{Dst: b}).matches(Header{Src: a, Dst: b, Proto: 47}) {
		t.Error("a flow without protocol and source matches every packet to its destination")
	}
}
