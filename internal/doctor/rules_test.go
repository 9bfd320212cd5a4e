package doctor

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/fastpath"
)

// Unit tests of the rules on hand-written snapshots: the cases the privileged tests
// cannot build on this kernel (no ipip module) or that need many combinations.

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// base is a small healthy node: uplink eth0 with a default route, bridge cni0 with two
// pods (peers visible), forwarding on.
func base() *Snapshot {
	return &Snapshot{
		Namespace: "node",
		Links: []Link{
			{Index: 1, Name: "lo", Kind: "device", MTU: 65536, Up: true, NetnsID: -1, Addrs: []netip.Prefix{pfx("127.0.0.1/8")}},
			{Index: 2, Name: "eth0", Kind: "device", MAC: "02:00:00:00:00:01", MTU: 1500, Up: true, NetnsID: -1, Addrs: []netip.Prefix{pfx("192.0.2.10/24")}},
			{Index: 3, Name: "cni0", Kind: "bridge", MAC: "02:00:00:00:00:02", MTU: 1500, Up: true, NetnsID: -1, Addrs: []netip.Prefix{pfx("10.88.0.1/24")}},
			{Index: 4, Name: "veth1", Kind: "veth", MTU: 1500, Up: true, Master: "cni0", PeerIndex: 2, NetnsID: 0,
				Peer: &Peer{Netns: "/run/netns/p1", Name: "eth0", MAC: "0a:58:0a:58:00:02", MTU: 1500, Addrs: []netip.Prefix{pfx("10.88.0.2/24")}, Gateways: []netip.Addr{addr("10.88.0.1")}}},
			{Index: 5, Name: "veth2", Kind: "veth", MTU: 1500, Up: true, Master: "cni0", PeerIndex: 2, NetnsID: 1,
				Peer: &Peer{Netns: "/run/netns/p2", Name: "eth0", MAC: "0a:58:0a:58:00:03", MTU: 1500, Addrs: []netip.Prefix{pfx("10.88.0.3/24")}, Gateways: []netip.Addr{addr("10.88.0.1")}}},
		},
		Routes: []Route{
			{Table: 254, Type: "unicast", Dst: pfx("0.0.0.0/0"), Gw: addr("192.0.2.1"), Dev: "eth0"},
			{Table: 254, Type: "unicast", Dst: pfx("192.0.2.0/24"), Dev: "eth0", Scope: "link"},
			{Table: 254, Type: "unicast", Dst: pfx("10.88.0.0/24"), Dev: "cni0", Scope: "link"},
			{Table: 255, Type: "local", Dst: pfx("10.88.0.1/32"), Dev: "cni0"},
			{Table: 255, Type: "local", Dst: pfx("192.0.2.10/32"), Dev: "eth0"},
		},
		Neighbours: []Neighbour{
			{Dev: "cni0", IP: addr("10.88.0.2"), MAC: "0a:58:0a:58:00:02", State: "REACHABLE"},
		},
		Sysctls: map[string]string{
			"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "0",
			"net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/all/proxy_arp": "0",
			"net/ipv4/conf/eth0/rp_filter": "0", "net/ipv4/conf/cni0/rp_filter": "0",
			"net/ipv4/conf/eth0/forwarding": "1", "net/ipv4/conf/cni0/forwarding": "1",
		},
		Conntrack:     &Conntrack{Count: 10, Max: 1000},
		RPFilterDrops: -1,
	}
}

// withIntended adds the records of an agent that made s: network cni on bridge cni0,
// and an attached endpoint for each pod (veth1, veth2, and vethr when routed added it).
func withIntended(s *Snapshot) *Snapshot {
	in := &Intended{Agent: "test", Networks: []api.Network{{Name: "cni", Driver: api.DriverBridge, Bridge: "cni0", Subnets: []api.Subnet{{Prefix: pfx("10.88.0.0/24"), Gateway: addr("10.88.0.1")}}}}}
	for _, l := range s.Links {
		if l.Peer != nil {
			in.Endpoints = append(in.Endpoints, api.Endpoint{EndpointKey: api.EndpointKey{Network: "cni", ContainerID: l.Name, IfName: l.Peer.Name},
				HostIf: l.Name, MAC: l.Peer.MAC, IPs: l.Peer.Addrs, Netns: l.Peer.Netns, State: api.StateAttached})
		}
	}
	s.Intended = in
	return s
}

