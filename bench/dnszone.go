package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/internal/dns"
)

// The cluster of the dns section, the same for every server: podnet's server gets it as a
// dns.Snapshot, CoreDNS as a zone file written from that snapshot with the records
// podnet's server derives from it (Kubernetes DNS schema 1.1.0: A of services, A of
// headless services and of their backends' hostnames, SRV of named ports, pod A records).
// Reverse zones are left out: no query of the benchmark asks for a PTR.
const (
	dnsServices         = 10000 // services with a VIP, svc-<i> in namespace ns-<i mod 100>
	dnsNamespaces       = 100
	dnsHeadless         = 1000 // headless services hl-<i> in ns-<i mod 100>
	dnsHeadlessBackends = 5    // ready backends per headless service
	dnsExternalNames    = 1000 // host-<k>.example.com, answered by the benchmark's upstream
	dnsZone             = "cluster.local."
	dnsTTL              = 5 // podnet's default TTL, and the SOA minimum (negative TTL)
	dnsClientNS         = "ns-0"
)

// Clients of the DNS servers, inside the benchmark's namespace. dnsPodClient is a pod of
// dnsClientNS in the snapshot (the pod "dnsperf"), so podnet's server applies autopath to
// its queries; dnsOtherClient is no pod (loopback is always allowed), so its queries
// walk the search list like with any server.
var (
	dnsPodClient   = netip.MustParseAddr("127.0.0.1")
	dnsOtherClient = netip.MustParseAddr("127.0.0.2")
)

// dnsSearch is the search list of a ClusterFirst pod of dnsClientNS (ndots:5).
var dnsSearch = []string{dnsClientNS + ".svc." + dnsZone, "svc." + dnsZone, dnsZone}

func addr4(base [4]byte, off int) netip.Addr {
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += uint32(off)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func dnsServiceName(i int) (name, ns string) {
	return fmt.Sprintf("svc-%d", i), fmt.Sprintf("ns-%d", i%dnsNamespaces)
}

func dnsHeadlessName(i int) (name, ns string) {
	return fmt.Sprintf("hl-%d", i), fmt.Sprintf("ns-%d", i%dnsNamespaces)
}

// dnsSnapshot is the benchmark's cluster as podnet's DNS server reads it.
func dnsSnapshot() dns.Snapshot {
	var s dns.Snapshot
	for i := range dnsServices {
		name, ns := dnsServiceName(i)
		s.Services = append(s.Services, dns.Service{
			Name: name, Namespace: ns,
			VIPs:  []netip.Addr{addr4([4]byte{10, 96, 0, 16}, i)},
			Ports: []dns.Port{{Name: "http", Port: 80, Protocol: "tcp"}},
		})
	}
	for i := range dnsHeadless {
		name, ns := dnsHeadlessName(i)
		svc := dns.Service{Name: name, Namespace: ns, Headless: true,
			Ports: []dns.Port{{Name: "http", Port: 8080, Protocol: "tcp"}}}
		for j := range dnsHeadlessBackends {
			a := addr4([4]byte{10, 200, 0, 0}, i*8+j)
			host := fmt.Sprintf("%s-%d", name, j)
			svc.Backends = append(svc.Backends, dns.Backend{Hostname: host, Addr: a})
			s.Pods = append(s.Pods, dns.Pod{Namespace: ns, Name: host, Addrs: []netip.Addr{a}})
		}
		s.Services = append(s.Services, svc)
	}
	s.Pods = append(s.Pods, dns.Pod{Namespace: dnsClientNS, Name: "dnsperf", Addrs: []netip.Addr{dnsPodClient}})
	return s
}

// dashedAddr is the one-label form of an IPv4 address (10-0-0-5).
func dashedAddr(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("%d-%d-%d-%d", b[0], b[1], b[2], b[3])
}

// writeZoneFile writes the records podnet's server serves for snap as an RFC 1035 zone
// file for CoreDNS's file plugin. It returns the number of records.
func writeZoneFile(path string, snap dns.Snapshot) (int, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("create zone file: %w", err)
	}
	w := bufio.NewWriter(f)
	n := 0
	rr := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\n", args...)
		n++
	}
	rr("%s %d IN SOA ns.dns.%s hostmaster.%s 1 7200 1800 86400 %d", dnsZone, dnsTTL, dnsZone, dnsZone, dnsTTL)
	rr("%s %d IN NS ns.dns.%s", dnsZone, dnsTTL, dnsZone)
	rr("ns.dns.%s %d IN A 169.254.20.10", dnsZone, dnsTTL)
	rr("dns-version.%s %d IN TXT \"%s\"", dnsZone, dnsTTL, dns.SchemaVersion)
	for _, svc := range snap.Services {
		fqdn := svc.Name + "." + svc.Namespace + ".svc." + dnsZone
		type target struct {
			name string
			addr netip.Addr
		}
		var targets []target
		if svc.Headless {
			for _, b := range svc.Backends {
				host := b.Hostname + "." + fqdn
				rr("%s %d IN A %s", fqdn, dnsTTL, b.Addr)
				rr("%s %d IN A %s", host, dnsTTL, b.Addr)
				targets = append(targets, target{host, b.Addr})
			}
		} else {
			for _, v := range svc.VIPs {
				rr("%s %d IN A %s", fqdn, dnsTTL, v)
			}
			targets = []target{{fqdn, netip.Addr{}}}
		}
		for _, p := range svc.Ports {
			if p.Name == "" {
				continue
			}
			weight := max(1, 100/len(targets)) // podnet: priority 0, the weight spread evenly
			for _, t := range targets {
				rr("_%s._%s.%s %d IN SRV 0 %d %d %s", p.Name, p.Protocol, fqdn, dnsTTL, weight, p.Port, t.name)
			}
		}
	}
	for _, p := range snap.Pods {
		for _, a := range p.Addrs {
			rr("%s.%s.pod.%s %d IN A %s", dashedAddr(a), p.Namespace, dnsZone, dnsTTL, a)
		}
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("write zone file: %w", err)
	}
	return n, nil
}

