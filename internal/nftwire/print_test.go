package nftwire

import (
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Expressions for the printer's tests.
const reg1 = unix.NFT_REG_1

func metaCmp(key expr.MetaKey, op expr.CmpOp, data ...byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: reg1}, &expr.Cmp{Op: op, Register: reg1, Data: data}}
}

func payloadCmp(base expr.PayloadBase, off uint32, op expr.CmpOp, data ...byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: base, Offset: off, Len: uint32(len(data))},
		&expr.Cmp{Op: op, Register: reg1, Data: data},
	}
}

func isEtherType(t uint16) []expr.Any {
	return payloadCmp(expr.PayloadBaseLLHeader, 12, expr.CmpOpEq, binaryutil.BigEndian.PutUint16(t)...)
}

func rule(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func one(e ...expr.Any) []expr.Any { return e }

var (
	eq, neq = expr.CmpOpEq, expr.CmpOpNeq
	nh, th  = expr.PayloadBaseNetworkHeader, expr.PayloadBaseTransportHeader
	ll      = expr.PayloadBaseLLHeader
)

func familyName(f nftables.TableFamily) string {
	return map[nftables.TableFamily]string{nftables.TableFamilyINet: "inet", nftables.TableFamilyIPv4: "ip",
		nftables.TableFamilyIPv6: "ip6", nftables.TableFamilyBridge: "bridge"}[f]
}

// Rules that podnet does not write, printed as nft 1.0.6 lists the same expressions
// (nft -f of the expected text, then nft list ruleset): what nft leaves out as implied,
// and what it keeps.
func TestPrintImplied(t *testing.T) {
	inet := Table{Family: nftables.TableFamilyINet, Sets: map[string]Set{
		"s": {Name: "s", KeyLen: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeInteger).Bytes},
	}}
	bridge := Table{Family: nftables.TableFamilyBridge}
	nfproto4 := metaCmp(expr.MetaKeyNFPROTO, eq, unix.NFPROTO_IPV4)
	nfproto6 := metaCmp(expr.MetaKeyNFPROTO, eq, unix.NFPROTO_IPV6)
	tcp := metaCmp(expr.MetaKeyL4PROTO, eq, unix.IPPROTO_TCP)
	accept := one(&expr.Verdict{Kind: expr.VerdictAccept})
	for _, tc := range []struct {
		table Table
		exprs []expr.Any
		want  string
	}{
		// A raw load implies no protocol.
		{inet, rule(nfproto4, payloadCmp(nh, 20, eq, 0, 0, 0, 1), accept), "meta nfproto ipv4 @nh,160,32 0x1 accept"},
		{inet, rule(nfproto6, one(
			&expr.Payload{DestRegister: reg1, Base: nh, Offset: 8, Len: 2},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
			&expr.Cmp{Op: eq, Register: reg1, Data: []byte{0xfe, 0x80}}), accept),
			"meta nfproto ipv6 @nh,64,16 & 0xffc0 == 0xfe80 accept"},
		{inet, rule(nfproto4, one(
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Payload{DestRegister: unix.NFT_REG_2, Base: nh, Offset: 20, Len: 4},
			&expr.Lookup{SourceRegister: reg1, SetName: "s"}), accept),
			"meta nfproto ipv4 iifname . @nh,160,32 @s accept"},
		// meta l4proto tcp does not imply the network protocol; a field of tcp implies
		// meta l4proto tcp.
		{inet, rule(nfproto6, tcp, accept), "meta nfproto ipv6 meta l4proto tcp accept"},
		{inet, rule(nfproto4, tcp, payloadCmp(th, 2, eq, 0, 3), accept), "meta nfproto ipv4 tcp dport 3 accept"},
		{inet, rule(tcp, payloadCmp(th, 2, neq, 0, 0), accept), "tcp dport != 0 accept"},
		{inet, rule(tcp, payloadCmp(th, 8, eq, 0, 5), accept), "tcp ackseq 327680/16 accept"},
		{inet, rule(payloadCmp(th, 2, eq, 0, 5), accept), "th dport 5 accept"},
		{inet, rule(payloadCmp(th, 8, eq, 0, 5), accept), "@th,64,16 0x5 accept"},
		{inet, rule(metaCmp(expr.MetaKeyL4PROTO, eq, 132), accept), "meta l4proto sctp accept"},
		// A load shorter than its field is a prefix of it.
		{inet, rule(nfproto4, payloadCmp(nh, 12, eq, 127), one(&expr.Counter{}), accept),
			"ip saddr 127.0.0.0/8 counter packets 0 bytes 0 accept"},
		// A statement other than a match ends what a later field may imply.
		{inet, rule(nfproto4, one(&expr.Counter{}), payloadCmp(nh, 12, eq, 1, 2, 3, 4), accept),
			"meta nfproto ipv4 counter packets 0 bytes 0 ip saddr 1.2.3.4 accept"},
		{inet, rule(metaCmp(expr.MetaKeyIIFNAME, eq, 'l', 'o'), accept), `iifname "lo*" accept`},
		{inet, rule(metaCmp(expr.MetaKeyMARK, eq, binaryutil.NativeEndian.PutUint32(5)...), accept), "meta mark 0x00000005 accept"},
		{inet, rule(nfproto4, tcp, one(&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})), "meta l4proto tcp reject with tcp reset"},
		{inet, rule(nfproto6, tcp, one(&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_HOST_UNREACH})),
			"meta nfproto ipv6 meta l4proto tcp reject with icmpx host-unreachable"},
		// ip protocol says the network protocol too: in inet a transport field leaves it.
		{inet, rule(nfproto4, payloadCmp(nh, 9, eq, unix.IPPROTO_TCP), payloadCmp(th, 2, eq, 0, 22)), "ip protocol tcp tcp dport 22"},
		{Table{Family: nftables.TableFamilyIPv4}, rule(payloadCmp(nh, 9, eq, unix.IPPROTO_TCP), payloadCmp(th, 2, eq, 0, 22)), "tcp dport 22"},
		// In the bridge, meta l4proto icmpv6 implies the ether type, tcp does not.
		{bridge, rule(isEtherType(unix.ETH_P_IPV6), metaCmp(expr.MetaKeyL4PROTO, eq, unix.IPPROTO_ICMPV6), accept), "meta l4proto ipv6-icmp accept"},
		{bridge, rule(isEtherType(unix.ETH_P_IPV6), tcp, accept), "ether type ip6 meta l4proto tcp accept"},
		{bridge, rule(isEtherType(0x1234), accept), "ether type 0x1234 accept"},
		{bridge, rule(isEtherType(unix.ETH_P_8021Q), accept), "ether type 8021q accept"},
		{bridge, rule(isEtherType(unix.ETH_P_IP), payloadCmp(nh, 20, eq, 0, 0, 0, 1), accept), "ether type ip @nh,160,32 0x1 accept"},
		{bridge, rule(payloadCmp(ll, 0, eq, 2, 0, 0, 0, 0, 1), accept), "ether daddr 02:00:00:00:00:01 accept"},
	} {
		if got := tc.table.PrintExprs(tc.exprs); got != tc.want {
			t.Errorf("%s: got\n\t%s\nwant\n\t%s", familyName(tc.table.Family), got, tc.want)
		}
	}
}

