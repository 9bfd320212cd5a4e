package doctor

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
	"github.com/podnet/podnet/internal/testutil"
)

// node is a hand-built node (no podnet): the lab's node namespace with, once healthy()
// ran, a bridge br0 (10.88.0.1/24, fd88::1/64) with two bridged pods a and b, a routed
// pod r (10.77.0.5/32 behind vethr1, Calico style) and the node's permanent neighbour
// entries for the pods, as a plugin would set them.
type node struct {
	t    *testing.T
	lab  *lab.Lab
	h    *netlink.Handle
	pods map[string]*labPod
	// intended is what an agent of the node says (nil: no agent).
	intended *Intended
}

type labPod struct {
	ns     netns.NsHandle
	ip     netip.Addr
	mac    net.HardwareAddr
	hostIf string
}

func newNode(t *testing.T) *node {
	t.Helper()
	l := labtest.New(t)
	h, err := netlink.NewHandleAt(l.Node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	n := &node{t: t, lab: l, h: h, pods: map[string]*labPod{}}
	n.sysctl("net/ipv4/ip_forward", "1")
	n.sysctl("net/ipv6/conf/all/forwarding", "1")
	return n
}

func (n *node) healthy() *node {
	n.t.Helper()
	if err := n.lab.Bridge("br0", netip.MustParsePrefix("10.88.0.1/24"), netip.MustParsePrefix("fd88::1/64")); err != nil {
		n.t.Fatal(err)
	}
	for i, name := range []string{"a", "b"} {
		sb, err := n.lab.Sandbox()
		if err != nil {
			n.t.Fatal(err)
		}
		ip4 := netip.AddrFrom4([4]byte{10, 88, 0, byte(2 + i)})
		ip6 := netip.MustParseAddr("fd88::" + string(rune('2'+i)))
		hostIf := "veth" + name
		mac, err := n.lab.Plug(sb, lab.Veth{HostIf: hostIf, Bridge: "br0",
			Addrs:    []netip.Prefix{netip.PrefixFrom(ip4, 24), netip.PrefixFrom(ip6, 64)},
			Gateways: []netip.Addr{netip.MustParseAddr("10.88.0.1"), netip.MustParseAddr("fd88::1")}})
		if err != nil {
			n.t.Fatal(err)
		}
		n.pods[name] = &labPod{ns: sb, ip: ip4, mac: mac, hostIf: hostIf}
		n.neigh("br0", ip4, mac)
		n.neigh("br0", ip6, mac)
	}
	sb, err := n.lab.Sandbox()
	if err != nil {
		n.t.Fatal(err)
	}
	ip := netip.MustParseAddr("10.77.0.5")
	if _, err := n.lab.Routed(sb, "vethr1", ip); err != nil {
		n.t.Fatal(err)
	}
	sh, err := netlink.NewHandleAt(sb)
	if err != nil {
		n.t.Fatal(err)
	}
	defer sh.Close()
	eth0, err := sh.LinkByName("eth0")
	if err != nil {
		n.t.Fatal(err)
	}
	n.pods["r"] = &labPod{ns: sb, ip: ip, mac: eth0.Attrs().HardwareAddr, hostIf: "vethr1"}
	n.neigh("vethr1", ip, eth0.Attrs().HardwareAddr)
	// No NAT on this node: the outside routes the pod ranges to it.
	for _, r := range []struct{ dst, gw string }{
		{"10.88.0.0/24", lab.NodeAddr4.Addr().String()}, {"10.77.0.0/24", lab.NodeAddr4.Addr().String()},
		{"fd88::/64", lab.NodeAddr6.Addr().String()},
	} {
		if err := lab.AddRoute(n.lab.Outside, netip.MustParsePrefix(r.dst), "eth0", netip.MustParseAddr(r.gw)); err != nil {
			n.t.Fatal(err)
		}
	}
	return n
}

// neigh sets a permanent neighbour entry in the node.
func (n *node) neigh(dev string, ip netip.Addr, mac net.HardwareAddr) {
	n.t.Helper()
	l := n.link(dev)
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	if err := n.h.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}); err != nil {
		n.t.Fatalf("neighbour %s dev %s: %v", ip, dev, err)
	}
}

// exec runs fixture commands (iptables-legacy, ipset: another plugin's tools) inside the
// node namespace, one per string, words split on spaces.
func (n *node) exec(cmdlines ...string) {
	n.t.Helper()
	for _, line := range cmdlines {
		args := strings.Fields(line)
		args = append([]string{fmt.Sprintf("--net=/proc/%d/fd/%d", os.Getpid(), int(n.lab.Node)), testutil.Command(args[0])}, args[1:]...)
		if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
			n.t.Fatalf("%s: %v: %s", line, err, out)
		}
	}
}

func (n *node) link(name string) netlink.Link {
	n.t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		n.t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func (n *node) sysctl(key, value string) {
	n.t.Helper()
	if err := kernel.WriteSysctl(n.lab.Node, key, value); err != nil {
		n.t.Fatal(err)
	}
}

// uplink adds a veth pair name (node) <-> name (outside) with the node's address addr
// and the outside's peer, up.
func (n *node) uplink(name string, addr, peer netip.Prefix) {
	n.t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name, PeerNamespace: netlink.NsFd(int(n.lab.Outside))}
	if err := n.h.LinkAdd(veth); err != nil {
		n.t.Fatal(err)
	}
	oh, err := netlink.NewHandleAt(n.lab.Outside)
	if err != nil {
		n.t.Fatal(err)
	}
	defer oh.Close()
	for _, side := range []struct {
		h    *netlink.Handle
		addr netip.Prefix
	}{{n.h, addr}, {oh, peer}} {
		l, err := side.h.LinkByName(name)
		if err != nil {
			n.t.Fatal(err)
		}
		if err := side.h.AddrAdd(l, &netlink.Addr{IPNet: ipnet(side.addr)}); err != nil {
			n.t.Fatal(err)
		}
		if err := side.h.LinkSetUp(l); err != nil {
			n.t.Fatal(err)
		}
	}
}

