package lab_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/probe"
)

const timeout = 3 * time.Second

func sandbox(t *testing.T, l *lab.Lab) netns.NsHandle {
	t.Helper()
	ns, err := l.Sandbox()
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// wantTCP connects from client to server (a listener at to in serverNS) and fails unless
// the server saw src.
func wantTCP(t *testing.T, client, server netns.NsHandle, to, src netip.Addr) {
	t.Helper()
	got, err := probe.TCP(context.Background(), client, server, netip.AddrPortFrom(to, 8080), timeout)
	if err != nil || got != src {
		t.Errorf("%s: server saw %v (%v), want %s", to, got, err, src)
	}
}

// Two sandboxes on a bridge and a routed one, with the node forwarding: each reaches
// the others without NAT, over IPv4 and IPv6.
func TestPrivilegedBridgeAndRouted(t *testing.T) {
	l := labtest.New(t)
	if err := kernel.WriteSysctl(l.Node, "net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if err := kernel.WriteSysctl(l.Node, "net/ipv6/conf/all/forwarding", "1"); err != nil {
		t.Fatal(err)
	}
	gw := []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24"), netip.MustParsePrefix("fd01::1/64")}
	if err := l.Bridge("br0", gw...); err != nil {
		t.Fatal(err)
	}
	a, b, r := sandbox(t, l), sandbox(t, l), sandbox(t, l)
	addrA := []netip.Prefix{netip.MustParsePrefix("10.1.0.2/24"), netip.MustParsePrefix("fd01::2/64")}
	addrB := []netip.Prefix{netip.MustParsePrefix("10.1.0.3/24"), netip.MustParsePrefix("fd01::3/64")}
	addrR := []netip.Addr{netip.MustParseAddr("10.2.0.5"), netip.MustParseAddr("fd02::5")}
	macA := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	got, err := l.Plug(a, lab.Veth{HostIf: "va", Bridge: "br0", Hairpin: true, MAC: macA, Addrs: addrA, Gateways: []netip.Addr{gw[0].Addr(), gw[1].Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != macA.String() {
		t.Errorf("Plug returned MAC %s, want %s", got, macA)
	}
	if got, err = l.Plug(b, lab.Veth{HostIf: "vb", Bridge: "br0", Addrs: addrB, Gateways: []netip.Addr{gw[0].Addr(), gw[1].Addr()}}); err != nil || len(got) != 6 {
		t.Fatalf("Plug b: MAC %v, %v", got, err)
	}
	if _, err := l.Routed(r, "vr", addrR...); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(l.Node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for name, want := range map[string]bool{"va": true, "vb": false} {
		link, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if pi, err := h.LinkGetProtinfo(link); err != nil || pi.Hairpin != want {
			t.Errorf("bridge port %s: hairpin %v (%v), want %v", name, pi.Hairpin, err, want)
		}
	}
	for f := range 2 {
		wantTCP(t, a, b, addrB[f].Addr(), addrA[f].Addr())
		wantTCP(t, b, r, addrR[f], addrB[f].Addr())
		wantTCP(t, r, a, addrA[f].Addr(), addrR[f])
	}
	if _, err := l.Plug(sandbox(t, l), lab.Veth{HostIf: "vx", Hairpin: true}); err == nil {
		t.Error("Plug with hairpin and no bridge succeeded")
	}
}

// AddAddrs, AddRoute and Loopback, each with the control that it is what made the
// difference.
func TestPrivilegedAddrsAndRoutes(t *testing.T) {
	l := labtest.New(t)
	if err := kernel.WriteSysctl(l.Node, "net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	second := netip.MustParsePrefix("203.0.113.3/24")
	if err := lab.AddAddrs(l.Node, lab.Uplink, second); err != nil {
		t.Fatal(err)
	}
	wantTCP(t, l.Outside, l.Node, second.Addr(), lab.OutsideAddr4.Addr())

	// A sandbox on a bridge: the outside has no route back to it until AddRoute.
	if err := l.Bridge("br0", netip.MustParsePrefix("10.1.0.1/24")); err != nil {
		t.Fatal(err)
	}
	a := sandbox(t, l)
	addr := netip.MustParsePrefix("10.1.0.2/24")
	if _, err := l.Plug(a, lab.Veth{HostIf: "va", Bridge: "br0", Addrs: []netip.Prefix{addr}, Gateways: []netip.Addr{netip.MustParseAddr("10.1.0.1")}}); err != nil {
		t.Fatal(err)
	}
	outside := netip.AddrPortFrom(lab.OutsideAddr4.Addr(), 8080)
	if err := probe.Blocked(context.Background(), a, l.Outside, outside, time.Second); err != nil {
		t.Fatalf("before AddRoute in the outside: %v", err)
	}
	if err := lab.AddRoute(l.Outside, netip.MustParsePrefix("10.1.0.0/24"), "eth0", lab.NodeAddr4.Addr()); err != nil {
		t.Fatal(err)
	}
	wantTCP(t, a, l.Outside, outside.Addr(), addr.Addr())

	// Loopback: lo up with an address a socket binds to.
	ns := sandbox(t, l)
	lo := netip.MustParsePrefix("192.0.2.1/32")
	if err := lab.Loopback(ns, lo); err != nil {
		t.Fatal(err)
	}
	wantTCP(t, ns, ns, lo.Addr(), lo.Addr())
}
