package nftwire_test

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/nftwire"
	"github.com/podnet/podnet/internal/testutil"
)

// foreignRuleset is other tools' tables, in nft syntax: the kind of rules a host
// firewall, Docker or kube-proxy write, in every family, with the statements and header
// fields that the printer knows.
const foreignRuleset = `table inet fw {
	set blocked {
		type ipv4_addr
		flags interval
		elements = { 10.9.0.0/16 }
	}

	set clients {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 1h
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
		ip6 nexthdr tcp tcp dport 22
		meta nfproto ipv4 ct original saddr 1.2.3.4
		meta nfproto ipv4 ct original ip daddr 192.0.2.7 ct direction reply
		ct state & established == established
		tcp flags syn
		tcp flags & (syn | ack) == syn | ack
		reject with icmpx host-unreachable
		meta nfproto ipv6 reject with icmpv6 admin-prohibited
		ip saddr 10.0.0.1 reject
		udp dport 1 reject with icmpx port-unreachable
		icmp code port-unreachable
		icmpv6 code no-route
		icmp type { echo-reply, echo-request } icmp id 5
		ip daddr 1.2.3.4 ip saddr 1.2.3.5
		meta mark & 0xff == 0x5
		ct mark 0x5
		ip saddr != { 10.0.0.1, 10.0.0.2 }
		th dport 1-100
		tcp dport != 1-100
		ip saddr 1.2.3.4-1.2.3.9
		meta length 100-200
		udp length 8
	}

	chain stmts {
		meta nfproto ipv4 snat ip to 192.0.2.7 fully-random
		meta mark set meta mark | 0x10
		meta mark set meta mark & 0xffff0000
		meta mark set meta mark ^ 0x1
		meta mark set meta mark & 0xffff | 0x10000
		ct mark set meta mark
		meta priority 1:2
		meta priority set 1:2
		update @clients { ip saddr timeout 1m }
		add @clients { ip saddr timeout 90s }
		ct expiration 30s
		ct original protocol tcp
		ct packets > 10
		ct reply bytes > 10
		iifgroup 0
		meta cpu 1
		meta skuid 0
		meta iiftype ether
		meta pkttype broadcast
		ct helper "ftp"
		ct zone 1
		meta l4proto tcp ct original proto-dst 22
		ct id 5
		limit rate over 10/minute burst 20 packets
		limit rate 1 mbytes/second
		quota over 100 mbytes
		log level debug
		log group 2 prefix "x"
		meta l4proto tcp redirect to :8080
		meta l4proto udp masquerade to :1024-2048 random
		ct count over 4
		jhash ip saddr mod 4 seed 0x1 0
		symhash mod 2 0
		numgen inc mod 2 offset 5 3
		tcp option maxseg size 1460
		fib saddr . iif oif 0
		ct state new,untracked
		ct status expected,seen-reply
		meta nftrace set 1
		notrack
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

table ip fw4 {
	counter cnt {
	}

	ct helper ftp-standard {
		type "ftp" protocol tcp
		l3proto ip
	}

	chain c {
		type filter hook prerouting priority filter; policy accept;
		tcp dport 22 accept
		ip protocol udp accept
		icmp type echo-request accept
		udp sport 53 ip daddr 10.0.0.0/24 accept
		ip saddr set 1.2.3.4
		tcp dport set 80
		counter name "cnt"
		tcp dport 21 ct helper set "ftp-standard"
		ct mark set ct mark | 0x1
		ip ttl 64
		ip length > 100
		ip saddr & 255.255.0.0 == 10.1.0.0
		ip id 5
		reject
	}

	chain r {
		accept
	}

	chain p {
		type nat hook postrouting priority srcnat; policy accept;
		snat to 10.0.0.1 persistent
	}

	chain n {
		type nat hook prerouting priority dstnat; policy accept;
		dnat to tcp dport map { 80 : 10.0.0.1, 443 : 10.0.0.2 }
		tcp dport 81 dnat to 10.0.0.1-10.0.0.5:80-90
		tcp dport 82 dnat to 10.0.0.3:8080 random,persistent
		tcp dport vmap { 22 : accept, 23 : drop }
		ip saddr . ip daddr vmap { 10.0.0.1 . 10.0.0.2 : jump r }
		dnat to ip saddr map { 10.0.0.0/8 : 192.168.0.1 }
	}
}

table ip6 fw6 {
	chain c {
		tcp dport 22 accept
		ip6 nexthdr tcp accept
		icmpv6 type echo-request accept
		ip6 saddr ::1 reject with icmpv6 admin-prohibited
		ip6 hoplimit 1 drop
		ip6 saddr fe80::/64 accept
		ct original saddr ::1
	}

	chain n {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 80 dnat to [::1]:8080
		tcp dport 81 dnat to ::2
	}
}

table bridge br {
	chain c {
		ether type ip accept
		ip saddr 1.2.3.4 accept
		ether type vlan
		meta protocol ip6 ip6 saddr ::1
		ip protocol tcp tcp dport 22
		ether saddr 02:00:00:00:00:01
	}
}

table netdev nd {
	chain c {
		ether type ip ip saddr 1.2.3.4 drop
		meta protocol arp drop
	}
}

table arp a {
	chain c {
		arp operation request accept
		arp htype 1
		arp saddr ip 1.2.3.4
	}
}
`

