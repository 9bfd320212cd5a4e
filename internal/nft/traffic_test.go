package nft

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Addresses of the traffic test, all inside its own namespaces (documentation ranges).
var (
	subnetA   = pfx("198.51.100.0/26", "2001:db8:a::/64")
	subnetB   = pfx("198.51.100.64/26", "2001:db8:b::/64")
	linkOut   = pfx("203.0.113.0/24", "2001:db8:f::/64")
	netA      = Network{Name: "net-a", Bridge: "pn-a", Subnets: subnetA, Masquerade: true}
	netB      = Network{Name: "net-b", Bridge: "pn-b", Subnets: subnetB}
	trafficRS = Ruleset{Networks: []Network{netA, netB}}
)

const testPort = 8080

// host returns address number n of each prefix, with the prefix length.
func host(ps []netip.Prefix, n int) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		a := p.Addr()
		for range n {
			a = a.Next()
		}
		out[i] = netip.PrefixFrom(a, p.Bits())
	}
	return out
}

// trafficTopo is a node namespace with two bridges (networks A and B), sandboxes a1 and
// a2 on A and b1 on B, and an "outside" namespace reached from the node through a veth;
// outside has no route back to the sandbox subnets.
type trafficTopo struct {
	node, outside netns.NsHandle
	sandbox       map[string]netns.NsHandle
	addr          map[string][]netip.Prefix // v4 and v6 address of each namespace but node
	nodeOut       []netip.Prefix            // node's addresses on the outside link
}

func buildTopo(t *testing.T) *trafficTopo {
	t.Helper()
	tp := &trafficTopo{
		node:    newNetNS(t),
		outside: newNetNS(t),
		sandbox: map[string]netns.NsHandle{},
		addr:    map[string][]netip.Prefix{"outside": host(linkOut, 2)},
		nodeOut: host(linkOut, 1),
	}
	noDAD := []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"}
	writeSysctls(t, tp.node, "0", noDAD...)
	writeSysctls(t, tp.outside, "0", noDAD...)
	writeSysctls(t, tp.node, "1", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")

	h := handleAt(t, tp.node)
	bridges := map[string]netlink.Link{}
	for _, n := range []Network{netA, netB} {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.Bridge}}
		must(t, h.LinkAdd(br), "add bridge "+n.Bridge)
		addAddrs(t, h, br, host(n.Subnets, 1))
		must(t, h.LinkSetUp(br), "set up "+n.Bridge)
		bridges[n.Bridge] = br
	}
	for _, sb := range []struct {
		name string
		net  Network
		n    int
	}{{"a1", netA, 10}, {"a2", netA, 11}, {"b1", netB, 10}} {
		ns := newNetNS(t)
		writeSysctls(t, ns, "0", noDAD...)
		tp.sandbox[sb.name] = ns
		tp.addr[sb.name] = host(sb.net.Subnets, sb.n)
		peer := tp.veth(t, h, "v"+sb.name, ns, bridges[sb.net.Bridge])
		sh := handleAt(t, ns)
		addAddrs(t, sh, peer(sh), tp.addr[sb.name])
		for _, gw := range host(sb.net.Subnets, 1) {
			must(t, sh.RouteAdd(&netlink.Route{Gw: gw.Addr().AsSlice()}), "add default route via "+gw.Addr().String())
		}
	}
	up := tp.veth(t, h, "up0", tp.outside, nil)
	addAddrs(t, h, linkByName(t, h, "up0"), tp.nodeOut)
	oh := handleAt(t, tp.outside)
	addAddrs(t, oh, up(oh), tp.addr["outside"])
	return tp
}

// veth creates a veth pair: name in the node (enslaved to master if not nil, up), eth0
// in ns (lo and eth0 up). It returns a function giving eth0 through ns's handle.
func (tp *trafficTopo) veth(t *testing.T, h *netlink.Handle, name string, ns netns.NsHandle, master netlink.Link) func(*netlink.Handle) netlink.Link {
	t.Helper()
	attrs := netlink.LinkAttrs{Name: name}
	if master != nil {
		attrs.MasterIndex = master.Attrs().Index
	}
	must(t, h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}), "add veth "+name)
	must(t, h.LinkSetUp(linkByName(t, h, name)), "set up "+name)
	return func(sh *netlink.Handle) netlink.Link {
		must(t, sh.LinkSetUp(linkByName(t, sh, "lo")), "set up lo")
		eth0 := linkByName(t, sh, "eth0")
		must(t, sh.LinkSetUp(eth0), "set up eth0")
		return eth0
	}
}

