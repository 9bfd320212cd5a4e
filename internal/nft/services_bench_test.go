package nft

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// manyServices returns n services of 3 backends each, on VIPs 10.96.0.0/16 and
// 10.97.0.0/16 (two per VIP: tcp 80 and udp 53).
func manyServices(n int) []Service {
	out := make([]Service, 0, n)
	for i := range n {
		vip := netip.AddrFrom4([4]byte{10, 96 + byte(i>>17), byte(i >> 9), byte(i >> 1)})
		s := Service{Name: fmt.Sprintf("ns/svc-%05d", i), VIP: vip, Protocol: "tcp", Port: 80}
		if i%2 == 1 {
			s.Protocol, s.Port = "udp", 53
		}
		for j := range 3 {
			s.Backends = append(s.Backends, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 6), byte(i<<2 | j)}), 8080))
		}
		out = append(out, s)
	}
	return out
}

// medians reports the median and the 90th percentile of ds as metrics of b.
func medians(b *testing.B, ds []time.Duration, unit string) {
	slices.Sort(ds)
	if len(ds) == 0 {
		return
	}
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "median-µs/"+unit)
	b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds()), "p90-µs/"+unit)
}

// BenchmarkPrivilegedServiceUpdate measures Update changing the backends of one service
// when 10 or 10,000 services are defined: adding a 4th backend to a service of 3 (elements
// added only: the slot count stays 4) and removing it again (a batch that deletes
// elements); and adding a service of 3 backends that was not there (a Kubernetes create),
// removing it again. Each iteration does both; the other one is not timed.
func BenchmarkPrivilegedServiceUpdate(b *testing.B) {
	for _, op := range []string{"add-backend", "remove-backend", "add-service"} {
		for _, n := range []int{10, 10000} {
			b.Run(fmt.Sprintf("%s/services=%d", op, n), func(b *testing.B) {
				tb, _ := openTable(b)
				svcs := manyServices(n)
				start := time.Now()
				if err := tb.Sync(Ruleset{Services: svcs}); err != nil {
					b.Fatal(err)
				}
				b.Logf("Sync of %d services: %v", n, time.Since(start))
				three := svcs[n/2]
				four := three
				four.Backends = append(slices.Clone(three.Backends), netip.MustParseAddrPort("10.201.0.1:8080"))
				fresh := three
				fresh.Name, fresh.VIP = "ns/fresh", netip.MustParseAddr("10.98.0.1")
				var ds []time.Duration
				update := func(timed bool, s Service) {
					add, remove := Delta{Services: []Service{s}}, Delta{}
					if s.VIP == fresh.VIP && !timed {
						add, remove = remove, add
					}
					start := time.Now()
					if err := tb.Update(add, remove); err != nil {
						b.Fatal(err)
					}
					if timed {
						ds = append(ds, time.Since(start))
					}
				}
				b.ResetTimer()
				for i := range b.N {
					b.StopTimer()
					switch op {
					case "add-service":
						if i > 0 {
							update(false, fresh) // removes it
						}
						b.StartTimer()
						update(true, fresh)
					default:
						update(false, map[bool]Service{true: three, false: four}[op == "add-backend"])
						b.StartTimer()
						update(true, map[bool]Service{true: four, false: three}[op == "add-backend"])
					}
				}
				b.StopTimer()
				medians(b, ds, "update")
			})
		}
	}
}

// BenchmarkPrivilegedServiceConnect measures the setup of one TCP connection (connect:
// SYN to SYN-ACK) from a sandbox of network B to a VIP whose backend is on network A, when
// 10 or 10,000 services are defined. Run it with a fixed count, e.g. -benchtime=2000x:
// every connection leaves a conntrack entry and a socket in TIME_WAIT.
func BenchmarkPrivilegedServiceConnect(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			tp := buildTopo(b)
			var ln net.Listener
			must(b, inNetNS(tp.ns["a1"], func() error {
				var err error
				ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", testPort))
				return err
			}), "listen")
			b.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			svc := Service{Name: "bench/web", VIP: vipWeb[0], Protocol: "tcp", Port: 80, Backends: tp.backends(0, "a1")}
			rs := tp.ruleset()
			rs.Services = append(manyServices(n-1), svc)
			mustSync(b, tp.open(b), rs)
			dst := netip.AddrPortFrom(svc.VIP, svc.Port).String()
			// First connections resolve neighbours.
			must(b, inNetNS(tp.ns["b1"], func() error {
				var err error
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
					var c net.Conn
					if c, err = net.DialTimeout("tcp", dst, time.Second); err == nil {
						return c.Close()
					}
				}
				return err
			}), "first connection")

			ds := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			err := inNetNS(tp.ns["b1"], func() error {
				for range b.N {
					start := time.Now()
					c, err := net.Dial("tcp", dst)
					if err != nil {
						return err
					}
					ds = append(ds, time.Since(start))
					c.Close()
				}
				return nil
			})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			medians(b, ds, "connect")
		})
	}
}

// BenchmarkPrivilegedServiceAdd measures Update adding one new service (3 backends) when
// 10 or 10,000 services are defined: its verdict-map element names a chain, which makes
// the kernel validate the table's chains again on commit. Each iteration adds the service
// (timed) and removes it (not timed).
func BenchmarkPrivilegedServiceAdd(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			tb, _ := openTable(b)
			svcs := manyServices(n + 1)
			extra := svcs[n]
			if err := tb.Sync(Ruleset{Services: svcs[:n]}); err != nil {
				b.Fatal(err)
			}
			var ds []time.Duration
			for b.Loop() {
				start := time.Now()
				if err := tb.Update(Delta{Services: []Service{extra}}, Delta{}); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(start))
				if err := tb.Update(Delta{}, Delta{Services: []Service{extra}}); err != nil {
					b.Fatal(err)
				}
			}
			medians(b, ds, "add")
		})
	}
}
