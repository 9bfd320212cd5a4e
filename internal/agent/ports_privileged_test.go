package agent

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/spec"
)

func ports(t *testing.T, specs ...string) []api.PortMapping {
	t.Helper()
	var out []api.PortMapping
	for _, s := range specs {
		m, err := spec.ParsePort(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func (e *env) attachPorts(network, id string, pm []api.PortMapping) (*sandbox, error) {
	ns, err := e.lab.Sandbox()
	if err != nil {
		e.t.Fatal(err)
	}
	sb := &sandbox{ns: ns, key: api.EndpointKey{Network: network, ContainerID: id, IfName: "eth0"}}
	sb.res, err = e.c.Attach(context.Background(), api.AttachRequest{EndpointKey: sb.key, Ports: pm}, int(ns))
	return sb, err
}

// Published ports, for each driver and port mode: reachable from an outside client
// (keeping its address under NAT), from the node via its own address and (NAT, IPv4)
// via 127.0.0.1, from another sandbox, and hairpin; TCP and UDP, IPv4 and IPv6.
func TestPrivilegedPublishedPorts(t *testing.T) {
	for _, tc := range []struct{ driver, mode string }{
		{api.DriverBridge, api.PortModeNAT},
		{api.DriverRouted, api.PortModeNAT},
		{api.DriverBridge, api.PortModeProxy},
	} {
		t.Run(tc.driver+"-"+tc.mode, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			if _, err := e.c.CreateNetwork(ctx, api.NetworkSpec{Name: "web", Driver: tc.driver, PortMode: tc.mode,
				Subnets: []string{"10.89.0.0/24", "fd89::/64"}}); err != nil {
				t.Fatal(err)
			}
			a, err := e.attachPorts("web", "a", ports(t, "8080:80", "5353:53/udp"))
			if err != nil {
				t.Fatal(err)
			}
			b := e.mustAttach("web", "b")
			v4, v6 := a.ip(0), a.ip(1)
			node4, node6 := lab.NodeAddr4.Addr(), lab.NodeAddr6.Addr()
			type client struct {
				name   string
				from   string // outside, node, a or b
				dial   netip.Addr
				listen netip.Addr
				seen   netip.Addr // the source the server must see; zero: do not check
			}
			clients := []client{
				{name: "outside v4", from: "outside", dial: node4, listen: v4, seen: lab.OutsideAddr4.Addr()},
				{name: "outside v6", from: "outside", dial: node6, listen: v6, seen: lab.OutsideAddr6.Addr()},
				{name: "node v4", from: "node", dial: node4, listen: v4},
				{name: "node v6", from: "node", dial: node6, listen: v6},
				{name: "other sandbox", from: "b", dial: node4, listen: v4},
				{name: "hairpin", from: "a", dial: node4, listen: v4},
			}
			if tc.mode == api.PortModeNAT {
				clients = append(clients, client{name: "node localhost", from: "node", dial: netip.MustParseAddr("127.0.0.1"), listen: v4})
			}
			if tc.mode == api.PortModeProxy {
				// A proxy listens dual-stack and leads to the IPv4 address; the client's
				// address is lost.
				for i := range clients {
					clients[i].listen, clients[i].seen = v4, netip.Addr{}
				}
			}
			for _, c := range clients {
				from := map[string]*sandbox{"a": a, "b": b}[c.from]
				clientNS := e.lab.Outside
				switch {
				case c.from == "node":
					clientNS = e.lab.Node
				case from != nil:
					clientNS = from.ns
				}
				src, err := probe.TCPVia(ctx, clientNS, a.ns, netip.AddrPortFrom(c.listen, 80), netip.AddrPortFrom(c.dial, 8080), probeTimeout)
				if err != nil {
					t.Errorf("%s: tcp %s:8080: %v", c.name, c.dial, err)
				} else if c.seen.IsValid() && src != c.seen {
					t.Errorf("%s: server saw %s, want the client's %s", c.name, src, c.seen)
				}
				if c.from == "outside" || c.from == "b" {
					if _, err := probe.UDPVia(ctx, clientNS, a.ns, netip.AddrPortFrom(c.listen, 53), netip.AddrPortFrom(c.dial, 5353), probeTimeout); err != nil {
						t.Errorf("%s: udp %s:5353: %v", c.name, c.dial, err)
					}
				}
			}

			// Conflicts: published by another endpoint, bound by a process of the node.
			_, err = e.attachPorts("web", "c", ports(t, "8080:8080"))
			wantCode(t, err, api.CodeAddressInUse)
			if !strings.Contains(err.Error(), "web/a/eth0") {
				t.Errorf("conflict error %q does not name the holder", err)
			}
			l, err := kernel.ListenIn(e.lab.Node, "tcp", ":9090")
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.attachPorts("web", "c", ports(t, "9090:80"))
			l.Close()
			wantCode(t, err, api.CodeAddressInUse)
			if !strings.Contains(err.Error(), "pid") {
				t.Errorf("process conflict error %q does not name the process", err)
			}

			// Restart: mappings (and proxies) are restored.
			e.restart()
			if _, err := probe.TCPVia(ctx, e.lab.Outside, a.ns, netip.AddrPortFrom(v4, 80), netip.AddrPortFrom(node4, 8080), probeTimeout); err != nil {
				t.Errorf("after restart: %v", err)
			}

			// DEL removes exactly a's mappings, and its ports can be taken at once.
			if err := e.c.Detach(ctx, api.DetachRequest{EndpointKey: a.key}, -1); err != nil {
				t.Fatal(err)
			}
			if _, err := probe.TCPVia(ctx, e.lab.Outside, a.ns, netip.AddrPortFrom(v4, 80), netip.AddrPortFrom(node4, 8080), time.Second); err == nil {
				t.Error("published port still leads to a detached endpoint")
			}
			c, err := e.attachPorts("web", "c", ports(t, "8080:80"))
			if err != nil {
				t.Fatalf("port of a detached endpoint: %v", err)
			}
			if _, err := probe.TCPVia(ctx, e.lab.Outside, c.ns, netip.AddrPortFrom(c.ip(0), 80), netip.AddrPortFrom(node4, 8080), probeTimeout); err != nil {
				t.Errorf("new endpoint on the port: %v", err)
			}
		})
	}
}

// A UDP flow that keeps its 5-tuple follows a mapping to its new endpoint at once: the
// conntrack entries of a removed mapping are flushed.
func TestPrivilegedUDPMappingMovesAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.network("web", "10.89.0.0/24")
	a, err := e.attachPorts("web", "a", ports(t, "5353:53/udp"))
	if err != nil {
		t.Fatal(err)
	}
	srvA, err := kernel.ListenPacketIn(a.ns, "udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	defer srvA.Close()
	go probe.Echo(srvA)
	client, err := kernel.DialIn(ctx, e.lab.Outside, "udp", netip.AddrPortFrom(lab.NodeAddr4.Addr(), 5353).String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := probe.AskUDP(client, probeTimeout); err != nil {
		t.Fatalf("first backend: %v", err)
	}
	if err := e.c.Detach(ctx, api.DetachRequest{EndpointKey: a.key}, -1); err != nil {
		t.Fatal(err)
	}
	b, err := e.attachPorts("web", "b", ports(t, "5353:53/udp"))
	if err != nil {
		t.Fatal(err)
	}
	srvB, err := kernel.ListenPacketIn(b.ns, "udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	defer srvB.Close()
	go probe.Echo(srvB)
	if _, err := probe.AskUDP(client, probeTimeout); err != nil {
		t.Fatalf("same flow after the mapping moved: %v (stale conntrack entry?)", err)
	}
}

// A sandbox that adds another address to its eth0 and sends from it is dropped, on a
// bridge network and on a routed network; its own address keeps working. Routed
// sandboxes reach each other through the node, with their own source addresses.
func TestPrivilegedAntiSpoofing(t *testing.T) {
	for _, driver := range []string{api.DriverBridge, api.DriverRouted} {
		t.Run(driver, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			if _, err := e.c.CreateNetwork(ctx, api.NetworkSpec{Name: "n", Driver: driver, Subnets: []string{"10.89.0.0/24", "fd89::/64"}}); err != nil {
				t.Fatal(err)
			}
			a := e.mustAttach("n", "a")
			b := e.mustAttach("n", "b")
			for i := range 2 {
				src, err := probe.TCP(ctx, a.ns, b.ns, netip.AddrPortFrom(b.ip(i), 80), probeTimeout)
				if err != nil || src != a.ip(i) {
					t.Fatalf("a -> b: src %v err %v, want src %s", src, err, a.ip(i))
				}
			}
			// a claims another address of the subnet (as if it were b's, or free).
			spoofed := []netip.Prefix{netip.MustParsePrefix("10.89.0.200/32"), netip.MustParsePrefix("fd89::200/128")}
			h, err := netlink.NewHandleAt(a.ns)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			eth0, _ := h.LinkByName("eth0")
			for _, p := range spoofed {
				addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
				if err := h.AddrAdd(eth0, addr); err != nil {
					t.Fatal(err)
				}
			}
			for i, p := range spoofed {
				// UDP: what matters is whether the packet reaches b, not whether a reply
				// could find its way back.
				if got := udpArrives(t, a.ns, b.ns, p.Addr(), netip.AddrPortFrom(b.ip(i), 81)); got {
					t.Errorf("datagram from spoofed %s reached b", p.Addr())
				}
				if got := udpArrives(t, a.ns, b.ns, a.ip(i), netip.AddrPortFrom(b.ip(i), 81)); !got {
					t.Errorf("datagram from a's own %s did not reach b", a.ip(i))
				}
				// (Explicit source: with two addresses the kernel may pick the new one.)
				if err := dialFrom(ctx, a.ns, b.ns, a.ip(i), netip.AddrPortFrom(b.ip(i), 82)); err != nil {
					t.Errorf("own address %s after spoofing attempt: %v", a.ip(i), err)
				}
			}
		})
	}
}

// udpArrives sends datagrams from local (an address of clientNS) to server in serverNS
// and reports whether one arrived.
func udpArrives(t *testing.T, clientNS, serverNS netns.NsHandle, local netip.Addr, server netip.AddrPort) bool {
	t.Helper()
	srv, err := kernel.ListenPacketIn(serverNS, "udp", server.String())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var c net.PacketConn
	if err := kernel.Do(clientNS, func() (err error) {
		c, err = net.ListenPacket("udp", netip.AddrPortFrom(local, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	for range 5 {
		c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(server))
		srv.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, _, err := srv.ReadFrom(buf); err == nil {
			return true
		}
	}
	return false
}

// dialFrom connects from a given local address of clientNS to a listener in serverNS.
func dialFrom(ctx context.Context, clientNS, serverNS netns.NsHandle, local netip.Addr, server netip.AddrPort) error {
	l, err := kernel.ListenIn(serverNS, "tcp", server.String())
	if err != nil {
		return err
	}
	defer l.Close()
	var c net.Conn
	err = kernel.Do(clientNS, func() (err error) {
		d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}
		c, err = d.DialContext(ctx, "tcp", server.String())
		return err
	})
	if err == nil {
		c.Close()
	}
	return err
}