// routed adds a Calico-style routed pod behind vethr (no address, proxy ARP on).
func routed(s *Snapshot) *Snapshot {
	s.Links = append(s.Links, Link{Index: 6, Name: "vethr", Kind: "veth", MAC: "ee:ee:ee:ee:ee:ee", MTU: 1500, Up: true, PeerIndex: 2, NetnsID: 2,
		Peer: &Peer{Netns: "/run/netns/r", Name: "eth0", MAC: "0a:58:0a:4d:00:05", MTU: 1500, Addrs: []netip.Prefix{pfx("10.77.0.5/32")}, Gateways: []netip.Addr{addr("169.254.1.1")}}})
	s.Routes = append(s.Routes, Route{Table: 254, Type: "unicast", Dst: pfx("10.77.0.5/32"), Dev: "vethr", Scope: "link"})
	s.Sysctls["net/ipv4/conf/vethr/proxy_arp"] = "1"
	s.Sysctls["net/ipv4/conf/vethr/rp_filter"] = "1"
	return s
}

func classes(rep Report) string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, string(f.Severity)+" "+f.Class+": "+f.Culprit)
	}
	return strings.Join(out, "\n")
}

func TestRules(t *testing.T) {
	for _, c := range []struct {
		name  string
		snap  func() *Snapshot
		want  string // severity class: culprit, one per line, worst first
		code  int
		check func(t *testing.T, rep Report)
	}{
		{name: "healthy", snap: base},
		{name: "healthy, with the agent's records", snap: func() *Snapshot { return withIntended(routed(base())) }},
		{name: "agent's bridge missing", snap: func() *Snapshot {
			s := withIntended(base())
			s.Intended.Networks = append(s.Intended.Networks, api.Network{Name: "blue", Driver: api.DriverBridge, Bridge: "pn-blue", Subnets: []api.Subnet{{Prefix: pfx("10.89.0.0/24")}}})
			return s
		}, code: 2, want: "error podnet-state-drift: bridge pn-blue (missing)"},
		{name: "attached endpoint's veth missing, one in flight ignored", snap: func() *Snapshot {
			s := withIntended(base())
			s.Intended.Endpoints = append(s.Intended.Endpoints,
				api.Endpoint{EndpointKey: api.EndpointKey{Network: "cni", ContainerID: "gone", IfName: "eth0"}, HostIf: "pnv0000000gone", State: api.StateAttached, IPs: []netip.Prefix{pfx("10.88.0.9/24")}},
				api.Endpoint{EndpointKey: api.EndpointKey{Network: "cni", ContainerID: "new", IfName: "eth0"}, HostIf: "pnv00000000new", State: api.StateAttaching})
			return s
		}, code: 2, want: "error podnet-state-drift: veth pnv0000000gone (missing)"},
		{name: "routed endpoint without its host route", snap: func() *Snapshot {
			s := withIntended(routed(base()))
			s.Routes = slices.DeleteFunc(s.Routes, func(r Route) bool { return r.Dev == "vethr" })
			return s
		}, code: 2, want: "error podnet-state-drift: route 10.77.0.5 dev vethr (missing)"},
		{name: "podnet veth no record owns", snap: func() *Snapshot {
			s := withIntended(base())
			s.Links = append(s.Links, Link{Index: 9, Name: "pnv0123456789a", Kind: "veth", MTU: 1500, Up: true, Master: "cni0", PeerIndex: 2, NetnsID: 5})
			return s
		}, code: 1, want: "warning podnet-state-drift: veth pnv0123456789a"},
		{name: "the agent's MAC of a pod whose sandbox is not visible", snap: func() *Snapshot {
			s := withIntended(base())
			s.Links[3].Peer = nil
			s.Neighbours[0].MAC = "0a:58:0a:58:00:99"
			return s
		}, code: 1, want: "warning neighbour-wrong-mac: neigh 10.88.0.2 lladdr 0a:58:0a:58:00:99 dev cni0 REACHABLE"},
		{name: "fast path on every pod", snap: func() *Snapshot {
			s := withIntended(base())
			s.Links[3].TCX = []TCXProgram{{ID: 7, Name: fastpath.ProgName, LinkID: 3}}
			s.Links[4].TCX = []TCXProgram{{ID: 7, Name: fastpath.ProgName, LinkID: 4}}
			return s
		}},
		{name: "fast path missing on one pod", snap: func() *Snapshot {
			s := withIntended(base())
			s.Links[3].TCX = []TCXProgram{{ID: 7, Name: fastpath.ProgName, LinkID: 3}}
			return s
		}, want: "info fast-path-detached: veth veth2 (no tcx ingress program podnet_fast)"},
		{name: "another tool's program on a pod's veth", snap: func() *Snapshot {
			s := base()
			s.Links[4].TCX = []TCXProgram{{ID: 12, Name: "cil_from_contai", LinkID: 40}}
			return s
		}, code: 1, want: "warning foreign-bpf-program: tcx ingress program cil_from_contai (id 12) on veth veth2", check: func(t *testing.T, rep Report) {
			if f := rep.Findings[0]; !strings.Contains(f.Fix, "bpftool link detach id 40") {
				t.Errorf("fix %q, want the link's detach", f.Fix)
			}
		}},
		{name: "healthy routed", snap: func() *Snapshot { return routed(base()) }},
		{name: "no pods, forwarding off: not a problem", snap: func() *Snapshot {
			s := base()
			s.Links = s.Links[:3]
			s.Sysctls["net/ipv4/ip_forward"] = "0"
			return s
		}},
		{name: "forwarding off", code: 2, snap: func() *Snapshot {
			s := base()
			s.Sysctls["net/ipv4/ip_forward"] = "0"
			return s
		}, want: "error ip-forward-disabled: sysctl net.ipv4.ip_forward=0"},
		{name: "forwarding off on the uplink", code: 2, snap: func() *Snapshot {
			s := base()
			s.Sysctls["net/ipv4/conf/eth0/forwarding"] = "0"
			return s
		}, want: "error ip-forward-disabled: sysctl net.ipv4.conf.eth0.forwarding=0"},
		{name: "blackhole in the pod range", code: 2, snap: func() *Snapshot {
			s := base()
			s.Routes = append(s.Routes, Route{Table: 254, Type: "blackhole", Dst: pfx("10.88.0.0/26")})
			return s
		}, want: "error route-overlap: route blackhole 10.88.0.0/26"},
		{name: "address of another link in the pod range", code: 2, snap: func() *Snapshot {
			s := base()
			s.Links[1].Addrs = append(s.Links[1].Addrs, pfx("10.88.0.3/32"))
			s.Routes = append(s.Routes, Route{Table: 255, Type: "local", Dst: pfx("10.88.0.3/32"), Dev: "eth0"})
			return s
		}, want: "error route-overlap: address 10.88.0.3/32 dev eth0"},
		{name: "same prefix lower metric", code: 2, snap: func() *Snapshot {
			s := base()
			s.Routes[2].Metric = 100
			s.Routes = append(s.Routes, Route{Table: 254, Type: "unicast", Dst: pfx("10.88.0.0/24"), Gw: addr("192.0.2.1"), Dev: "eth0", Metric: 50})
			return s
		}, want: "error route-overlap: route 10.88.0.0/24 via 192.0.2.1 dev eth0 metric 50"},
		{name: "more specific route in a table a rule skips (fwmark)", snap: func() *Snapshot {
			s := base()
			s.Routes = append(s.Routes, Route{Table: 100, Type: "unicast", Dst: pfx("10.88.0.0/25"), Gw: addr("192.0.2.1"), Dev: "eth0"})
			s.Rules = append(defaultRules4(), Rule{Family: 4, Priority: 100, Action: "lookup", Table: 100, Mark: 1, SuppressPrefixlen: -1})
			return s
		}},
		{name: "tunl0 with an address: harmless leftover", snap: func() *Snapshot {
			s := base()
			s.Links = append(s.Links, Link{Index: 7, Name: "tunl0", Kind: "ipip", MTU: 1480, Up: true, NetnsID: -1, Addrs: []netip.Prefix{pfx("10.244.3.1/32")}, Tunnel: &Tunnel{}})
			s.Routes = append(s.Routes, Route{Table: 254, Type: "unicast", Dst: pfx("10.244.4.0/26"), Gw: addr("192.0.2.20"), Dev: "tunl0"})
			return s
		}, want: "info stale-plugin-leftover: ipip tunl0 with address 10.244.3.1/32"},
		{name: "tunl0 of the ipip module (down, no address): nothing", snap: func() *Snapshot {
			s := base()
			s.Links = append(s.Links, Link{Index: 7, Name: "tunl0", Kind: "ipip", MTU: 1480, NetnsID: -1, Tunnel: &Tunnel{}})
			return s
		}},
		{name: "tunl0 stealing pods", code: 2, snap: func() *Snapshot {
			s := base()
			s.Links = append(s.Links, Link{Index: 7, Name: "tunl0", Kind: "ipip", MTU: 1480, Up: true, NetnsID: -1, Addrs: []netip.Prefix{pfx("10.244.3.1/32")}, Tunnel: &Tunnel{}})
			s.Routes = append(s.Routes, Route{Table: 254, Type: "unicast", Dst: pfx("10.88.0.0/26"), Gw: addr("192.0.2.20"), Dev: "tunl0"})
			return s
		}, want: "error stale-plugin-leftover: ipip tunl0 with address 10.244.3.1/32"},
		{name: "calico chains while calico runs the pods: not leftovers", snap: func() *Snapshot {
			s := routed(base())
			s.Links[5].Name = "cali1234"
			s.Routes[len(s.Routes)-1].Dev = "cali1234"
			s.Sysctls["net/ipv4/conf/cali1234/proxy_arp"] = "1"
			s.Tables = []NftTable{{Family: "ip", Name: "filter", Chains: []NftChain{{Name: "FORWARD", Hook: "forward", Jumps: []NftJump{{Target: "cali-FORWARD", Handle: 3}}}, {Name: "cali-FORWARD", Drops: 2}}}}
			return s
		}},
		{name: "calico chains hooked, no drop", code: 1, snap: func() *Snapshot {
			s := base()
			s.Tables = []NftTable{{Family: "ip", Name: "filter", Chains: []NftChain{{Name: "FORWARD", Hook: "forward", Jumps: []NftJump{{Target: "cali-FORWARD", Handle: 3}}}, {Name: "cali-FORWARD", Jumps: []NftJump{{Target: "cali-from-wl", Handle: 4}}}, {Name: "cali-from-wl"}}}}
			return s
		}, want: "warning stale-plugin-leftover: chain ip filter cali-FORWARD"},
		{name: "legacy iptables: calico chains hooked, dropping", code: 2, snap: func() *Snapshot {
			s := base()
			s.Tables = []NftTable{{Family: "ip", Name: "filter", Legacy: true, Chains: []NftChain{
				{Name: "FORWARD", Hook: "forward", Policy: "accept", Rules: 5, Jumps: []NftJump{{Target: "cali-FORWARD", Rule: 3}, {Target: "cali-from-wl", Rule: 5}}},
				{Name: "cali-FORWARD", Rules: 1, Drops: 1}, {Name: "cali-from-wl"}}}}
			return s
		}, want: "error stale-plugin-leftover: chain ip filter cali-FORWARD (legacy iptables)", check: func(t *testing.T, rep Report) {
			want := "iptables-legacy -t filter -D FORWARD 5\niptables-legacy -t filter -D FORWARD 3\niptables-legacy -t filter -F cali-FORWARD\niptables-legacy -t filter -F cali-from-wl\niptables-legacy -t filter -X cali-FORWARD\niptables-legacy -t filter -X cali-from-wl"
			if got := rep.Findings[0].Fix; got != want {
				t.Errorf("fix %q, want %q (rules by number, the last first)", got, want)
			}
		}},
		{name: "ipsets of calico, which runs no pod here", snap: func() *Snapshot {
			s := base()
			s.IPSets = []IPSet{{Name: "felix-all-ipam-pools", Type: "hash:net", Entries: 2}, {Name: "cali40masq-ipam-pools", Type: "hash:net"}, {Name: "KUBE-CLUSTER-IP", Type: "hash:ip,port"}}
			return s
		}, want: "info stale-plugin-leftover: ipset felix-all-ipam-pools"},
		{name: "ipsets of calico while calico runs the pods", snap: func() *Snapshot {
			s := routed(base())
			s.Links[5].Name = "cali1234"
			s.Routes[len(s.Routes)-1].Dev = "cali1234"
			s.Sysctls["net/ipv4/conf/cali1234/proxy_arp"] = "1"
			s.IPSets = []IPSet{{Name: "felix-all-ipam-pools", Type: "hash:net", Entries: 2}}
			return s
		}},
		{name: "a table of calico's own", snap: func() *Snapshot {
			s := base()
			s.Tables = []NftTable{{Family: "ip", Name: "calico", Chains: []NftChain{{Name: "cali-x"}}, Sets: []string{"felix-all-ipam-pools"}}}
			return s
		}, want: "info stale-plugin-leftover: chain ip calico cali-x", check: func(t *testing.T, rep Report) {
			if rep.Findings[0].Fix != "nft delete table ip calico" {
				t.Errorf("fix %q", rep.Findings[0].Fix)
			}
		}},
		{name: "proxy arp off, sandbox not visible, no address on the veth", code: 2, snap: func() *Snapshot {
			s := routed(base())
			s.Links[5].Peer = nil
			s.Sysctls["net/ipv4/conf/vethr/proxy_arp"] = "0"
			return s
		}, want: "error proxy-arp-disabled: sysctl net.ipv4.conf.vethr.proxy_arp=0"},
		{name: "proxy arp off, the gateway is the veth's own address (ptp)", snap: func() *Snapshot {
			s := routed(base())
			s.Links[5].Addrs = []netip.Prefix{pfx("10.77.0.1/32")}
			s.Links[5].Peer.Gateways = []netip.Addr{addr("10.77.0.1")}
			s.Sysctls["net/ipv4/conf/vethr/proxy_arp"] = "0"
			return s
		}},
		{name: "proxy arp on for all", snap: func() *Snapshot {
			s := routed(base())
			s.Sysctls["net/ipv4/conf/vethr/proxy_arp"] = "0"
			s.Sysctls["net/ipv4/conf/all/proxy_arp"] = "1"
			return s
		}},
		{name: "neighbour with an unknown MAC, pod not visible: cannot tell", snap: func() *Snapshot {
			s := base()
			s.Links[3].Peer = nil
			s.Neighbours[0].MAC = "02:99:99:99:99:99"
			return s
		}},
		{name: "stale neighbour with the bridge's MAC", code: 1, snap: func() *Snapshot {
			s := base()
			s.Links[3].Peer = nil
			s.Neighbours[0].MAC = "02:00:00:00:00:02"
			return s
		}, want: "warning neighbour-wrong-mac: neigh 10.88.0.2 lladdr 02:00:00:00:00:02 dev cni0 REACHABLE"},
		{name: "conntrack 79%", snap: func() *Snapshot { s := base(); s.Conntrack.Count = 790; return s }},
		{name: "conntrack 85%", code: 1, snap: func() *Snapshot { s := base(); s.Conntrack.Count = 850; return s },
			want: "warning conntrack-table-full: sysctl net.netfilter.nf_conntrack_max=1000"},
		{name: "conntrack full, in a namespace", code: 2, snap: func() *Snapshot {
			s := base()
			s.Conntrack.Count, s.ExecPrefix = 1000, "ip netns exec node "
			return s
		}, want: "error conntrack-table-full: sysctl net.netfilter.nf_conntrack_max=1000", check: func(t *testing.T, rep Report) {
			if !strings.HasPrefix(rep.Findings[0].Fix, "# nf_conntrack_max is global") {
				t.Errorf("fix %q", rep.Findings[0].Fix)
			}
		}},
		{name: "neighbour table at 79% of gc_thresh3", snap: func() *Snapshot {
			s := base()
			s.NeighTables = []NeighTable{{Name: "arp_cache", Entries: 809, GCThresh2: 512, GCThresh3: 1024, TableFulls: 3}}
			return s
		}},
		{name: "neighbour table at 85% of gc_thresh3", code: 1, snap: func() *Snapshot {
			s := base()
			s.NeighTables = []NeighTable{{Name: "arp_cache", Entries: 870, GCThresh2: 512, GCThresh3: 1024}}
			return s
		}, want: "warning neighbour-table-full: sysctl net.ipv4.neigh.default.gc_thresh3=1024"},
		{name: "IPv6 neighbour table full", code: 2, snap: func() *Snapshot {
			s := base()
			s.NeighTables = []NeighTable{{Name: "arp_cache", Entries: 10, GCThresh3: 1024}, {Name: "ndisc_cache", Entries: 1030, GCThresh2: 512, GCThresh3: 1024, TableFulls: 48}}
			return s
		}, want: "error neighbour-table-full: sysctl net.ipv6.neigh.default.gc_thresh3=1024", check: func(t *testing.T, rep Report) {
			f := rep.Findings[0]
			if f.Fix != "# global: set on the host\nsysctl -w net.ipv6.neigh.default.gc_thresh2=2048 net.ipv6.neigh.default.gc_thresh3=4096" ||
				!slices.Contains(f.Evidence, "48 entries refused since boot (table_fulls)") {
				t.Errorf("fix %q, evidence %q", f.Fix, f.Evidence)
			}
		}},
		{name: "rp_filter strict through all, second default route", code: 1, snap: func() *Snapshot {
			s := base()
			s.Links = append(s.Links, Link{Index: 8, Name: "eth1", Kind: "device", MTU: 1500, Up: true, NetnsID: -1, Addrs: []netip.Prefix{pfx("198.51.100.10/24")}})
			s.Routes = append(s.Routes,
				Route{Table: 254, Type: "unicast", Dst: pfx("0.0.0.0/0"), Gw: addr("198.51.100.1"), Dev: "eth1", Metric: 200},
				Route{Table: 254, Type: "unicast", Dst: pfx("198.51.100.0/24"), Dev: "eth1"})
			s.Sysctls["net/ipv4/conf/all/rp_filter"] = "1"
			s.Sysctls["net/ipv4/conf/eth1/rp_filter"] = "0"
			return s
		}, want: "warning rp-filter-strict: sysctl net.ipv4.conf.all.rp_filter=1", check: func(t *testing.T, rep Report) {
			if rep.Findings[0].Fix != "sysctl -w net.ipv4.conf.eth1.rp_filter=2" {
				t.Errorf("fix %q", rep.Findings[0].Fix)
			}
		}},
		{name: "rp_filter strict, second uplink with policy routing: symmetric", snap: func() *Snapshot {
			s := base()
			s.Links = append(s.Links, Link{Index: 8, Name: "eth1", Kind: "device", MTU: 1500, Up: true, NetnsID: -1, Addrs: []netip.Prefix{pfx("198.51.100.10/24")}})
			s.Routes = append(s.Routes,
				Route{Table: 254, Type: "unicast", Dst: pfx("198.51.100.0/24"), Dev: "eth1"},
				Route{Table: 10, Type: "unicast", Dst: pfx("0.0.0.0/0"), Gw: addr("198.51.100.1"), Dev: "eth1"})
			s.Rules = append(defaultRules4(), Rule{Family: 4, Priority: 100, Action: "lookup", Table: 10, Src: pfx("198.51.100.10/32"), SuppressPrefixlen: -1})
			s.Sysctls["net/ipv4/conf/all/rp_filter"] = "1"
			s.Sysctls["net/ipv4/conf/eth1/rp_filter"] = "1"
			return s
		}},
		{name: "vxlan over a 1500 uplink at 1500, pods at 1500", code: 2, snap: func() *Snapshot {
			s := base()
			s.Links = append(s.Links, Link{Index: 9, Name: "vx0", Kind: "vxlan", MTU: 1500, Up: true, NetnsID: -1, Tunnel: &Tunnel{ID: 7}})
			s.Routes = append(s.Routes, Route{Table: 254, Type: "unicast", Dst: pfx("10.89.0.0/24"), Gw: addr("10.89.0.0"), Dev: "vx0"})
			s.FDB = []FDBEntry{{Dev: "vx0", MAC: "02:00:00:00:09:01", Dst: addr("192.0.2.11")}}
			return s
		}, want: "error mtu-mismatch: link vx0 mtu 1500\nwarning mtu-mismatch: link veth1 mtu 1500"},
		{name: "dns wildcard, ndots 1", code: 1, snap: func() *Snapshot {
			s := base()
			s.ResolvConfs = []ResolvConf{{Path: "/etc/resolv.conf", Nameservers: []string{"192.0.2.53"}, Search: []string{"corp.example"}, Ndots: 1,
				Probes: []DNSProbe{{Domain: "corp.example", Name: "pndoctor-x.corp.example.", Type: "A", Server: "192.0.2.53", Rcode: "NOERROR", Answers: []string{"192.0.2.99"}}}}}
			return s
		}, want: "warning dns-search-wildcard: search domain corp.example in /etc/resolv.conf"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := Diagnose(c.snap())
			var got []string
			for _, f := range rep.Findings {
				if f.Severity != SeverityInfo || strings.HasPrefix(c.want, "info") || strings.Contains(c.want, "\ninfo") {
					got = append(got, string(f.Severity)+" "+f.Class+": "+f.Culprit)
				}
			}
			if g := strings.Join(got, "\n"); g != c.want {
				t.Errorf("findings:\n%s\nwant:\n%s", g, c.want)
			}
			if rep.ExitCode() != c.code {
				t.Errorf("exit code %d, want %d", rep.ExitCode(), c.code)
			}
			for _, f := range rep.Findings {
				if f.RootCause == "" || f.Fix == "" || f.Culprit == "" {
					t.Errorf("incomplete finding %+v", f)
				}
			}
			if c.check != nil {
				c.check(t, rep)
			}
		})
	}
}

