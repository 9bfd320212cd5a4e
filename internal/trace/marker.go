package trace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nftwire"
)

// TableName is the name of the tables the marker creates, in families inet and bridge.
// podnet's own tables ("podnet") and every other table are left alone.
const TableName = "podnet-trace"

// Priorities of the marker's chains.
const (
	// PriorityMark is where packets of the flow are marked: before everything but
	// defragmentation (-400), conntrack (-200) included, in prerouting and output
	// ("raw - 1"); in the bridge family before dstnat (-300) and filter (-200).
	PriorityMark = -301
	// PriorityMarkReply is where replies are marked: right after conntrack (-200), which
	// attaches the packet to its connection, before mangle (-150) and dstnat (-100).
	PriorityMarkReply = -199
	// PrioritySeen is the priority of the empty chains that show a packet came through
	// a hook: after everything but conntrack's confirmation (INT_MAX).
	PrioritySeen = math.MaxInt32 - 1
)

// chainSpec is one base chain of the marker's tables.
type chainSpec struct {
	name     string
	hook     uint32
	priority int32
	rule     func(f Flow, fam nftables.TableFamily) []expr.Any // nil: an empty chain
}

// Hook numbers (NF_INET_*, NF_BR_* have the same values).
const (
	hookPrerouting  = 0
	hookInput       = 1
	hookForward     = 2
	hookOutput      = 3
	hookPostrouting = 4
)

var hookNames = map[uint32]string{
	hookPrerouting: "prerouting", hookInput: "input", hookForward: "forward", hookOutput: "output",
	hookPostrouting: "postrouting", 5: "ingress", 6: "egress",
}

// Names of the marker's chains.
const (
	chainMarkPrerouting      = "mark-prerouting"
	chainMarkOutput          = "mark-output"
	chainMarkReplyPrerouting = "mark-reply-prerouting"
	chainMarkReplyOutput     = "mark-reply-output"
	chainMarkUntracked       = "mark-untracked-reply-prerouting"
	chainSeenPrefix          = "seen-"
)

// markerFamilies are the families of the marker's tables.
var markerFamilies = []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge}

// chainsOf returns the chains of the marker's table of family fam.
func chainsOf(fam nftables.TableFamily) []chainSpec {
	seen := func(hook uint32) chainSpec {
		return chainSpec{name: chainSeenPrefix + hookNames[hook], hook: hook, priority: PrioritySeen}
	}
	all := []chainSpec{
		{name: chainMarkPrerouting, hook: hookPrerouting, priority: PriorityMark, rule: markRule},
	}
	if fam == nftables.TableFamilyINet {
		all = append(all,
			chainSpec{name: chainMarkOutput, hook: hookOutput, priority: PriorityMark, rule: markRule},
			chainSpec{name: chainMarkReplyPrerouting, hook: hookPrerouting, priority: PriorityMarkReply, rule: markReplyRule},
			chainSpec{name: chainMarkReplyOutput, hook: hookOutput, priority: PriorityMarkReply, rule: markReplyRule},
			chainSpec{name: chainMarkUntracked, hook: hookPrerouting, priority: PriorityMarkReply, rule: markUntrackedReplyRule},
		)
	}
	for _, h := range []uint32{hookPrerouting, hookInput, hookForward, hookOutput, hookPostrouting} {
		all = append(all, seen(h))
	}
	return all
}

// markRule marks the packets of f in its original direction, matched on their headers:
//
//	inet:   meta nfproto ipv4 ip saddr S ip daddr D meta l4proto P th dport N meta nftrace set 1
//	bridge: meta protocol ip  ip saddr S ip daddr D meta l4proto P th dport N meta nftrace set 1
func markRule(f Flow, fam nftables.TableFamily) []expr.Any {
	var es []expr.Any
	v6 := f.Dst.Is6()
	if fam == nftables.TableFamilyBridge {
		etype := []byte{0x08, 0x00}
		if v6 {
			etype = []byte{0x86, 0xdd}
		}
		es = append(es, &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1}, eq(etype))
	} else {
		es = append(es, nfprotoMatch(v6)...)
	}
	return slices.Concat(es, headerMatch(f, false), setNftrace())
}

// headerMatch matches the headers of f's packets: in its original direction, or
// swapped (the replies: the addresses swapped, the port as source port).
func headerMatch(f Flow, swapped bool) []expr.Any {
	srcOff, dstOff, alen := uint32(12), uint32(16), uint32(4)
	if f.Dst.Is6() {
		srcOff, dstOff, alen = 8, 24, 16
	}
	portOff := uint32(2)
	if swapped {
		srcOff, dstOff, portOff = dstOff, srcOff, 0
	}
	var es []expr.Any
	if f.Src.IsValid() {
		es = append(es, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: srcOff, Len: alen}, eq(f.Src.AsSlice()))
	}
	es = append(es, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: dstOff, Len: alen}, eq(f.Dst.AsSlice()))
	if p := f.l4proto(); p != 0 {
		es = append(es, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, eq([]byte{p}))
	}
	if f.Port != 0 {
		es = append(es, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2}, eq(be16(f.Port)))
	}
	return es
}