// foreignTables are the tables of foreignRuleset.
var foreignTables = [][2]string{{"inet", "fw"}, {"ip", "fw4"}, {"ip6", "fw6"}, {"bridge", "br"}, {"netdev", "nd"}, {"arp", "a"}}

var families = map[string]nftables.TableFamily{
	"inet": nftables.TableFamilyINet, "ip": nftables.TableFamilyIPv4, "ip6": nftables.TableFamilyIPv6,
	"bridge": nftables.TableFamilyBridge, "netdev": nftables.TableFamilyNetdev, "arp": nftables.TableFamilyARP,
}

// podnetRuleset fills podnet's tables: every rule of podnet's is in them, whatever the
// ruleset; the elements make the sets' listing real.
func podnetRuleset() nft.Ruleset {
	a, a6 := netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("fd00:a::10")
	b := netip.MustParseAddr("10.20.0.5")
	return nft.Ruleset{
		Networks: []nft.Network{
			{Name: "net-a", Bridge: "pn-a", Subnets: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/26"), netip.MustParsePrefix("fd00:a::/64")}, Masquerade: true},
			{Name: "net-b", Bridge: "pn-b", Subnets: []netip.Prefix{netip.MustParsePrefix("198.51.100.64/26")}},
			{Name: "routed", Subnets: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}, Masquerade: true},
		},
		Endpoints: []nft.Endpoint{
			{HostIf: "va1", Bridge: "pn-a", Addrs: []netip.Addr{a, a6}, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}},
			{HostIf: "vr1", Addrs: []netip.Addr{b}},
		},
		Ports: []nft.PortMapping{
			{Protocol: "tcp", HostPort: 18080, Addr: a, Port: 8080},
			{Protocol: "udp", HostIP: netip.MustParseAddr("192.0.2.1"), HostPort: 53, Addr: b, Port: 53},
			{Protocol: "tcp", HostPort: 18080, Addr: a6, Port: 8080},
		},
		Services: []nft.Service{
			{Name: "default/web", VIP: netip.MustParseAddr("10.96.0.10"), Protocol: "tcp", Port: 80,
				Backends: []netip.AddrPort{netip.AddrPortFrom(a, 8080), netip.AddrPortFrom(b, 8080)}},
			{Name: "default/sticky", VIP: netip.MustParseAddr("10.96.0.11"), Protocol: "udp", Port: 53, Affinity: true,
				Backends: []netip.AddrPort{netip.AddrPortFrom(b, 53)}},
			{Name: "default/web6", VIP: netip.MustParseAddr("fd00:96::10"), Protocol: "tcp", Port: 80, Affinity: true,
				Backends: []netip.AddrPort{netip.AddrPortFrom(a6, 8080)}},
		},
	}
}