func defaultRules4() []Rule {
	var rs []Rule
	for _, r := range defaultRules {
		r.Family = 4
		rs = append(rs, r)
	}
	return rs
}

func TestLookup(t *testing.T) {
	s := &Snapshot{
		Routes: []Route{
			{Table: 254, Dst: pfx("0.0.0.0/0"), Gw: addr("192.0.2.1"), Dev: "eth0"},
			{Table: 254, Dst: pfx("10.0.0.0/8"), Gw: addr("192.0.2.2"), Dev: "eth0", Metric: 10},
			{Table: 254, Dst: pfx("10.0.0.0/8"), Gw: addr("192.0.2.3"), Dev: "eth1", Metric: 5},
			{Table: 100, Dst: pfx("10.1.0.0/16"), Dev: "wg0"},
			{Table: 100, Type: "throw", Dst: pfx("10.1.2.0/24")},
			{Table: 200, Dst: pfx("0.0.0.0/0"), Dev: "wg1"},
			{Table: 255, Type: "local", Dst: pfx("192.0.2.10/32"), Dev: "eth0"},
		},
		Rules: []Rule{
			{Family: 4, Priority: 0, Action: "lookup", Table: 255, SuppressPrefixlen: -1},
			{Family: 4, Priority: 10, Action: "lookup", Table: 200, Iif: "eth9", SuppressPrefixlen: -1},
			{Family: 4, Priority: 20, Action: "lookup", Table: 254, SuppressPrefixlen: 0},
			{Family: 4, Priority: 30, Action: "lookup", Table: 100, SuppressPrefixlen: -1},
			{Family: 4, Priority: 40, Action: "unreachable", Dst: pfx("10.9.0.0/16"), SuppressPrefixlen: -1},
			{Family: 4, Priority: 50, Action: "lookup", Table: 200, Src: pfx("192.0.2.10/32"), SuppressPrefixlen: -1},
			{Family: 4, Priority: 32766, Action: "lookup", Table: 254, SuppressPrefixlen: -1},
		},
	}
	f := newFIB(s)
	for _, c := range []struct {
		dst, src string
		want     string
	}{
		{"10.2.0.1", "", "10.0.0.0/8 via 192.0.2.3 dev eth1 metric 5"}, // lower metric
		{"10.1.0.1", "", "10.0.0.0/8 via 192.0.2.3 dev eth1 metric 5"}, // main (suppress 0 keeps /8) before 100
		{"192.0.2.10", "", "local 192.0.2.10 dev eth0 table local"},
		{"8.8.8.8", "", "default via 192.0.2.1 dev eth0"},              // suppressed at 20, main again at 32766
		{"8.8.8.8", "192.0.2.10", "default dev wg1 table 200"},         // from rule
		{"172.16.0.1", "192.0.2.10", "default dev wg1 table 200"},      // iif rule skipped
		{"10.9.0.1", "", "10.0.0.0/8 via 192.0.2.3 dev eth1 metric 5"}, // main wins before the unreachable rule
	} {
		var src netip.Addr
		if c.src != "" {
			src = addr(c.src)
		}
		r, ok := f.lookup(addr(c.dst), src)
		if !ok || r.String() != c.want {
			t.Errorf("lookup %s from %q: %v %q, want %q", c.dst, c.src, ok, r.String(), c.want)
		}
	}
	// A throw route goes on to the next rule; an unreachable rule is a result.
	s.Rules = []Rule{
		{Family: 4, Priority: 1, Action: "lookup", Table: 100, SuppressPrefixlen: -1},
		{Family: 4, Priority: 2, Action: "unreachable", Dst: pfx("10.1.2.0/24"), SuppressPrefixlen: -1},
	}
	f = newFIB(s)
	if r, ok := f.lookup(addr("10.1.2.3"), netip.Addr{}); !ok || r.Type != "unreachable" {
		t.Errorf("throw then unreachable: %v %+v", ok, r)
	}
	if r, ok := f.lookup(addr("10.1.3.3"), netip.Addr{}); !ok || r.Dev != "wg0" {
		t.Errorf("table 100: %v %+v", ok, r)
	}
}