// markReplyRule marks the replies of f (and the ICMP errors about it), matched on the
// original tuple of their connection, which NAT does not change:
//
//	meta nfproto ipv4 ct direction reply ct original ip saddr S ct original ip daddr D
//	ct original protocol P ct original proto-dst N meta nftrace set 1
func markReplyRule(f Flow, _ nftables.TableFamily) []expr.Any {
	v6 := f.Dst.Is6()
	es := nfprotoMatch(v6)
	es = append(es, &expr.Ct{Key: unix.NFT_CT_DIRECTION, Register: 1}, eq([]byte{1}))
	srcKey, dstKey := expr.CtKey(unix.NFT_CT_SRC_IP), expr.CtKey(unix.NFT_CT_DST_IP)
	if v6 {
		srcKey, dstKey = unix.NFT_CT_SRC_IP6, unix.NFT_CT_DST_IP6
	}
	if f.Src.IsValid() {
		es = append(es, &expr.Ct{Key: srcKey, Register: 1, Direction: ctOriginal}, eq(f.Src.AsSlice()))
	}
	es = append(es, &expr.Ct{Key: dstKey, Register: 1, Direction: ctOriginal}, eq(f.Dst.AsSlice()))
	if p := f.l4proto(); p != 0 {
		es = append(es, &expr.Ct{Key: unix.NFT_CT_PROTOCOL, Register: 1, Direction: ctOriginal}, eq([]byte{p}))
	}
	if f.Port != 0 {
		es = append(es, &expr.Ct{Key: unix.NFT_CT_PROTO_DST, Register: 1, Direction: ctOriginal}, eq(be16(f.Port)))
	}
	return append(es, setNftrace()...)
}

// markUntrackedReplyRule marks the replies of f when conntrack does not track them
// (podnet does not track traffic between two pods of one bridge that no policy
// isolates), matched on their headers, the addresses and ports swapped:
//
//	meta nfproto ipv4 ct state untracked ip saddr D ip daddr S meta l4proto P
//	th sport N meta nftrace set 1
func markUntrackedReplyRule(f Flow, _ nftables.TableFamily) []expr.Any {
	v6 := f.Dst.Is6()
	es := nfprotoMatch(v6)
	es = append(es,
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitUNTRACKED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
	return slices.Concat(es, headerMatch(f, true), setNftrace())
}

// ctOriginal is IP_CT_DIR_ORIGINAL, the direction of a ct expression's tuple.
const ctOriginal = 0

func nfprotoMatch(v6 bool) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if v6 {
		p = unix.NFPROTO_IPV6
	}
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, eq([]byte{p})}
}

func setNftrace() []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: 1},
	}
}

func eq(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// Marker holds the tables that mark one flow for tracing in a network namespace. The
// tables belong to its netlink socket: Close deletes them, and so does the kernel when
// the process ends without calling it.
type Marker struct {
	mu   sync.Mutex // guards conn
	conn *netlink.Conn
}

// ErrBusy is returned by Mark when the namespace already has the marker's tables: another
// trace is running there.
var ErrBusy = errors.New("another podnet trace is running in this namespace")

// Mark creates tables inet and bridge TableName in the network namespace nsFD, which
// mark the packets of f for tracing (meta nftrace set 1), from the earliest hooks on:
//
//	inet:   mark-prerouting, mark-output (priority PriorityMark), the original direction;
//	        mark-reply-prerouting, mark-reply-output (PriorityMarkReply), the replies;
//	        mark-untracked-reply-prerouting (PriorityMarkReply), untracked replies by their headers;
//	bridge: mark-prerouting (PriorityMark): what a bridge port receives, before the
//	        bridge family's chains (br_netfilter then passes the packet, marked, to the
//	        inet hooks);
//	both:   seen-HOOK for every hook (PrioritySeen): empty chains whose policy event says
//	        that the packet came through the hook.
//
// The reply chains use conntrack expressions, which turn conntrack on in the namespace if
// nothing had. Mark returns ErrBusy when the tables exist.
func Mark(nsFD int, f Flow) (*Marker, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	c, err := nftwire.Dial(nsFD)
	if err != nil {
		return nil, fmt.Errorf("mark flow: connect to nftables: %w", err)
	}
	var b nftwire.Batch
	for _, fam := range markerFamilies {
		// Owned by c; exclusive: the tables of another trace are not ours to use.
		b.AddTable(fam, TableName, nftwire.Owner(), nftwire.Exclusive())
		for _, ch := range chainsOf(fam) {
			b.AddChain(fam, TableName, nftwire.Chain{Name: ch.name, Type: "filter", Hook: ch.hook, Priority: ch.priority, Policy: "accept"})
			if ch.rule != nil {
				b.AddRule(fam, TableName, ch.name, ch.rule(f, fam))
			}
		}
	}
	if err := b.Send(c); err != nil {
		// The tables of another marker: EEXIST, or EPERM as they belong to its socket.
		busy := errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EPERM) && tableExists(c)
		c.Close()
		if busy {
			return nil, fmt.Errorf("mark flow: table %s exists: %w", TableName, ErrBusy)
		}
		return nil, fmt.Errorf("mark flow %s: %w", f, err)
	}
	return &Marker{conn: c}, nil
}

// tableExists reports whether table inet TableName exists.
func tableExists(c *netlink.Conn) bool {
	ok, err := nftwire.TableExists(c, nftables.TableFamilyINet, TableName)
	return ok && err == nil
}

// Close deletes the marker's tables. Called twice, the second call does nothing.
func (m *Marker) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil {
		return nil
	}
	var b nftwire.Batch
	for _, fam := range markerFamilies {
		b.DelTable(fam, TableName)
	}
	err := b.Send(m.conn)
	// Closing the socket deletes the tables too, should the batch have failed.
	if cerr := m.conn.Close(); err == nil && cerr != nil {
		err = cerr
	}
	m.conn = nil
	if err != nil {
		return fmt.Errorf("remove trace marker: %w", err)
	}
	return nil
}
