package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
)

// Ports of the outside's listeners: nothing in the way, a drop rule, a reject rule.
const (
	openPort   = 7001
	dropPort   = 7002
	rejectPort = 7003
)

// inputRules puts a table in ns whose input chain drops TCP to dropPort and rejects TCP
// to rejectPort with a reset, both families.
func inputRules(t *testing.T, ns netns.NsHandle) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "probetest"})
	ch := c.AddChain(&nftables.Chain{Name: "input", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	for _, r := range []struct {
		port    uint16
		verdict expr.Any
	}{
		{dropPort, &expr.Verdict{Kind: expr.VerdictDrop}},
		{rejectPort, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}},
	} {
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.port)},
			r.verdict,
		}})
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("add the test's rules: %v", err)
	}
}

// From the lab's node to its outside: Blocked accepts only the drop, Refused only the
// reject; a connection made, a refusal, a timeout and a missing route are errors that
// name what happened.
func TestPrivilegedBlockedAndRefused(t *testing.T) {
	l := labtest.New(t)
	inputRules(t, l.Outside)
	ctx := context.Background()
	const timeout = time.Second
	for _, server := range []netip.Addr{lab.OutsideAddr4.Addr(), lab.OutsideAddr6.Addr()} {
		open := netip.AddrPortFrom(server, openPort)
		// The path works: the probes see a connection when there is one.
		if _, err := TCP(ctx, l.Node, l.Outside, open, 3*time.Second); err != nil {
			t.Fatalf("nothing in the way of %s: %v", open, err)
		}
		for _, probe := range []struct {
			name string
			fn   func(context.Context, netns.NsHandle, netns.NsHandle, netip.AddrPort, time.Duration) error
		}{{"Blocked", Blocked}, {"Refused", Refused}} {
			if err := probe.fn(ctx, l.Node, l.Outside, open, timeout); err == nil || !strings.Contains(err.Error(), "was made") {
				t.Errorf("%s(%s), nothing in the way: %v, want an error saying the connection was made", probe.name, open, err)
			}
		}
		drop, reject := netip.AddrPortFrom(server, dropPort), netip.AddrPortFrom(server, rejectPort)
		if err := Blocked(ctx, l.Node, l.Outside, drop, timeout); err != nil {
			t.Errorf("Blocked(%s), dropped: %v", drop, err)
		}
		// The dial's timeout is context.DeadlineExceeded or os.ErrDeadlineExceeded,
		// depending on which deadline the net package notices first.
		if err := Refused(ctx, l.Node, l.Outside, drop, timeout); classify(err) != noAnswer {
			t.Errorf("Refused(%s), dropped: %v, want a timeout", drop, err)
		}
		if err := Refused(ctx, l.Node, l.Outside, reject, timeout); err != nil {
			t.Errorf("Refused(%s), rejected: %v", reject, err)
		}
		if err := Blocked(ctx, l.Node, l.Outside, reject, timeout); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("Blocked(%s), rejected: %v, want connection refused", reject, err)
		}
	}

	// An address of the node that the outside has no route to: ENETUNREACH is no block.
	h, err := netlink.NewHandleAt(l.Node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	unrouted := netip.MustParseAddrPort("198.51.100.1:7004")
	if err := h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: unrouted.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	for _, probe := range []struct {
		name string
		fn   func(context.Context, netns.NsHandle, netns.NsHandle, netip.AddrPort, time.Duration) error
	}{{"Blocked", Blocked}, {"Refused", Refused}} {
		if err := probe.fn(ctx, l.Outside, l.Node, unrouted, timeout); !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("%s(%s), no route: %v, want network unreachable", probe.name, unrouted, err)
		}
		// A listener that cannot be opened (the address is not the server's).
		if err := probe.fn(ctx, l.Outside, l.Outside, unrouted, timeout); err == nil || !strings.Contains(err.Error(), "listen on") {
			t.Errorf("%s(%s) with the listener in the wrong namespace: %v, want a listen error", probe.name, unrouted, err)
		}
	}
}