func TestReportOutput(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, Diagnose(base())); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if f, ok := got["findings"].([]any); !ok || len(f) != 0 {
		t.Errorf("healthy JSON: %s", b.String())
	}
	s := base()
	s.Sysctls["net/ipv4/ip_forward"] = "0"
	b.Reset()
	if err := WriteJSON(&b, Diagnose(s)); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Findings []map[string]any `json:"findings"`
	}
	if err := json.Unmarshal(b.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"class", "severity", "culprit", "root_cause", "fix", "evidence"} {
		if _, ok := rep.Findings[0][k]; !ok {
			t.Errorf("finding without %q: %s", k, b.String())
		}
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[string]string{
		"net/ipv4/conf/flannel.1/rp_filter": "net.ipv4.conf.flannel/1.rp_filter",
		"net/ipv4/ip_forward":               "net.ipv4.ip_forward",
	} {
		if got := sysctlName(in); got != want {
			t.Errorf("sysctlName(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"":                 "",
		"/run/netns/node1": "ip netns exec node1 ",
		"/proc/42/ns/net":  "nsenter -t 42 -n ",
		"/proc/42/fd/7":    "nsenter --net=/proc/42/fd/7 ",
	} {
		if got := ExecPrefix(in); got != want {
			t.Errorf("ExecPrefix(%q) = %q, want %q", in, got, want)
		}
	}
	r := Route{Table: 254, Type: "unicast", Dst: pfx("10.77.0.5/32"), Dev: "cali1"}
	if r.String() != "10.77.0.5 dev cali1" {
		t.Errorf("host route printed %q", r.String())
	}
}

func TestParseProc(t *testing.T) {
	stat := parseConntrackStat("entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n" +
		"0000000a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000002 00000003 00000000  00000000 00000000 00000000 00000000\n" +
		"0000000a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000010 00000000 00000000  00000000 00000000 00000000 00000000\n")
	if stat["drop"] != 18 || stat["insert_failed"] != 2 || stat["early_drop"] != 3 {
		t.Errorf("conntrack stat %v", stat)
	}
	// The table's entries on every CPU's line; table_fulls per CPU.
	entries, fulls := parseNeighStat("entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls\n" +
		"00000402 000076ab 00007e1a 00000003   0030f9bb 0000ae52 0000001d   00000000         00000000         00000199         00000059       00000000            00000014\n" +
		"00000402 000084d6 00007d65 00000005   00301cd3 0000b4c2 00000011   00000000         00000000         00000000         0000005e       00000000            0000001c\n")
	if entries != 1026 || fulls != 48 {
		t.Errorf("neighbour stat: entries %d, table_fulls %d; want 1026 and 48", entries, fulls)
	}
	v, ok := parseNetstat("TcpExt: SyncookiesSent IPReversePathFilter\nTcpExt: 0 7\nIpExt: InNoRoutes\nIpExt: 1\n", "TcpExt", "IPReversePathFilter")
	if !ok || v != 7 {
		t.Errorf("netstat %d %v", v, ok)
	}
}