func (n *node) route(r *netlink.Route) {
	n.t.Helper()
	if err := n.h.RouteAdd(r); err != nil {
		n.t.Fatalf("route %+v: %v", r, err)
	}
}

// diagnose collects the node and diagnoses it; the snapshot is recorded as
// testdata/NAME.json with -update (the unit tests replay it).
func (n *node) diagnose(name string, resolvConfs ...string) (Report, *Snapshot) {
	n.t.Helper()
	s, err := Collect(context.Background(), n.lab.Node, Options{ResolvConfs: resolvConfs, DNSTimeout: 500 * time.Millisecond, Intended: n.intended})
	if err != nil {
		n.t.Fatal(err)
	}
	rep := Diagnose(s)
	var b strings.Builder
	if err := WriteText(&b, rep); err != nil {
		n.t.Fatal(err)
	}
	n.t.Logf("%s:\n%s", name, b.String())
	if *update && name != "" {
		recordSnapshot(n.t, name, s)
	}
	return rep, s
}

func recordSnapshot(t *testing.T, name string, s *Snapshot) {
	t.Helper()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", name+".json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// wantClean fails on any error or warning.
func wantClean(t *testing.T, rep Report) {
	t.Helper()
	for _, f := range rep.Findings {
		if f.Severity != SeverityInfo {
			t.Errorf("healthy node: unexpected %s %s: %s (%s)", f.Severity, f.Class, f.Culprit, f.RootCause)
		}
	}
	if rep.ExitCode() != 0 {
		t.Errorf("exit code %d, want 0", rep.ExitCode())
	}
}

// wantFinding returns the finding of class whose culprit is culprit, failing if none.
func wantFinding(t *testing.T, rep Report, class, culprit string, sev Severity) Finding {
	t.Helper()
	for _, f := range rep.Findings {
		if f.Class == class && f.Culprit == culprit {
			if f.Severity != sev {
				t.Errorf("%s %s: severity %s, want %s", class, culprit, f.Severity, sev)
			}
			return f
		}
	}
	var got []string
	for _, f := range rep.Findings {
		got = append(got, string(f.Severity)+" "+f.Class+": "+f.Culprit)
	}
	t.Fatalf("no %s finding %q; got:\n%s", class, culprit, strings.Join(got, "\n"))
	return Finding{}
}

// noFinding fails if rep has a finding of class.
func noFinding(t *testing.T, rep Report, class string) {
	t.Helper()
	for _, f := range rep.Findings {
		if f.Class == class {
			t.Errorf("unexpected %s %s: %s", f.Severity, f.Class, f.Culprit)
		}
	}
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// fillConntrack creates n UDP entries in the conntrack table of ns, 1,000 per netlink
// message batch (ctnetlink processes each message of a batch in turn; without an
// acknowledgement requested, only failures answer).
func fillConntrack(t *testing.T, ns netns.NsHandle, n int) {
	t.Helper()
	c, err := mdnl.Dial(unix.NETLINK_NETFILTER, &mdnl.Config{NetNS: int(ns)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const (
		ctaTupleOrig, ctaTupleReply, ctaTimeout = 1, 2, 7
		ctaTupleIP, ctaTupleProto               = 1, 2
		ctaIPv4Src, ctaIPv4Dst                  = 1, 2
		ctaProtoNum, ctaProtoSrc, ctaProtoDst   = 1, 2, 3
		msgNew                                  = 1<<8 | 0 // NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW
	)
	tuple := func(ae *mdnl.AttributeEncoder, src, dst [4]byte, sport, dport uint16) {
		ae.Nested(ctaTupleIP, func(ae *mdnl.AttributeEncoder) error {
			ae.Bytes(ctaIPv4Src, src[:])
			ae.Bytes(ctaIPv4Dst, dst[:])
			return nil
		})
		ae.Nested(ctaTupleProto, func(ae *mdnl.AttributeEncoder) error {
			ae.Uint8(ctaProtoNum, unix.IPPROTO_UDP)
			ae.Bytes(ctaProtoSrc, binary.BigEndian.AppendUint16(nil, sport))
			ae.Bytes(ctaProtoDst, binary.BigEndian.AppendUint16(nil, dport))
			return nil
		})
	}
	var batch []mdnl.Message
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if _, err := c.SendMessages(batch); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range n {
		src := [4]byte{10, 200, byte(i >> 16), byte(i >> 8)}
		sport := uint16(1024 + i&0xff)
		dst := [4]byte{10, 201, 0, 1}
		ae := mdnl.NewAttributeEncoder()
		ae.Nested(ctaTupleOrig, func(ae *mdnl.AttributeEncoder) error { tuple(ae, src, dst, sport, 53); return nil })
		ae.Nested(ctaTupleReply, func(ae *mdnl.AttributeEncoder) error { tuple(ae, dst, src, 53, sport); return nil })
		ae.Bytes(ctaTimeout, binary.BigEndian.AppendUint32(nil, 600))
		attrs, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, mdnl.Message{
			Header: mdnl.Header{Type: msgNew, Flags: mdnl.Request | mdnl.Create | mdnl.Excl},
			Data:   append([]byte{unix.AF_INET, 0, 0, 0}, attrs...),
		})
		if len(batch) == 1000 {
			flush()
		}
	}
	flush()
}