// nftIn runs the distribution's nft in ns. (Only tests exec nft; podnet never does.)
func nftIn(t *testing.T, ns netns.NsHandle) func(args ...string) string {
	t.Helper()
	path, err := exec.LookPath("nft")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nft not found: make test installs Debian's nftables package")
		}
		t.Skip("nft not found (apt-get install nftables)")
	}
	return func(args ...string) string {
		t.Helper()
		var out []byte
		err := kernel.Do(ns, func() (err error) {
			out, err = exec.Command(path, args...).CombinedOutput()
			return err
		})
		if err != nil {
			t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
}

func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	testutil.RequireRoot(t)
	ns, err := kernel.NewNS()
	if err != nil {
		t.Fatalf("namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// The printer against nft itself: every rule of podnet's tables and of foreign tables of
// every family prints as `nft -a list table` lists it, chain by chain, in order.
func TestPrivilegedPrintRuleLikeNft(t *testing.T) {
	ns := newNS(t)
	run := nftIn(t, ns)
	tb, err := nft.Open(int(ns))
	if err != nil {
		t.Fatalf("open podnet's tables: %v", err)
	}
	defer tb.Close()
	if err := tb.Sync(podnetRuleset()); err != nil {
		t.Fatalf("sync: %v", err)
	}
	file := filepath.Join(t.TempDir(), "foreign.nft")
	if err := os.WriteFile(file, []byte(foreignRuleset), 0o600); err != nil {
		t.Fatal(err)
	}
	run("-f", file)

	c, err := nftwire.Dial(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	handle := regexp.MustCompile(`^\s*(.*) # handle (\d+)$`)
	n := 0
	for _, tr := range append([][2]string{{"inet", nft.TableName}, {"bridge", nft.TableName}}, foreignTables...) {
		f := families[tr[0]]
		sets, err := nftwire.DumpSets(c, f, tr[1])
		if err != nil {
			t.Fatalf("%s %s: sets: %v", tr[0], tr[1], err)
		}
		rules, err := nftwire.DumpRules(c, f, tr[1], "")
		if err != nil {
			t.Fatalf("%s %s: rules: %v", tr[0], tr[1], err)
		}
		table := nftwire.Table{Family: f, Sets: sets}
		got := map[string][]string{} // chain -> "handle: text"
		for _, r := range rules {
			got[r.Chain] = append(got[r.Chain], strconv.FormatUint(r.Handle, 10)+": "+table.PrintRule(r))
		}
		want := map[string][]string{}
		chain := ""
		for _, line := range strings.Split(run("-a", "list", "table", tr[0], tr[1]), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "chain" {
				chain = f[1]
				continue
			}
			m := handle.FindStringSubmatch(line)
			if m == nil || chain == "" || strings.HasPrefix(strings.TrimSpace(line), "type ") {
				continue
			}
			want[chain] = append(want[chain], m[2]+": "+m[1])
			n++
		}
		for _, ch := range slices.Sorted(func(yield func(string) bool) {
			for k := range want {
				if !yield(k) {
					return
				}
			}
		}) {
			w, g := want[ch], got[ch]
			for i := range max(len(w), len(g)) {
				var wl, gl string
				if i < len(w) {
					wl = w[i]
				}
				if i < len(g) {
					gl = g[i]
				}
				if wl != gl {
					t.Errorf("%s %s chain %s, rule %d:\n got %s\nwant %s", tr[0], tr[1], ch, i, gl, wl)
				}
			}
			delete(got, ch)
		}
		for ch := range got {
			t.Errorf("%s %s: chain %s has rules nft does not list", tr[0], tr[1], ch)
		}
	}
	if n < 150 {
		t.Errorf("compared %d rules, want more", n)
	}
}

// A batch writes a table, chains, sets, elements and rules as they read back, ct
// directions included, and an owned table goes with its socket.
func TestPrivilegedBatchRoundTrip(t *testing.T) {
	ns := newNS(t)
	inet := nftables.TableFamilyINet
	set := nftwire.Set{Name: "ports", Flags: unix.NFT_SET_MAP, KeyType: nftables.TypeInetService.GetNFTMagic(),
		KeyLen: 2, DataType: unix.NFT_DATA_VERDICT}
	elems := []nftwire.Elem{
		{Key: []byte{0, 22}, Verdict: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "ssh"}, Comment: "ssh"},
		{Key: []byte{0, 80}, Verdict: &expr.Verdict{Kind: expr.VerdictAccept}},
	}
	rule := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: unix.NFT_REG_1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Ct{Key: unix.NFT_CT_DST_IP, Register: unix.NFT_REG_1, Direction: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{192, 0, 2, 7}},
		&expr.Ct{Key: expr.CtKeyPROTODST, Register: unix.NFT_REG_1},
		&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: "ports", SetID: 1, DestRegister: unix.NFT_REG_VERDICT, IsDestRegSet: true},
	}
	var b nftwire.Batch
	b.AddTable(inet, "t")
	b.AddChain(inet, "t", nftwire.Chain{Name: "in", Type: "filter", Hook: unix.NF_INET_LOCAL_IN, Priority: -5, Policy: "drop"})
	b.AddChain(inet, "t", nftwire.Chain{Name: "ssh"})
	b.AddSet(inet, "t", set, 1)
	b.AddElems(inet, "t", "ports", 1, elems)
	b.AddRule(inet, "t", "in", rule)
	if err := b.SendNS(int(ns), 0); err != nil {
		t.Fatalf("send: %v", err)
	}

	c, err := nftwire.Dial(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	chains, err := nftwire.DumpChains(c, inet, "t")
	if err != nil {
		t.Fatal(err)
	}
	wantChains := []nftwire.Chain{{Name: "in", Type: "filter", Hook: unix.NF_INET_LOCAL_IN, Priority: -5, Policy: "drop"}, {Name: "ssh"}}
	if !reflect.DeepEqual(chains, wantChains) {
		t.Errorf("chains %+v, want %+v", chains, wantChains)
	}
	got, err := nftwire.DumpElems(c, inet, "t", "ports")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b nftwire.Elem) int { return int(a.Key[1]) - int(b.Key[1]) })
	if !reflect.DeepEqual(got, elems) {
		t.Errorf("elements %+v, want %+v", got, elems)
	}
	rules, err := nftwire.DumpRules(c, inet, "t", "in")
	if err != nil || len(rules) != 1 {
		t.Fatalf("rules %v, %v", rules, err)
	}
	exprs, err := rules[0].Expressions()
	if err != nil {
		t.Fatal(err)
	}
	rule[len(rule)-1].(*expr.Lookup).SetID = 0 // the kernel does not list the batch's IDs
	if !reflect.DeepEqual(exprs, rule) {
		t.Errorf("rule read back as\n\t%+v\nwant\n\t%+v", exprs, rule)
	}
	sets, err := nftwire.DumpSets(c, inet, "t")
	if err != nil {
		t.Fatal(err)
	}
	if text, want := (nftwire.Table{Family: inet, Sets: sets}).PrintRule(rules[0]),
		"meta nfproto ipv4 ct reply ip daddr 192.0.2.7 ct original proto-dst vmap @ports"; text != want {
		t.Errorf("printed %q, want %q", text, want)
	}

	// A table of c's own: gone with c; another socket finds it and cannot take it.
	owner, err := nftwire.Dial(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	var own nftwire.Batch
	own.AddTable(inet, "owned", nftwire.Owner(), nftwire.Exclusive())
	if err := own.Send(owner); err != nil {
		t.Fatalf("owned table: %v", err)
	}
	if ok, err := nftwire.TableExists(c, inet, "owned"); !ok || err != nil {
		t.Errorf("owned table exists: %v, %v", ok, err)
	}
	var again nftwire.Batch
	again.AddTable(inet, "owned", nftwire.Owner(), nftwire.Exclusive())
	if err := again.Send(c); err == nil {
		t.Error("a second exclusive owned table was created")
	}
	owner.Close()
	if ok, err := nftwire.TableExists(c, inet, "owned"); ok || err != nil {
		t.Errorf("owned table after its socket closed: %v, %v", ok, err)
	}
}