// externalName is the k-th name outside the cluster, and the addresses the benchmark's
// upstream gives it (benchmarking and documentation ranges: nothing is ever sent there).
func externalName(k int) string { return fmt.Sprintf("host-%d.example.com.", k) }

func externalA(k int) netip.Addr    { return addr4([4]byte{198, 18, 0, 0}, k) }
func externalAAAA(k int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", k+1)) }

// Query files for dnsperf ("name type" per line), written once per run with a fixed seed.
const (
	dnsHitLines        = 100000 // random service A queries
	dnsExtResolutions  = 20000  // random external names resolved by a pod's stub
	dnsQueryFileSeed   = 42
	dnsQueriesAutopath = 2 // per resolution: A and AAAA of the first expansion
	dnsQueriesWalk     = 8 // per resolution: A and AAAA of the 3 expansions and of the name
)

// writeHitQueries writes A queries for random services, with and without VIP.
func writeHitQueries(w io.Writer) error {
	r := rand.New(rand.NewPCG(dnsQueryFileSeed, 1))
	bw := bufio.NewWriter(w)
	for range dnsHitLines {
		var name, ns string
		if i := r.IntN(dnsServices + dnsHeadless); i < dnsServices {
			name, ns = dnsServiceName(i)
		} else {
			name, ns = dnsHeadlessName(i - dnsServices)
		}
		fmt.Fprintf(bw, "%s.%s.svc.%s A\n", name, ns, dnsZone)
	}
	return bw.Flush()
}

// writeExternalQueries writes what the stub resolver of a pod of dnsClientNS sends to
// resolve random external names (getaddrinfo: A and AAAA of each candidate at once):
// with walk, every search expansion then the name itself (all but the last NXDOMAIN);
// without, the first expansion only (answered at once with autopath).
func writeExternalQueries(w io.Writer, walk bool) error {
	r := rand.New(rand.NewPCG(dnsQueryFileSeed, 2))
	bw := bufio.NewWriter(w)
	candidates := []string{dnsSearch[0]}
	if walk {
		candidates = append(slices.Clone(dnsSearch), "")
	}
	for range dnsExtResolutions {
		name := externalName(r.IntN(dnsExternalNames))
		for _, suffix := range candidates {
			fmt.Fprintf(bw, "%s%s A\n%s%s AAAA\n", name, suffix, name, suffix)
		}
	}
	return bw.Flush()
}

// dnsQuestion is one question of the answer comparison.
type dnsQuestion struct {
	name  string
	qtype uint16
}

// comparisonQuestions samples every kind of name of the zone, names that do not exist and
// names that exist without records of the type.
func comparisonQuestions() []dnsQuestion {
	r := rand.New(rand.NewPCG(dnsQueryFileSeed, 3))
	var qs []dnsQuestion
	add := func(name string, t uint16) { qs = append(qs, dnsQuestion{name, t}) }
	for range 100 {
		name, ns := dnsServiceName(r.IntN(dnsServices))
		add(name+"."+ns+".svc."+dnsZone, mdns.TypeA)
	}
	for range 20 {
		name, ns := dnsServiceName(r.IntN(dnsServices))
		add("_http._tcp."+name+"."+ns+".svc."+dnsZone, mdns.TypeSRV)
		add(name+"."+ns+".svc."+dnsZone, mdns.TypeAAAA) // NODATA
	}
	for range 40 {
		i := r.IntN(dnsHeadless)
		name, ns := dnsHeadlessName(i)
		fqdn := name + "." + ns + ".svc." + dnsZone
		add(fqdn, mdns.TypeA)
		add("_http._tcp."+fqdn, mdns.TypeSRV)
		add(fmt.Sprintf("%s-%d.%s", name, r.IntN(dnsHeadlessBackends), fqdn), mdns.TypeA)
		a := addr4([4]byte{10, 200, 0, 0}, i*8+r.IntN(dnsHeadlessBackends))
		add(dashedAddr(a)+"."+ns+".pod."+dnsZone, mdns.TypeA)
	}
	for _, n := range []string{"nope.ns-1.svc.", "svc-1.ns-2.svc.", "hl-1.ns-2.svc.", "x.svc-1.ns-1.svc.", "ns-1000.svc.", "10-200-0-0.ns-1.pod."} {
		add(n+dnsZone, mdns.TypeA) // NXDOMAIN
	}
	for _, n := range []string{"", "svc.", "ns-1.svc.", "dns-version."} {
		add(n+dnsZone, mdns.TypeA) // NODATA (empty non-terminals, other types)
	}
	add(dnsZone, mdns.TypeSOA)
	add("dns-version."+dnsZone, mdns.TypeTXT)
	return qs
}
