package probe

import (
	"context"
	"net/netip"
	"slices"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// Lookup asks server (UDP) from inside ns for name and qtype, and returns the answer.
func Lookup(ctx context.Context, ns netns.NsHandle, server netip.AddrPort, name string, qtype uint16, timeout time.Duration) (*mdns.Msg, error) {
	c, err := kernel.DialIn(ctx, ns, "udp", server.String(), timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	co := &mdns.Conn{Conn: c}
	c.SetDeadline(time.Now().Add(timeout))
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	return co.ReadMsg()
}

// Answers renders the A and CNAME records of a DNS answer ("192.0.2.1", "CNAME
// example.org."), sorted.
func Answers(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *mdns.A:
			out = append(out, r.A.String())
		case *mdns.CNAME:
			out = append(out, "CNAME "+r.Target)
		}
	}
	slices.Sort(out)
	return out
}
