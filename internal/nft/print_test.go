package nft

import (
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Expressions for the printer's tests.
func metaCmp(key expr.MetaKey, op expr.CmpOp, data ...byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: reg1}, &expr.Cmp{Op: op, Register: reg1, Data: data}}
}

func payloadCmp(base expr.PayloadBase, off uint32, op expr.CmpOp, data ...byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: base, Offset: off, Len: uint32(len(data))},
		&expr.Cmp{Op: op, Register: reg1, Data: data},
	}
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

// Rules that podnet does not write, printed as nft 1.0.6 lists the same expressions
// (nft -f of the expected text, then nft list ruleset): what nft leaves out as implied,
// and what it keeps.
func TestPrintRule(t *testing.T) {
	inet := tableDef{family: nftables.TableFamilyINet, sets: []setDef{
		{name: "s", keyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeInteger)},
	}}
	bridge := tableDef{family: nftables.TableFamilyBridge}
	nfproto4 := metaCmp(expr.MetaKeyNFPROTO, eq, unix.NFPROTO_IPV4)
	nfproto6 := metaCmp(expr.MetaKeyNFPROTO, eq, unix.NFPROTO_IPV6)
	tcp := metaCmp(expr.MetaKeyL4PROTO, eq, unix.IPPROTO_TCP)
	accept := one(accept())
	for _, tc := range []struct {
		table tableDef
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
			&expr.Payload{DestRegister: reg(16), Base: nh, Offset: 20, Len: 4},
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
		// In the bridge, meta l4proto icmpv6 implies the ether type, tcp does not.
		{bridge, rule(isEtherType(unix.ETH_P_IPV6), metaCmp(expr.MetaKeyL4PROTO, eq, unix.IPPROTO_ICMPV6), accept), "meta l4proto ipv6-icmp accept"},
		{bridge, rule(isEtherType(unix.ETH_P_IPV6), tcp, accept), "ether type ip6 meta l4proto tcp accept"},
		{bridge, rule(isEtherType(0x1234), accept), "ether type 0x1234 accept"},
		{bridge, rule(isEtherType(unix.ETH_P_8021Q), accept), "ether type 8021q accept"},
		{bridge, rule(isEtherType(unix.ETH_P_IP), payloadCmp(nh, 20, eq, 0, 0, 0, 1), accept), "ether type ip @nh,160,32 0x1 accept"},
		{bridge, rule(payloadCmp(ll, 0, eq, 2, 0, 0, 0, 0, 1), accept), "ether daddr 02:00:00:00:00:01 accept"},
	} {
		if got := tc.table.printRule(tc.exprs); got != tc.want {
			t.Errorf("%s: got\n\t%s\nwant\n\t%s", tc.table.name(), got, tc.want)
		}
	}
}

// What the printer does not know prints as "<unknown ...>", never as a guess.
func TestPrintUnknown(t *testing.T) {
	inet := build(Ruleset{}).tables[0]
	for name, exprs := range map[string][]expr.Any{
		"expression":     {&expr.Log{}},
		"constant":       {&expr.Immediate{Register: reg1, Data: []byte{1, 2, 3, 4}}, &expr.Cmp{Op: eq, Register: reg1, Data: []byte{1, 2, 3, 4}}},
		"empty register": {&expr.Cmp{Op: eq, Register: reg(16), Data: []byte{1, 2, 3, 4}}},
		"unknown set": {&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: "nosuchset"}},
		"key shorter than the set's": {&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: setEndpointAddrs4}},
		"key ending within a field": {&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Payload{DestRegister: reg(16), Base: nh, Offset: 8, Len: 8},
			&expr.Lookup{SourceRegister: reg1, SetName: setEndpointAddrs4}},
		"xor": {&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: make([]byte, 4), Xor: []byte{0, 0, 0, 1}}},
		"ct flags compared with a value": {&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: []byte{2, 0, 0, 0}, Xor: make([]byte, 4)},
			&expr.Cmp{Op: eq, Register: reg1, Data: []byte{2, 0, 0, 0}}},
		"meta key":                {&expr.Meta{Key: expr.MetaKeyCPU, Register: reg1}},
		"payload write":           {&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg1, Base: nh, Offset: 12, Len: 4}},
		"nat without map":         {&expr.Payload{DestRegister: reg1, Base: nh, Offset: 12, Len: 4}, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1}},
		"masquerade to ports":     {&expr.Masq{ToPorts: true, RegProtoMin: reg1}},
		"reject":                  {&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH}},
		"verdict":                 {&expr.Verdict{Kind: 7}},
		"set update with timeout": append(loadL4(0), &expr.Dynset{SrcRegKey: reg1, SetName: setAffinityServices + "4", Timeout: 1}),
	} {
		if got := inet.printRule(exprs); !strings.Contains(got, "<unknown") {
			t.Errorf("%s: printed %q", name, got)
		}
	}
}

// Every rule of the model prints, with no unknown part.
func TestPrintModel(t *testing.T) {
	for _, td := range build(full()).tables {
		for _, c := range td.chains {
			for i, r := range c.rules {
				if got := td.printRule(r.exprs); got == "" || strings.Contains(got, "<unknown") {
					t.Errorf("%s chain %s rule %d: %q", td.name(), c.name, i, got)
				}
			}
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

// InSync names a rule that differs by both texts, or by its expressions when they print
// the same.
func TestRuleDiff(t *testing.T) {
	td := build(Ruleset{}).tables[0]
	est := append(ctStateEstablished(), accept())
	dnat := append(ctStatusDNAT(), accept())
	if got, want := ruleDiff(td, dnat, est), `"ct status dnat accept", want "ct state established,related accept"`; got != want {
		t.Errorf("ruleDiff = %s, want %s", got, want)
	}
	other := append(ctStateEstablished(), accept())
	other[0] = &expr.Ct{Key: expr.CtKeySTATE, Register: reg(4)}
	other[1] = &expr.Bitwise{SourceRegister: reg(4), DestRegister: reg1, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)}
	if got := ruleDiff(td, other, est); !strings.HasPrefix(got, `"ct state established,related accept", in expressions [`) {
		t.Errorf("ruleDiff = %s", got)
	}
}