func handleAt(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func linkByName(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func addAddrs(t *testing.T, h *netlink.Handle, l netlink.Link, ps []netip.Prefix) {
	t.Helper()
	for _, p := range ps {
		a := &netlink.Addr{
			IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
			Flags: unix.IFA_F_NODAD,
		}
		must(t, h.AddrAdd(l, a), fmt.Sprintf("add %v to %s", p, l.Attrs().Name))
	}
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// serve listens on testPort in ns (all addresses) and answers every connection with the
// source address it sees.
func serve(t *testing.T, ns netns.NsHandle) {
	t.Helper()
	var ln net.Listener
	err := inNetNS(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", testPort))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			fmt.Fprintf(c, "%s\n", src)
			c.Close()
		}
	}()
}

// dial connects from ns to dst:testPort and returns the source address the server saw.
func dial(ns netns.NsHandle, dst netip.Addr, timeout time.Duration) (netip.Addr, error) {
	var c net.Conn
	err := inNetNS(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(dst, testPort).String(), timeout)
		return err
	})
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read reply: %w", err)
	}
	return netip.ParseAddr(strings.TrimSpace(line))
}

// reach checks that from can connect to to's address of family fam (0 IPv4, 1 IPv6),
// and that the server sees wantSrc, retrying while the links settle.
func (tp *trafficTopo) reach(t *testing.T, from, to string, fam int, wantSrc netip.Addr) {
	t.Helper()
	dst := tp.addr[to][fam].Addr()
	var (
		src netip.Addr
		err error
	)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if src, err = dial(tp.sandbox[from], dst, 2*time.Second); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("%s -> %s %v: %v, want a connection", from, to, dst, err)
		return
	}
	if src != wantSrc {
		t.Errorf("%s -> %s %v: server saw source %v, want %v", from, to, dst, src, wantSrc)
	}
}

// flow is a connection attempt from one namespace to another's address of family fam
// (0 IPv4, 1 IPv6).
type flow struct {
	from, to string
	fam      int
}

// blocked checks that none of flows connects. The attempts run in parallel: each waits
// for its dial timeout.
func (tp *trafficTopo) blocked(t *testing.T, flows ...flow) {
	t.Helper()
	var wg sync.WaitGroup
	for _, f := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := tp.addr[f.to][f.fam].Addr()
			src, err := dial(tp.sandbox[f.from], dst, time.Second)
			if err == nil {
				t.Errorf("%s -> %s %v: connected (server saw %v), want blocked", f.from, f.to, dst, src)
				return
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Logf("%s -> %s %v: %v", f.from, f.to, dst, err)
			}
		}()
	}
	wg.Wait()
}

func TestPrivilegedTraffic(t *testing.T) {
	requireRoot(t)
	tp := buildTopo(t)
	for _, ns := range []netns.NsHandle{tp.sandbox["a2"], tp.sandbox["b1"], tp.sandbox["a1"], tp.outside} {
		serve(t, ns)
	}
	tb, err := Open(int(tp.node))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	src := func(name string, fam int) netip.Addr { return tp.addr[name][fam].Addr() }
	fams := []int{0, 1}

	// Without podnet's table: networks reach each other, and outside cannot answer.
	for _, f := range fams {
		tp.reach(t, "a1", "a2", f, src("a1", f))
		tp.reach(t, "a1", "b1", f, src("a1", f))
	}
	tp.blocked(t, flow{"a1", "outside", 0}, flow{"a1", "outside", 1})
	if t.Failed() {
		t.Fatal("topology does not behave as expected without the table")
	}

	mustSync(t, tb, trafficRS)
	for _, f := range fams {
		tp.reach(t, "a1", "a2", f, src("a1", f))              // same network: allowed, not masqueraded
		tp.reach(t, "a1", "outside", f, tp.nodeOut[f].Addr()) // egress: masqueraded behind the node
	}
	tp.blocked(t,
		flow{"a1", "b1", 0}, flow{"a1", "b1", 1}, // isolation, both ways
		flow{"b1", "a1", 0}, flow{"b1", "a1", 1},
		flow{"b1", "outside", 0}, flow{"b1", "outside", 1}, // B does not masquerade
	)

	// Delete restores the namespace as it was.
	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		tp.reach(t, "b1", "a1", f, src("b1", f))
	}
}
