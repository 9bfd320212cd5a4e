package nftwire

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A ct expression goes out with its direction as one byte (as the kernel wants it, and
// google/nftables v0.3.0 does not send it) and reads back the same.
func TestCtRoundTrip(t *testing.T) {
	for _, ct := range []*expr.Ct{
		{Key: unix.NFT_CT_DST_IP, Register: reg1, Direction: ctDirReply},
		{Key: unix.NFT_CT_SRC_IP6, Register: reg1},
		{Key: expr.CtKeyPROTODST, Register: unix.NFT_REG32_05, Direction: ctDirOriginal},
		{Key: expr.CtKeySTATE, Register: reg1},
		{Key: expr.CtKeyPKTS, Register: reg1, Direction: CtDirNone},
		{Key: expr.CtKeyBYTES, Register: reg1, Direction: ctDirReply},
		{Key: expr.CtKeyMARK, Register: reg1, SourceRegister: true},
	} {
		data, err := marshalExpr(nftables.TableFamilyINet, ct)
		if err != nil {
			t.Fatalf("marshal %+v: %v", ct, err)
		}
		ad, err := netlink.NewAttributeDecoder(data)
		if err != nil {
			t.Fatal(err)
		}
		if got := parseExpr(nftables.TableFamilyINet, ad); !reflect.DeepEqual(got, ct) {
			t.Errorf("%+v read back as %+v", ct, got)
		}
		// The direction, when there is one, is one byte.
		attrs, _ := netlink.UnmarshalAttributes(data)
		for _, a := range attrs {
			if a.Type&^unix.NLA_F_NESTED != unix.NFTA_EXPR_DATA {
				continue
			}
			ct, _ := netlink.UnmarshalAttributes(a.Data)
			for _, c := range ct {
				if c.Type == unix.NFTA_CT_DIRECTION && len(c.Data) != 1 {
					t.Errorf("direction of %d bytes", len(c.Data))
				}
			}
		}
	}
}

// Elements read back from a message as they were queued.
func TestElemsRoundTrip(t *testing.T) {
	els := []Elem{
		{Key: []byte{10, 0, 0, 0}, Comment: "net-a"},
		{Key: []byte{11, 0, 0, 0}, IntervalEnd: true},
		{Key: []byte{1, 2}, KeyEnd: []byte{3, 4}},
		{Key: []byte{0, 80}, Data: []byte{10, 0, 0, 1, 0, 80}, Timeout: 3 * time.Second},
		{Key: []byte{6}, Verdict: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "pick-2"}},
		{Key: []byte{17}, Verdict: &expr.Verdict{Kind: expr.VerdictAccept}},
	}
	var b Batch
	b.AddElems(nftables.TableFamilyINet, "t", "s", 3, els)
	b.DelElems(nftables.TableFamilyINet, "t", "s", els[:1])
	if b.Err() != nil || b.Len() != 2 {
		t.Fatalf("batch: %d messages, %v", b.Len(), b.Err())
	}
	got, err := ParseElems(b.msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, els) {
		t.Errorf("read back\n\t%+v\nwant\n\t%+v", got, els)
	}
	if typ := b.msgs[1].Header.Type; typ != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_DELSETELEM) {
		t.Errorf("second message of type %#x", typ)
	}
}

// Table options: owner and exclusive.
func TestAddTable(t *testing.T) {
	var b Batch
	b.AddTable(nftables.TableFamilyBridge, "t")
	b.AddTable(nftables.TableFamilyINet, "u", Owner(), Exclusive())
	for i, want := range []struct {
		fam   nftables.TableFamily
		flags uint32
		excl  bool
	}{{nftables.TableFamilyBridge, 0, false}, {nftables.TableFamilyINet, nftTableFOwner, true}} {
		m := b.msgs[i]
		if nftables.TableFamily(m.Data[0]) != want.fam || (m.Header.Flags&netlink.Excl != 0) != want.excl {
			t.Errorf("table %d: family %d, header flags %v", i, m.Data[0], m.Header.Flags)
		}
		ad, err := decoder(m.Data[4:])
		if err != nil {
			t.Fatal(err)
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_TABLE_FLAGS && ad.Uint32() != want.flags {
				t.Errorf("table %d: flags %#x, want %#x", i, ad.Uint32(), want.flags)
			}
		}
	}
}

// A rule's expressions come back as expr values, but for what has no type.
func TestRuleExpressions(t *testing.T) {
	r := Rule{Exprs: []any{&expr.Counter{}, &Opaque{Name: "tproxy"}}}
	if _, err := r.Expressions(); err == nil {
		t.Error("an opaque expression read as an expr value")
	}
	r.Exprs = r.Exprs[:1]
	if es, err := r.Expressions(); err != nil || len(es) != 1 {
		t.Errorf("Expressions = %v, %v", es, err)
	}
}

// DelSet names the table and the set; DelRule the rule's handle; InsertRule the rule it
// goes before, without NLM_F_APPEND (which would put it after); AddRule appends.
func TestDelSetRules(t *testing.T) {
	var b Batch
	b.DelSet(nftables.TableFamilyINet, "t", "s")
	b.DelRule(nftables.TableFamilyINet, "t", "c", 7)
	b.InsertRule(nftables.TableFamilyINet, "t", "c", 9, []expr.Any{&expr.Counter{}})
	b.AddRule(nftables.TableFamilyINet, "t", "c", []expr.Any{&expr.Counter{}})
	if b.Err() != nil || b.Len() != 4 {
		t.Fatalf("batch: %d messages, %v", b.Len(), b.Err())
	}
	for i, want := range []struct {
		typ    int
		append bool
		attrs  map[uint16]string // string attributes
		nums   map[uint16]uint64 // 64-bit ones
	}{
		{unix.NFT_MSG_DELSET, false, map[uint16]string{unix.NFTA_SET_TABLE: "t", unix.NFTA_SET_NAME: "s"}, map[uint16]uint64{}},
		{unix.NFT_MSG_DELRULE, false, map[uint16]string{unix.NFTA_RULE_TABLE: "t", unix.NFTA_RULE_CHAIN: "c"}, map[uint16]uint64{unix.NFTA_RULE_HANDLE: 7}},
		{unix.NFT_MSG_NEWRULE, false, map[uint16]string{unix.NFTA_RULE_TABLE: "t", unix.NFTA_RULE_CHAIN: "c"}, map[uint16]uint64{unix.NFTA_RULE_POSITION: 9}},
		{unix.NFT_MSG_NEWRULE, true, map[uint16]string{unix.NFTA_RULE_TABLE: "t", unix.NFTA_RULE_CHAIN: "c"}, map[uint16]uint64{}},
	} {
		m := b.msgs[i]
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|want.typ) {
			t.Errorf("message %d of type %#x, want %#x", i, m.Header.Type, want.typ)
		}
		if got := m.Header.Flags&netlink.Append != 0; got != want.append {
			t.Errorf("message %d: NLM_F_APPEND %v, want %v", i, got, want.append)
		}
		ad, err := decoder(m.Data[4:])
		if err != nil {
			t.Fatal(err)
		}
		got, nums := map[uint16]string{}, map[uint16]uint64{}
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_HANDLE, unix.NFTA_RULE_POSITION:
				nums[ad.Type()] = ad.Uint64()
			case unix.NFTA_RULE_EXPRESSIONS:
			default:
				got[ad.Type()] = ad.String()
			}
		}
		if !reflect.DeepEqual(got, want.attrs) || !reflect.DeepEqual(nums, want.nums) {
			t.Errorf("message %d: attributes %v %v, want %v %v", i, got, nums, want.attrs, want.nums)
		}
	}
}
