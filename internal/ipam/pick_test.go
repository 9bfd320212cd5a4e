package ipam

import (
	"net/netip"
	"testing"

	"github.com/podnet/podnet/api"
)

// TestPickProbes checks that the search costs at most allocated+reserved+1 probes,
// however large the subnet, and that a full small subnet is recognized.
func TestPickProbes(t *testing.T) {
	big := api.Subnet{Prefix: netip.MustParsePrefix("fd00::/64"), Gateway: netip.MustParseAddr("fd00::1")}
	// taken returns the n addresses that follow from (a run right after the cursor:
	// the worst case).
	run := func(from string, n int) map[netip.Addr]bool {
		m := make(map[netip.Addr]bool)
		a := netip.MustParseAddr(from)
		for range n {
			m[a] = true
			a = a.Next()
		}
		return m
	}
	tests := []struct {
		name       string
		subnet     api.Subnet
		cursor     string
		taken      map[netip.Addr]bool
		want       string // "" when full
		wantProbes uint64
	}{
		{"empty /64", big, "", nil, "fd00::2", 2},
		{"run after the cursor", big, "fd00::1", run("fd00::2", 1000), "fd00::3ea", 1001},
		{"wrap at the end of a /64", big, "fd00::ffff:ffff:ffff:fffe", run("fd00::ffff:ffff:ffff:ffff", 1), "fd00::2", 4},
		{"wrap into a run", big, "fd00::ffff:ffff:ffff:ff00", run("fd00::ffff:ffff:ffff:ff01", 255), "fd00::2", 258},
		{"cursor outside the subnet", big, "fd01::9", nil, "fd00::2", 2},
		{"full /30", api.Subnet{Prefix: netip.MustParsePrefix("10.0.0.0/30"), Gateway: netip.MustParseAddr("10.0.0.1")},
			"10.0.0.2", run("10.0.0.2", 1), "", 4},
		{"end of the IPv4 space", api.Subnet{Prefix: netip.MustParsePrefix("255.255.255.248/29")},
			"255.255.255.254", nil, "255.255.255.249", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cursor netip.Addr
			if tt.cursor != "" {
				cursor = netip.MustParseAddr(tt.cursor)
			}
			used := 0
			for a := range tt.taken {
				if tt.subnet.Prefix.Contains(a) {
					used++
				}
			}
			got, probes, ok := pick(tt.subnet, cursor, func(a netip.Addr) bool { return tt.taken[a] })
			if tt.want == "" {
				if ok {
					t.Errorf("pick = %s; want none", got)
				}
			} else if !ok || got != netip.MustParseAddr(tt.want) {
				t.Errorf("pick = %s, %v; want %s", got, ok, tt.want)
			}
			if probes != tt.wantProbes {
				t.Errorf("%d probes; want %d", probes, tt.wantProbes)
			}
			if bound := uint64(used + len(reservedAddrs(tt.subnet)) + 1); probes > bound {
				t.Errorf("%d probes, more than allocated+reserved+1 = %d", probes, bound)
			}
		})
	}
}
