package nft

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

var (
	eq = expr.CmpOpEq
	nh = expr.PayloadBaseNetworkHeader
)

// What the printer does not know prints as "<unknown ...>", never as a guess (on podnet's
// tables; internal/nftwire tests the printer on its own).
func TestPrintUnknown(t *testing.T) {
	inet := build(Ruleset{}).tables[0]
	for name, exprs := range map[string][]expr.Any{
		"expression":     {&expr.TProxy{}},
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
		"ct flags ordered": {&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: []byte{2, 0, 0, 0}, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpGt, Register: reg1, Data: []byte{2, 0, 0, 0}}},
		"meta key":                {&expr.Meta{Key: 200, Register: reg1}},
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
	for _, td := range slices.Concat(build(full()).tables, build(policyExample).tables) {
		for _, c := range td.chains {
			for i, r := range c.rules {
				if got := td.printRule(r.exprs); got == "" || strings.Contains(got, "<unknown") {
					t.Errorf("%s chain %s rule %d: %q", td.name(), c.name, i, got)
				}
			}
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