// The printer on expressions as the kernel lists them, in tables of any tool
// (TestPrivilegedPrintRuleLikeNft compares it with nft itself on real tables).
func TestPrintRule(t *testing.T) {
	meta := func(k expr.MetaKey) *expr.Meta { return &expr.Meta{Key: k, Register: 1} }
	cmp := func(op expr.CmpOp, data ...byte) *expr.Cmp { return &expr.Cmp{Op: op, Register: 1, Data: data} }
	pl := func(base expr.PayloadBase, off, n uint32) *expr.Payload {
		return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
	}
	v4 := []expr.Any{meta(expr.MetaKeyNFPROTO), cmp(expr.CmpOpEq, unix.NFPROTO_IPV4)}
	tcp := []expr.Any{meta(expr.MetaKeyL4PROTO), cmp(expr.CmpOpEq, unix.IPPROTO_TCP)}
	anon := uint32(unix.NFT_SET_ANONYMOUS)
	sets := map[string]Set{
		"pairs":  {Name: "pairs", KeyLen: 8},
		"svc":    {Name: "svc", KeyLen: 12, Flags: unix.NFT_SET_MAP, DataType: unix.NFT_DATA_VERDICT},
		"ports4": {Name: "ports4", KeyLen: 8, DataLen: 8, Flags: unix.NFT_SET_MAP},
		"__set0": {Name: "__set0", KeyLen: 2, Flags: anon, Elems: []Elem{{Key: []byte{0, 22}}, {Key: []byte{1, 187}}}},
		"__set1": {Name: "__set1", KeyLen: 4, Flags: anon | unix.NFT_SET_INTERVAL, Elems: []Elem{
			{Key: []byte{0, 0, 0, 0}, IntervalEnd: true}, {Key: []byte{10, 0, 0, 0}}, {Key: []byte{11, 0, 0, 0}, IntervalEnd: true},
			{Key: []byte{192, 0, 2, 1}}, {Key: []byte{192, 0, 2, 2}, IntervalEnd: true}}},
		"__map0": {Name: "__map0", KeyLen: 1, Flags: anon | unix.NFT_SET_MAP, DataType: unix.NFT_DATA_VERDICT,
			Elems: []Elem{{Key: []byte{6}, Verdict: &expr.Verdict{Kind: expr.VerdictJump, Chain: "tcp-in"}}}},
		"__map1": {Name: "__map1", KeyLen: 2, DataLen: 4, DataType: 7, Flags: anon | unix.NFT_SET_MAP, // ipv4_addr
			Elems: []Elem{{Key: []byte{1, 187}, Data: []byte{10, 0, 0, 2}}, {Key: []byte{0, 80}, Data: []byte{10, 0, 0, 1}}}},
		"clients": {Name: "clients", KeyLen: 4},
		"__set2":  {Name: "__set2", KeyLen: 1, Flags: anon, Elems: []Elem{{Key: []byte{17}}, {Key: []byte{6}}}},
	}
	addr := []byte{192, 0, 2, 7}
	mark := func(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }
	inet, ip, bridge := nftables.TableFamilyINet, nftables.TableFamilyIPv4, nftables.TableFamilyBridge
	for _, c := range []struct {
		name   string
		family nftables.TableFamily
		exprs  []any
		want   string
	}{
		{"saddr drop", inet, exprs(v4, pl(nh, 12, 4), cmp(expr.CmpOpEq, addr...), &expr.Verdict{Kind: expr.VerdictDrop}), "ip saddr 192.0.2.7 drop"},
		{"byte prefix", inet, exprs(v4, pl(nh, 16, 1), cmp(expr.CmpOpEq, 10), &expr.Verdict{Kind: expr.VerdictAccept}), "ip daddr 10.0.0.0/8 accept"},
		{"masked prefix", ip, exprs(pl(nh, 12, 4), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 240, 0, 0}, Xor: []byte{0, 0, 0, 0}}, cmp(expr.CmpOpNeq, 172, 16, 0, 0)), "ip saddr != 172.16.0.0/12"},
		{"tcp dport", inet, exprs(tcp, pl(th, 2, 2), cmp(expr.CmpOpEq, 0, 80), &expr.Counter{Packets: 3, Bytes: 180}, &expr.Verdict{Kind: expr.VerdictAccept}), "tcp dport 80 counter packets 3 bytes 180 accept"},
		{"port range", inet, exprs(tcp, pl(th, 2, 2), cmp(expr.CmpOpGte, 4, 0)), "tcp dport >= 1024"},
		{"l4proto kept before a generic port", inet, exprs(meta(expr.MetaKeyL4PROTO), &expr.Lookup{SourceRegister: 1, SetName: "__set2"}, pl(th, 2, 2), cmp(expr.CmpOpEq, 0, 53)), "meta l4proto { tcp, udp } th dport 53"},
		{"ct state", inet, exprs(&expr.Ct{Key: unix.NFT_CT_STATE, Register: 1}, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{6, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}}, cmp(expr.CmpOpNeq, 0, 0, 0, 0), &expr.Verdict{Kind: expr.VerdictAccept}), "ct state established,related accept"},
		{"ct state under a mask", inet, exprs(&expr.Ct{Key: unix.NFT_CT_STATE, Register: 1}, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{2, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}}, cmp(expr.CmpOpEq, 2, 0, 0, 0)), "ct state & established == established"},
		{"ct status dnat", inet, exprs(&expr.Ct{Key: unix.NFT_CT_STATUS, Register: 1}, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0x20, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}}, cmp(expr.CmpOpNeq, 0, 0, 0, 0)), "ct status dnat"},
		{"ct original tuple", inet, exprs(v4, &expr.Ct{Key: unix.NFT_CT_DST_IP, Register: 1, Direction: 0}, cmp(expr.CmpOpEq, addr...), &expr.Ct{Key: unix.NFT_CT_DIRECTION, Register: 1}, cmp(expr.CmpOpEq, 1)), "meta nfproto ipv4 ct original ip daddr 192.0.2.7 ct direction reply"},
		{"ct address of the rule's protocol", inet, exprs(v4, &expr.Ct{Key: unix.NFT_CT_SRC, Register: 1, Direction: 1}, cmp(expr.CmpOpEq, addr...)), "ct reply ip saddr 192.0.2.7"},
		{"ct protocol, listed without direction", inet, exprs(&expr.Ct{Key: unix.NFT_CT_PROTOCOL, Register: 1}, cmp(expr.CmpOpEq, unix.IPPROTO_TCP)), "ct protocol tcp"},
		{"ct counter of both directions", inet, exprs(&expr.Ct{Key: unix.NFT_CT_PKTS, Register: 1, Direction: CtDirNone}, &expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 8, Size: 8}, cmp(expr.CmpOpGt, 0, 0, 0, 0, 0, 0, 0, 10)), "ct packets > 10"},
		{"tcp flags", inet, exprs(tcp, pl(th, 13, 1), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}}, cmp(expr.CmpOpEq, 0x02)), "tcp flags syn / syn,ack"},
		{"iifname wildcard", inet, exprs(meta(expr.MetaKeyIIFNAME), cmp(expr.CmpOpEq, 'v', 'e', 't', 'h'), &expr.Verdict{Kind: expr.VerdictJump, Chain: "pods"}), `iifname "veth*" jump pods`},
		{"oifname", ip, exprs(meta(expr.MetaKeyOIFNAME), cmp(expr.CmpOpNeq, append([]byte("eth0"), make([]byte, 12)...)...), &expr.Masq{}), `oifname != "eth0" masquerade`},
		{"concatenation lookup", ip, exprs(pl(nh, 12, 4), &expr.Payload{DestRegister: 9, Base: nh, Offset: 16, Len: 4}, &expr.Lookup{SourceRegister: 1, SetName: "pairs", Invert: true}, &expr.Verdict{Kind: expr.VerdictDrop}), "ip saddr . ip daddr != @pairs drop"},
		{"verdict map", ip, exprs(&expr.Payload{DestRegister: 9, Base: nh, Offset: 16, Len: 4}, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 10}, &expr.Payload{DestRegister: 11, Base: th, Offset: 2, Len: 2}, &expr.Lookup{SourceRegister: 9, SetName: "svc", DestRegister: 0, IsDestRegSet: true}), "ip daddr . meta l4proto . th dport vmap @svc"},
		{"anonymous set", inet, exprs(tcp, pl(th, 2, 2), &expr.Lookup{SourceRegister: 1, SetName: "__set0"}, &expr.Verdict{Kind: expr.VerdictAccept}), "tcp dport { 22, 443 } accept"},
		{"anonymous intervals", ip, exprs(pl(nh, 12, 4), &expr.Lookup{SourceRegister: 1, SetName: "__set1"}, &expr.Verdict{Kind: expr.VerdictDrop}), "ip saddr { 10.0.0.0/8, 192.0.2.1 } drop"},
		{"anonymous vmap", ip, exprs(pl(nh, 9, 1), &expr.Lookup{SourceRegister: 1, SetName: "__map0", IsDestRegSet: true}), "ip protocol vmap { tcp : jump tcp-in }"},
		{"dnat to an anonymous map", ip, exprs(tcp, pl(th, 2, 2), &expr.Lookup{SourceRegister: 1, SetName: "__map1", DestRegister: 1, IsDestRegSet: true}, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1}), "dnat to tcp dport map { 80 : 10.0.0.1, 443 : 10.0.0.2 }"},
		{"dnat map", inet, exprs(v4, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9}, &expr.Payload{DestRegister: 10, Base: th, Offset: 2, Len: 2}, &expr.Lookup{SourceRegister: 9, SetName: "ports4", DestRegister: 8, IsDestRegSet: true}, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 8, RegAddrMax: 8, RegProtoMin: 9, RegProtoMax: 9, Specified: true}), "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports4"},
		{"dnat to address and port", ip, exprs(&expr.Immediate{Register: 1, Data: addr}, &expr.Immediate{Register: 2, Data: []byte{0, 80}}, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2}), "dnat to 192.0.2.7:80"},
		{"dnat to ranges", ip, exprs(&expr.Immediate{Register: 1, Data: addr}, &expr.Immediate{Register: 2, Data: []byte{192, 0, 2, 9}}, &expr.Immediate{Register: 3, Data: []byte{0, 80}}, &expr.Immediate{Register: 4, Data: []byte{0, 90}}, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 2, RegProtoMin: 3, RegProtoMax: 4, Random: true, Persistent: true}), "dnat to 192.0.2.7-192.0.2.9:80-90 random,persistent"},
		{"dnat ip6 to address and port", nftables.TableFamilyIPv6, exprs(&expr.Immediate{Register: 1, Data: make([]byte, 16)}, &expr.Immediate{Register: 2, Data: []byte{0, 80}}, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: 1, RegProtoMin: 2}), "dnat to [::]:80"},
		{"snat", inet, exprs(v4, &expr.Immediate{Register: 1, Data: addr}, &expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, FullyRandom: true}), "meta nfproto ipv4 snat ip to 192.0.2.7 fully-random"},
		{"masquerade to ports", inet, exprs(meta(expr.MetaKeyL4PROTO), cmp(expr.CmpOpEq, unix.IPPROTO_UDP), &expr.Immediate{Register: 1, Data: []byte{4, 0}}, &expr.Immediate{Register: 2, Data: []byte{8, 0}}, &expr.Masq{ToPorts: true, RegProtoMin: 1, RegProtoMax: 2, Random: true}), "meta l4proto udp masquerade to :1024-2048 random"},
		{"reject tcp reset", inet, exprs(tcp, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}), "meta l4proto tcp reject with tcp reset"},
		{"reject", inet, exprs(&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: 1}), "reject"},
		{"reject with icmp", inet, exprs(v4, pl(nh, 12, 4), cmp(expr.CmpOpEq, addr...), &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3}), "ip saddr 192.0.2.7 reject with icmp port-unreachable"},
		{"reject in family ip", ip, exprs(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3}), "reject"},
		{"log and limit", inet, exprs(&expr.Limit{Type: expr.LimitTypePkts, Rate: 3, Unit: expr.LimitTimeMinute, Burst: 5}, &expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte("dropped: ")}, &expr.Verdict{Kind: expr.VerdictDrop}), `limit rate 3/minute log prefix "dropped: " drop`},
		{"limit of bytes", inet, exprs(&expr.Limit{Type: expr.LimitTypePktBytes, Rate: 1 << 20, Unit: expr.LimitTimeSecond, Over: true}), "limit rate over 1 mbytes/second"},
		{"quota", inet, exprs(&expr.Quota{Bytes: 100 << 20, Over: true}), "quota over 100 mbytes"},
		{"meta mark set", inet, exprs(&expr.Immediate{Register: 1, Data: mark(0x10)}, &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}), "meta mark set 0x00000010"},
		{"meta mark set or", inet, exprs(meta(expr.MetaKeyMARK), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mark(0xffffffef), Xor: mark(0x10)}, &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}), "meta mark set meta mark | 0x00000010"},
		{"meta mark set and, or", inet, exprs(meta(expr.MetaKeyMARK), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mark(0xffff), Xor: mark(0x10000)}, &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}), "meta mark set meta mark & 0x0001ffff | 0x00010000"},
		{"ct mark set", inet, exprs(meta(expr.MetaKeyMARK), &expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: 1}), "ct mark set meta mark"},
		{"nftrace", inet, exprs(&expr.Immediate{Register: 1, Data: []byte{1}}, &expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: 1}), "meta nftrace set 1"},
		{"payload set", ip, exprs(&expr.Immediate{Register: 1, Data: addr}, &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: nh, Offset: 12, Len: 4, CsumType: 1, CsumOffset: 10}), "ip saddr set 192.0.2.7"},
		{"dynset", ip, exprs(pl(nh, 12, 4), &expr.Dynset{SrcRegKey: 1, SetName: "clients", Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: time.Minute}), "update @clients { ip saddr timeout 1m }"},
		{"numgen", ip, exprs(&expr.Numgen{Register: 1, Modulus: 2, Type: unix.NFT_NG_RANDOM}, cmp(expr.CmpOpEq, 0, 0, 0, 0), &expr.Verdict{Kind: expr.VerdictGoto, Chain: "backend-0"}), "numgen random mod 2 0 goto backend-0"},
		{"fib", inet, exprs(&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true}, cmp(expr.CmpOpEq, 2, 0, 0, 0), &expr.Verdict{Kind: expr.VerdictReturn}), "fib daddr type local return"},
		{"range", ip, exprs(pl(th, 0, 2), &expr.Range{Op: expr.CmpOpNeq, Register: 1, FromData: []byte{0, 1}, ToData: []byte{4, 0}}), "th sport != 1-1024"},
		{"tcp option", inet, exprs(tcp, &expr.Exthdr{DestRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt}, cmp(expr.CmpOpEq, 0x05, 0xb4)), "tcp option maxseg size 1460"},
		{"ether saddr", bridge, exprs(pl(ll, 6, 6), cmp(expr.CmpOpEq, 2, 0, 0, 0, 0, 1), &expr.Verdict{Kind: expr.VerdictDrop}), "ether saddr 02:00:00:00:00:01 drop"},
		{"icmpv6 kills both dependencies", inet, exprs(meta(expr.MetaKeyNFPROTO), cmp(expr.CmpOpEq, unix.NFPROTO_IPV6), meta(expr.MetaKeyL4PROTO), cmp(expr.CmpOpEq, unix.IPPROTO_ICMPV6), pl(th, 0, 1), cmp(expr.CmpOpEq, 134), &expr.Verdict{Kind: expr.VerdictDrop}), "icmpv6 type nd-router-advert drop"},
		{"raw payload", inet, exprs(pl(th, 8, 2), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}}, cmp(expr.CmpOpNeq, 0xfe, 0x80)), "@th,64,16 & 0xffc0 != 0xfe80"},
		{"objref", ip, exprs(&expr.Objref{Type: 1, Name: "cnt"}, &expr.Objref{Type: 3, Name: "ftp-standard"}), `counter name "cnt" ct helper set "ftp-standard"`},
		{"notrack", inet, exprs(&expr.Notrack{}), "notrack"},
		{"unknown expression", inet, []any{&Opaque{Name: "tproxy"}}, "<unknown expression tproxy>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := (Table{Family: c.family, Sets: sets}).PrintRule(Rule{Exprs: c.exprs}); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

// exprs flattens expressions and lists of them.
func exprs(parts ...any) []any {
	var out []any
	for _, p := range parts {
		if l, ok := p.([]expr.Any); ok {
			for _, e := range l {
				out = append(out, e)
			}
			continue
		}
		out = append(out, p)
	}
	return out
}

// What the printer does not know prints as "<unknown ...>", never as a guess.
func TestPrintUnknown(t *testing.T) {
	inet := Table{Family: nftables.TableFamilyINet, Sets: map[string]Set{"m": {Name: "m", KeyLen: 4, DataLen: 4, Flags: unix.NFT_SET_MAP}}}
	for name, exprs := range map[string][]expr.Any{
		"expression":   {&expr.TProxy{}},
		"verdict":      {&expr.Verdict{Kind: 7}},
		"ct key":       {&expr.Ct{Key: 99, Register: reg1}},
		"ct direction": {&expr.Ct{Key: expr.CtKeyPROTODST, Register: reg1, Direction: 5}},
		"ct address":   {&expr.Ct{Key: expr.CtKeySRC, Register: reg1}, &expr.Cmp{Op: eq, Register: reg1, Data: []byte{1, 2, 3, 4}}},
		"bitwise to a constant": {&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: make([]byte, 4), Xor: []byte{1, 0, 0, 0}}},
		"match of flipped bits": {&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: []byte{0xff, 0xff, 0xff, 0xff}, Xor: []byte{1, 0, 0, 0}},
			&expr.Cmp{Op: eq, Register: reg1, Data: []byte{1, 0, 0, 0}}},
		"range over another length": {&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1}, &expr.Range{Register: reg1, FromData: []byte{1}, ToData: []byte{2}}},
		"nat to a loaded address": {&expr.Payload{DestRegister: reg1, Base: nh, Offset: 12, Len: 4},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1}},
		"nat to a map with a port beside": {&expr.Payload{DestRegister: reg1, Base: nh, Offset: 12, Len: 4},
			&expr.Lookup{SourceRegister: reg1, SetName: "m", DestRegister: reg1, IsDestRegSet: true},
			&expr.Immediate{Register: unix.NFT_REG_2, Data: []byte{0, 80}},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: unix.NFT_REG_2}},
		"set update with a set's expressions": {&expr.Payload{DestRegister: reg1, Base: nh, Offset: 12, Len: 4},
			&expr.Dynset{SrcRegKey: reg1, SetName: "m", Exprs: []expr.Any{&expr.Counter{}}}},
		"payload write from nothing": {&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg1, Base: nh, Offset: 12, Len: 4}},
	} {
		if got := inet.PrintExprs(exprs); !strings.Contains(got, "<unknown") {
			t.Errorf("%s: printed %q", name, got)
		}
	}
}

func TestPrefixLen(t *testing.T) {
	for _, tc := range []struct {
		mask []byte
		n    int
		ok   bool
	}{
		{[]byte{0xff, 0xc0, 0, 0}, 10, true},
		{[]byte{0, 0}, 0, true},
		{[]byte{0xff, 0xff}, 16, true},
		{[]byte{0xff, 0xa0}, 0, false},
		{[]byte{0xf0, 0x01}, 0, false},
	} {
		if n, ok := prefixLen(tc.mask); n != tc.n || ok != tc.ok {
			t.Errorf("prefixLen(%x) = %d, %v; want %d, %v", tc.mask, n, ok, tc.n, tc.ok)
		}
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		3 * time.Hour: "3h", 90 * time.Second: "1m30s", 250 * time.Millisecond: "250ms", 0: "0ms",
		24*time.Hour + time.Second: "1d1s",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%s) = %q, want %q", d, got, want)
		}
	}
}
