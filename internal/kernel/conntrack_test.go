package kernel

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/testutil"
)

// ctEnableTracking makes the kernel track connections in ns: conntrack hooks are only
// registered in a namespace once something needs them, here an nftables rule
// "ct state established,related accept" in an output chain of an inet table.
func ctEnableTracking(t *testing.T, ns netns.NsHandle) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	table := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "cttest"})
	accept := nftables.ChainPolicyAccept
	chain := c.AddChain(&nftables.Chain{
		Name: "out", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	if err := c.Flush(); err != nil {
		t.Fatalf("install conntrack rule: %v", err)
	}
}

// ctSend sends one datagram from a new socket inside ns to dst (a new flow each time).
func ctSend(t *testing.T, ns netns.NsHandle, dst netip.AddrPort) {
	t.Helper()
	c, err := DialIn(t.Context(), ns, "udp", dst.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

// ctFlows lists the conntrack entries of ns going to port, as "proto dst:port".
func ctFlows(t *testing.T, h *netlink.Handle, port uint16) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			if f.Forward.DstPort != port {
				continue
			}
			dst, _ := netip.AddrFromSlice(f.Forward.DstIP)
			proto := map[uint8]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp"}[f.Forward.Protocol]
			out[proto+" "+netip.AddrPortFrom(dst.Unmap(), port).String()]++
		}
	}
	return out
}

func TestPrivilegedFlushConntrack(t *testing.T) {
	testutil.RequireRoot(t)
	ns := phNS(t)
	ctEnableTracking(t, ns)
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	// Servers on a UDP port and a TCP port with the same number, plus another UDP port.
	u, err := ListenPacketIn(ns, "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	port := phPort(t, u.LocalAddr())
	u2, err := ListenPacketIn(ns, "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	port2 := phPort(t, u2.LocalAddr())
	l, err := ListenIn(ns, "tcp", net.JoinHostPort("", phItoa(port)))
	if err != nil {
		t.Fatalf("tcp port %d: %v", port, err)
	}
	defer l.Close()

	v4 := netip.MustParseAddr("127.0.0.1")
	v6 := netip.IPv6Loopback()
	for range 3 {
		ctSend(t, ns, netip.AddrPortFrom(v4, port))
	}
	ctSend(t, ns, netip.AddrPortFrom(v6, port))
	ctSend(t, ns, netip.AddrPortFrom(v4, port2))
	tc, err := DialIn(t.Context(), ns, "tcp", netip.AddrPortFrom(v4, port).String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()

	udp4, udp6 := "udp 127.0.0.1:"+phItoa(port), "udp [::1]:"+phItoa(port)
	tcp4, other := "tcp 127.0.0.1:"+phItoa(port), "udp 127.0.0.1:"+phItoa(port2)
	if got := ctFlows(t, h, port); got[udp4] != 3 || got[udp6] != 1 || got[tcp4] != 1 {
		t.Fatalf("entries before flush: %v; want 3 x %s, 1 x %s, 1 x %s", got, udp4, udp6, tcp4)
	}

	// Only the IPv4 address: the IPv6 flow stays.
	n, err := FlushConntrack(ns, "udp", v4, port)
	if err != nil || n != 3 {
		t.Fatalf("FlushConntrack(udp, %s, %d) = %d, %v; want 3", v4, port, n, err)
	}
	if got := ctFlows(t, h, port); got[udp4] != 0 || got[udp6] != 1 || got[tcp4] != 1 {
		t.Fatalf("entries after flushing %s: %v", udp4, got)
	}
	// Any address: the IPv6 flow goes, TCP and the other port stay.
	n, err = FlushConntrack(ns, "udp", netip.Addr{}, port)
	if err != nil || n != 1 {
		t.Fatalf("FlushConntrack(udp, any, %d) = %d, %v; want 1", port, n, err)
	}
	if got := ctFlows(t, h, port); len(got) != 1 || got[tcp4] != 1 {
		t.Fatalf("entries after flushing udp: %v, want only %s", got, tcp4)
	}
	if got := ctFlows(t, h, port2); got[other] != 1 {
		t.Fatalf("entries of the other port: %v, want %s", got, other)
	}
	// Nothing left to delete: not an error.
	if n, err := FlushConntrack(ns, "udp", netip.Addr{}, port); err != nil || n != 0 {
		t.Fatalf("second flush = %d, %v; want 0, nil", n, err)
	}
	// TCP by protocol.
	if n, err := FlushConntrack(ns, "tcp", netip.Addr{}, port); err != nil || n != 1 {
		t.Fatalf("FlushConntrack(tcp) = %d, %v; want 1", n, err)
	}
	if _, err := FlushConntrack(ns, "icmp", netip.Addr{}, port); err == nil {
		t.Error("icmp: no error")
	}
	if _, err := FlushConntrack(ns, "udp", netip.Addr{}, 0); err == nil {
		t.Error("port 0: no error")
	}
}
