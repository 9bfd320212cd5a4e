package doctor

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/lab/labtest"
)

// bigSnapshot is base with n routed pods more (host routes, neighbours, sysctls).
func bigSnapshot(n int) *Snapshot {
	s := base()
	for i := range n {
		name := fmt.Sprintf("pnv%011d", i)
		ip := netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)})
		s.Links = append(s.Links, Link{Index: 100 + i, Name: name, Kind: "veth", MAC: "ee:ee:ee:ee:ee:ee", MTU: 1500, Up: true, PeerIndex: 2, NetnsID: 10 + i,
			Peer: &Peer{Netns: fmt.Sprintf("/run/netns/p%d", i), Name: "eth0", MAC: fmt.Sprintf("0a:58:0a:64:%02x:%02x", byte(i>>8), byte(i)), MTU: 1500,
				Addrs: []netip.Prefix{netip.PrefixFrom(ip, 32)}, Gateways: []netip.Addr{addr("169.254.1.1")}}})
		s.Routes = append(s.Routes, Route{Table: 254, Type: "unicast", Dst: netip.PrefixFrom(ip, 32), Dev: name, Scope: "link"})
		s.Neighbours = append(s.Neighbours, Neighbour{Dev: name, IP: ip, MAC: fmt.Sprintf("0a:58:0a:64:%02x:%02x", byte(i>>8), byte(i)), State: "PERMANENT"})
		for k, v := range map[string]string{"proxy_arp": "1", "rp_filter": "1", "forwarding": "1"} {
			s.Sysctls["net/ipv4/conf/"+name+"/"+k] = v
		}
	}
	return s
}

// BenchmarkDiagnose1000 runs the rules on a node with 1,000 routed endpoints.
func BenchmarkDiagnose1000(b *testing.B) {
	s := bigSnapshot(1000)
	for b.Loop() {
		if rep := Diagnose(s); rep.ExitCode() != 0 {
			b.Fatalf("%+v", rep.Findings[0])
		}
	}
}

// BenchmarkPrivilegedDoctor1000 collects and diagnoses a lab node with 1,000 routed
// sandboxes (building them takes a while; the loop measures only the doctor).
func BenchmarkPrivilegedDoctor1000(b *testing.B) {
	l := labtest.New(b)
	for i := range 1000 {
		sb, err := l.Sandbox()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := l.Routed(sb, fmt.Sprintf("pnv%011d", i), netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)})); err != nil {
			b.Fatal(err)
		}
	}
	h, _ := netlink.NewHandleAt(l.Node)
	defer h.Close()
	for b.Loop() {
		start := time.Now()
		s, err := Collect(b.Context(), l.Node, Options{})
		if err != nil {
			b.Fatal(err)
		}
		Diagnose(s)
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/doctor")
	}
}
