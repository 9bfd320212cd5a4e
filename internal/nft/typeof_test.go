package nft

import (
	"encoding/hex"
	"testing"
)

// TestTypeofUdata compares the user data of the backends maps with what nft 1.0.6 writes
// for the same typeof declarations ("nft --debug=mnl -f" of
// "map backends4 { typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }").
func TestTypeofUdata(t *testing.T) {
	for _, tc := range []struct {
		set  string
		want string
	}{
		{mapBackends + "4", "000400000000010400000000036000040d00000001580014000407000000010c00040c00000001040c000000010e00040900000001060004100000000214000407000000010c00040b000000010402000000031a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c00040b000000010402000000"},
		{mapBackends + "6", "000400000000010400000000036000040d00000001580014000407000000010c00040d000000010409000000010e00040900000001060004100000000214000407000000010c00040b000000010402000000031a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040d0000000104090000000114000407000000010c00040b000000010402000000"},
	} {
		var set *setDef
		for _, s := range serviceSets(nil) {
			if s.name == tc.set {
				set = &s
			}
		}
		if set == nil {
			t.Fatalf("no set %s", tc.set)
		}
		// nft appends NFTNL_UDATA_SET_DATA_INTERVAL (0) after the typeof data; it only
		// matters for interval maps.
		if got := hex.EncodeToString(set.userdata()); got != tc.want {
			t.Errorf("set %s: user data\n got %s\nwant %s", tc.set, got, tc.want)
		}
	}
}
