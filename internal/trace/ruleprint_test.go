package trace

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The generic printer on expressions as the kernel lists them (the privileged
// TestPrivilegedPrintRuleLikeNft compares it with nft itself on real tables).
func TestPrintRule(t *testing.T) {
	meta := func(k expr.MetaKey) *expr.Meta { return &expr.Meta{Key: k, Register: 1} }
	cmp := func(op expr.CmpOp, data ...byte) *expr.Cmp { return &expr.Cmp{Op: op, Register: 1, Data: data} }
	pl := func(base expr.PayloadBase, off, n uint32) *expr.Payload {
		return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
	}
	nh, th := expr.PayloadBaseNetworkHeader, expr.PayloadBaseTransportHeader
	v4 := []expr.Any{meta(expr.MetaKeyNFPROTO), cmp(expr.CmpOpEq, unix.NFPROTO_IPV4)}
	tcp := []expr.Any{meta(expr.MetaKeyL4PROTO), cmp(expr.CmpOpEq, unix.IPPROTO_TCP)}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	sets := map[string]SetInfo{
		"pairs":   {Name: "pairs", KeyLen: 8},
		"svc":     {Name: "svc", KeyLen: 12, VerdictMap: true, Map: true},
		"ports4":  {Name: "ports4", KeyLen: 8, DataLen: 8, Map: true},
		"__set0":  {Name: "__set0", KeyLen: 2, Anonymous: true, Elems: []SetElem{{Key: []byte{0, 22}}, {Key: []byte{1, 187}}}},
		"__set1":  {Name: "__set1", KeyLen: 4, Anonymous: true, Interval: true, Elems: []SetElem{{Key: []byte{0, 0, 0, 0}, IntervalEnd: true}, {Key: []byte{10, 0, 0, 0}}, {Key: []byte{11, 0, 0, 0}, IntervalEnd: true}, {Key: []byte{192, 0, 2, 1}}, {Key: []byte{192, 0, 2, 2}, IntervalEnd: true}}},
		"__map0":  {Name: "__map0", KeyLen: 1, Anonymous: true, Map: true, VerdictMap: true, Elems: []SetElem{{Key: []byte{6}, Verdict: "jump tcp-in"}}},
		"clients": {Name: "clients", KeyLen: 4},
		"__set2":  {Name: "__set2", KeyLen: 1, Anonymous: true, Elems: []SetElem{{Key: []byte{17}}, {Key: []byte{6}}}},
	}
	addr := netip.MustParseAddr("192.0.2.7").AsSlice()
	for _, c := range []struct {
		name   string
		family string
		exprs  []expr.Any
		want   string
	}{
		{"saddr drop", "inet", cat(v4, []expr.Any{pl(nh, 12, 4), cmp(expr.CmpOpEq, addr...), &expr.Verdict{Kind: expr.VerdictDrop}}), "ip saddr 192.0.2.7 drop"},
		{"byte prefix", "inet", cat(v4, []expr.Any{pl(nh, 16, 1), cmp(expr.CmpOpEq, 10), &expr.Verdict{Kind: expr.VerdictAccept}}), "ip daddr 10.0.0.0/8 accept"},
		{"masked prefix", "ip", []expr.Any{pl(nh, 12, 4), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 240, 0, 0}, Xor: []byte{0, 0, 0, 0}}, cmp(expr.CmpOpNeq, 172, 16, 0, 0)}, "ip saddr != 172.16.0.0/12"},
		{"tcp dport", "inet", cat(tcp, []expr.Any{pl(th, 2, 2), cmp(expr.CmpOpEq, 0, 80), &expr.Counter{Packets: 3, Bytes: 180}, &expr.Verdict{Kind: expr.VerdictAccept}}), "tcp dport 80 counter packets 3 bytes 180 accept"},
		{"port range", "inet", cat(tcp, []expr.Any{pl(th, 2, 2), cmp(expr.CmpOpGte, 4, 0)}), "tcp dport >= 1024"},
		{"l4proto kept before a generic port", "inet", []expr.Any{meta(expr.MetaKeyL4PROTO), &expr.Lookup{SourceRegister: 1, SetName: "__set2"}, pl(th, 2, 2), cmp(expr.CmpOpEq, 0, 53)}, "meta l4proto { tcp, udp } th dport 53"},
		{"ct state", "inet", []expr.Any{&expr.Ct{Key: unix.NFT_CT_STATE, Register: 1}, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{6, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}}, cmp(expr.CmpOpNeq, 0, 0, 0, 0), &expr.Verdict{Kind: expr.VerdictAccept}}, "ct state established,related accept"},
		{"ct status dnat", "inet", []expr.Any{&expr.Ct{Key: unix.NFT_CT_STATUS, Register: 1}, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0x20, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}}, cmp(expr.CmpOpNeq, 0, 0, 0, 0)}, "ct status dnat"},
		{"ct original tuple", "inet", cat(v4, []expr.Any{&expr.Ct{Key: unix.NFT_CT_DST_IP, Register: 1, Direction: 0}, cmp(expr.CmpOpEq, addr...), &expr.Ct{Key: unix.NFT_CT_DIRECTION, Register: 1}, cmp(expr.CmpOpEq, 1)}), "meta nfproto ipv4 ct original ip daddr 192.0.2.7 ct direction reply"},
		{"tcp flags", "inet", cat(tcp, []expr.Any{pl(th, 13, 1), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}}, cmp(expr.CmpOpEq, 0x02)}), "tcp flags syn / syn,ack"},
		{"iifname wildcard", "inet", []expr.Any{meta(expr.MetaKeyIIFNAME), cmp(expr.CmpOpEq, 'v', 'e', 't', 'h'), &expr.Verdict{Kind: expr.VerdictJump, Chain: "pods"}}, `iifname "veth*" jump pods`},
		{"oifname", "ip", []expr.Any{meta(expr.MetaKeyOIFNAME), cmp(expr.CmpOpNeq, append([]byte("eth0"), make([]byte, 12)...)...), &expr.Masq{}}, `oifname != "eth0" masquerade`},
		{"concatenation lookup", "ip", []expr.Any{pl(nh, 12, 4), &expr.Payload{DestRegister: 9, Base: nh, Offset: 16, Len: 4}, &expr.Lookup{SourceRegister: 1, SetName: "pairs", Invert: true}, &expr.Verdict{Kind: expr.VerdictDrop}}, "ip saddr . ip daddr != @pairs drop"},
		{"verdict map", "ip", []expr.Any{&expr.Payload{DestRegister: 9, Base: nh, Offset: 16, Len: 4}, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 10}, &expr.Payload{DestRegister: 11, Base: th, Offset: 2, Len: 2}, &expr.Lookup{SourceRegister: 9, SetName: "svc", DestRegister: 0, IsDestRegSet: true}}, "ip daddr . meta l4proto . th dport vmap @svc"},
		{"anonymous set", "inet", cat(tcp, []expr.Any{pl(th, 2, 2), &expr.Lookup{SourceRegister: 1, SetName: "__set0"}, &expr.Verdict{Kind: expr.VerdictAccept}}), "tcp dport { 22, 443 } accept"},
		{"anonymous intervals", "ip", []expr.Any{pl(nh, 12, 4), &expr.Lookup{SourceRegister: 1, SetName: "__set1"}, &expr.Verdict{Kind: expr.VerdictDrop}}, "ip saddr { 10.0.0.0/8, 192.0.2.1 } drop"},
		{"anonymous vmap", "ip", []expr.Any{pl(nh, 9, 1), &expr.Lookup{SourceRegister: 1, SetName: "__map0", IsDestRegSet: true}}, "ip protocol vmap { tcp : jump tcp-in }"},
		{"dnat map", "inet", cat(v4, []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9}, &expr.Payload{DestRegister: 10, Base: th, Offset: 2, Len: 2}, &expr.Lookup{SourceRegister: 9, SetName: "ports4", DestRegister: 8, IsDestRegSet: true}, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 8, RegProtoMin: 9}}), "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports4"},
		{"dnat to address and port", "ip", []expr.Any{&expr.Immediate{Register: 1, Data: addr}, &expr.Immediate{Register: 2, Data: []byte{0, 80}}, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2}}, "dnat to 192.0.2.7:80"},
		{"snat", "inet", cat(v4, []expr.Any{&expr.Immediate{Register: 1, Data: addr}, &expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, FullyRandom: true}}), "meta nfproto ipv4 snat ip to 192.0.2.7 fully-random"},
		{"reject tcp reset", "inet", cat(tcp, []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}), "meta l4proto tcp reject with tcp reset"},
		{"reject", "inet", []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: 1}}, "reject"},
		{"log and limit", "inet", []expr.Any{&expr.Limit{Type: expr.LimitTypePkts, Rate: 3, Unit: expr.LimitTimeMinute, Burst: 5}, &expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte("dropped: ")}, &expr.Verdict{Kind: expr.VerdictDrop}}, `limit rate 3/minute log prefix "dropped: " drop`},
		{"meta mark set", "inet", []expr.Any{&expr.Immediate{Register: 1, Data: []byte{0x10, 0, 0, 0}}, &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}}, "meta mark set 0x00000010"},
		{"nftrace", "inet", setNftrace(), "meta nftrace set 1"},
		{"dynset", "ip", []expr.Any{pl(nh, 12, 4), &expr.Dynset{SrcRegKey: 1, SetName: "clients", Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: time.Minute}}, "update @clients { ip saddr timeout 1m0s }"},
		{"numgen", "ip", []expr.Any{&expr.Numgen{Register: 1, Modulus: 2, Type: unix.NFT_NG_RANDOM}, cmp(expr.CmpOpEq, 0, 0, 0, 0), &expr.Verdict{Kind: expr.VerdictGoto, Chain: "backend-0"}}, "numgen random mod 2 0 goto backend-0"},
		{"fib", "inet", []expr.Any{&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true}, cmp(expr.CmpOpEq, 2, 0, 0, 0), &expr.Verdict{Kind: expr.VerdictReturn}}, "fib daddr type local return"},
		{"range", "ip", []expr.Any{pl(th, 0, 2), &expr.Range{Op: expr.CmpOpNeq, Register: 1, FromData: []byte{0, 1}, ToData: []byte{4, 0}}}, "th sport != 1-1024"},
		{"ether saddr", "bridge", []expr.Any{pl(expr.PayloadBaseLLHeader, 6, 6), cmp(expr.CmpOpEq, 2, 0, 0, 0, 0, 1), &expr.Verdict{Kind: expr.VerdictDrop}}, "ether saddr 02:00:00:00:00:01 drop"},
		{"icmpv6 kills both dependencies", "inet", []expr.Any{meta(expr.MetaKeyNFPROTO), cmp(expr.CmpOpEq, unix.NFPROTO_IPV6), meta(expr.MetaKeyL4PROTO), cmp(expr.CmpOpEq, unix.IPPROTO_ICMPV6), pl(th, 0, 1), cmp(expr.CmpOpEq, 134), &expr.Verdict{Kind: expr.VerdictDrop}}, "icmpv6 type nd-router-advert drop"},
		{"raw payload", "inet", []expr.Any{pl(th, 8, 2), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}}, cmp(expr.CmpOpNeq, 0xfe, 0x80)}, "@th,64,16 & 0xffc0 != 0xfe80"},
		{"notrack", "inet", []expr.Any{&expr.Notrack{}}, "notrack"},
		{"unknown expression", "inet", nil, "[tproxy]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got string
			if c.exprs == nil {
				got = printRule(c.family, []any{&opaque{"tproxy"}}, sets)
			} else {
				got = PrintRule(c.family, c.exprs, sets)
			}
			if got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}
