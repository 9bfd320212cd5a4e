package trace

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/testutil"
)

// foreignRuleset is another tool's table, in nft syntax: the kind of rules a host
// firewall, Docker or kube-proxy write.
const foreignRuleset = `table inet fw {
	set blocked {
		type ipv4_addr
		flags interval
		elements = { 10.9.0.0/16 }
	}

	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		ct state invalid drop
		iifname "lo" accept
		iifname "veth*" accept
		ip saddr @blocked counter packets 0 bytes 0 drop
		tcp dport { 22, 80, 443 } accept
		udp dport 53 accept
		ip6 nexthdr ipv6-icmp accept
		icmp type echo-request limit rate 10/second accept
		icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
		meta mark 0x00000001 log prefix "marked " drop
		tcp flags & (syn | ack) == syn counter packets 0 bytes 0
		ip saddr 10.0.0.0/8 reject with icmpx admin-prohibited
		ip saddr { 10.8.0.0/16, 10.10.0.1 } drop
		meta l4proto tcp reject with tcp reset
		ip6 saddr 2001:db8::/32 drop
		jump extra
	}

	chain extra {
		ip daddr 192.0.2.1 return
		ip saddr . tcp dport { 192.0.2.7 . 22 } accept
		meta l4proto udp th dport 5353 drop
	}

	chain snat-out {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "eth0" masquerade
		ip saddr 10.1.0.0/16 snat ip to 192.0.2.10
	}

	chain portfwd {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 8080 dnat ip to 10.1.0.5:80
		ip daddr 192.0.2.50 udp dport 53 dnat ip to 10.1.0.6
	}
}
`

// The generic printer against nft itself: every rule of podnet's tables and of a
// foreign table prints as `nft -a list table` lists it. (Only the test execs nft;
// podnet never does.)
func TestPrivilegedPrintRuleLikeNft(t *testing.T) {
	testutil.RequireRoot(t)
	nftPath, err := exec.LookPath("nft")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nft not found")
		}
		t.Skip("nft not found")
	}
	ns, err := kernel.NewNS()
	must(t, err, "namespace")
	defer ns.Close()
	tb, err := nft.Open(int(ns))
	must(t, err, "open podnet's tables")
	defer tb.Close()
	a := netip.MustParseAddr("198.51.100.10")
	must(t, tb.Sync(nft.Ruleset{
		Networks:  []nft.Network{netA, netB},
		Endpoints: []nft.Endpoint{{HostIf: "va1", Bridged: true, Addrs: []netip.Addr{a}}},
		Ports:     []nft.PortMapping{{Protocol: "tcp", HostPort: publishedPort, Addr: a, Port: testPort}},
		Services: []nft.Service{{Name: "default/web", VIP: netip.MustParseAddr("10.96.0.10"), Protocol: "tcp", Port: 80,
			Backends: []netip.AddrPort{netip.AddrPortFrom(a, testPort)}}},
	}), "sync")
	file := filepath.Join(t.TempDir(), "fw.nft")
	must(t, os.WriteFile(file, []byte(foreignRuleset), 0o600), "write ruleset")
	run := func(args ...string) string {
		t.Helper()
		var out []byte
		err := kernel.Do(ns, func() (err error) {
			out, err = exec.Command(nftPath, args...).CombinedOutput()
			return err
		})
		if err != nil {
			t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("-f", file)

	tables := []TableRef{{"inet", "podnet"}, {"bridge", "podnet"}, {"inet", "fw"}}
	cat, err := LoadCatalog(int(ns), tables)
	must(t, err, "load catalog")
	handle := regexp.MustCompile(`^\s*(.*) # handle (\d+)$`)
	n := 0
	for _, tr := range tables {
		listing := run("-a", "list", "table", tr.Family, tr.Name)
		chain := ""
		for _, line := range strings.Split(listing, "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "chain" {
				chain = f[1]
				continue
			}
			m := handle.FindStringSubmatch(line)
			if m == nil || chain == "" || strings.HasPrefix(strings.TrimSpace(line), "type ") {
				continue
			}
			h, _ := strconv.ParseUint(m[2], 10, 64)
			r, ok := cat.rule(tr.Family, tr.Name, h)
			n++
			switch {
			case !ok:
				t.Errorf("%s %s %s: rule %d not in the catalog", tr.Family, tr.Name, chain, h)
			case r.Text != m[1]:
				t.Errorf("%s %s %s rule %d:\n got %s\nwant %s", tr.Family, tr.Name, chain, h, r.Text, m[1])
			}
		}
	}
	if n < 40 {
		t.Errorf("compared %d rules, want more", n)
	}
}
