package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/api"
)

// Defaults of Config.
const (
	// DefaultTTL is the TTL of the cluster zone's records. Five seconds as CoreDNS's
	// kubernetes plugin, not kube-dns's 30: the server sits on the node (a link-local
	// address, no network hop), so a query costs well under a millisecond, while a
	// headless service's backends and the pod records change as fast as pods come and go.
	DefaultTTL = 5 * time.Second
	// DefaultResolvConf is where the node's resolvers and search domains are read.
	DefaultResolvConf = "/etc/resolv.conf"
	// DefaultCacheSize bounds the forwarder's cache (entries).
	DefaultCacheSize = 10000
	// DefaultCacheMaxTTL caps how long a positive upstream answer is cached.
	DefaultCacheMaxTTL = time.Hour
	// DefaultCacheMaxNegativeTTL caps how long a negative upstream answer is cached.
	DefaultCacheMaxNegativeTTL = 5 * time.Minute
	// DefaultUpstreamTimeout is the time one upstream gets to answer one attempt.
	DefaultUpstreamTimeout = 2 * time.Second
	// DefaultMaxUDPSize is the largest UDP answer sent and the EDNS0 size advertised
	// (1232: the DNS flag day 2020 value, no IP fragmentation).
	DefaultMaxUDPSize = 1232
	// SchemaVersion is the version of the Kubernetes DNS schema served (dns-version TXT).
	SchemaVersion = "1.1.0"
)

// Config configures a Server. The zero value is usable: every field has a default.
type Config struct {
	// Domain is the cluster zone; api.DefaultClusterDomain when empty.
	Domain string
	// TTL of the zone's records (DefaultTTL when zero), NegativeTTL of its negative
	// answers (the SOA's TTL and MINIMUM; TTL when zero). Whole seconds.
	TTL, NegativeTTL time.Duration
	// DNSAddress is the server's own address (api.DNSAddress when invalid): the address
	// of the zone's name server ns.dns.<zone>, and never used as an upstream.
	DNSAddress netip.Addr
	// AllowedClients are the prefixes whose queries are answered (podnet's subnets and
	// the node's addresses); loopback is always allowed. Everyone else gets REFUSED:
	// the server is no open resolver. Empty: loopback only.
	AllowedClients []netip.Prefix

	// Upstreams are the resolvers names outside the zone are forwarded to; when empty,
	// the nameservers of ResolvConf except DNSAddress.
	Upstreams []netip.AddrPort
	// ResolvConf is the node's resolv.conf (DefaultResolvConf when empty), read by New
	// for Upstreams and SearchDomains when these are not given.
	ResolvConf string
	// SearchDomains are the node's search domains, which end a ClusterFirst pod's search
	// list (autopath walks them too); nil: the search line of ResolvConf.
	SearchDomains []string
	// Upstream replaces the UDP/TCP forwarder built from Upstreams (tests, other transports).
	Upstream Exchanger
	// Dial opens the forwarder's connections to upstreams (Forwarder.Dial).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// UpstreamTimeout is the time one upstream gets for one attempt.
	UpstreamTimeout time.Duration

	// Autopath answers a pod's search-list expansion of a name outside the cluster in one
	// round trip (see autopath.go). Nil means on.
	Autopath *bool
	// ReversePrefixes are address ranges the server is authoritative for in the reverse
	// zones (service CIDR, pod subnets): a PTR query for an unknown address in them is
	// NXDOMAIN instead of being forwarded (no leak of cluster addresses upstream).
	// Reverse names of known cluster addresses are always answered.
	ReversePrefixes []netip.Prefix

	// CacheSize bounds the forwarder's cache; negative disables it.
	CacheSize int

	// Observer, when set, is told of every query the server answers and of every
	// lookup of the forwarder's cache (the agent's metrics).
	Observer Observer
	// CacheMaxTTL and CacheMaxNegativeTTL cap how long upstream answers are cached.
	CacheMaxTTL, CacheMaxNegativeTTL time.Duration
	// MaxUDPSize is the largest UDP answer (a client's smaller EDNS0 size wins; 512
	// without EDNS0) and the size advertised in the OPT record.
	MaxUDPSize uint16

	// Clock is the time source (cache expiry, zone serial); the system clock when nil.
	Clock Clock
	// Logf logs what an operator should see (skipped records, failing upstreams).
	Logf func(format string, args ...any)
}

// Clock tells the time. dnstest.Clock is a fake.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// settings is a validated Config with defaults applied.
type settings struct {
	origin      string // "cluster.local."
	ttl, negTTL uint32
	dnsAddr     netip.Addr
	allowed     []netip.Prefix
	upstreams   []netip.AddrPort
	search      []string // the node's search domains: fully qualified, lower case
	// searchTail is a ClusterFirst pod's search list after its first element, ending
	// with the root (the name as is): what autopath walks.
	searchTail      []string
	autopath        bool
	reverse         []netip.Prefix
	cacheSize       int
	cacheMax        uint32
	cacheMaxNeg     uint32
	upstreamTimeout time.Duration
	maxUDP          uint16
	clock           Clock
	logf            func(string, ...any)
}

// settings applies the defaults, reads resolv.conf when it must and validates.
func (c Config) settings() (*settings, error) {
	s := &settings{
		ttl:             seconds(c.TTL, DefaultTTL),
		dnsAddr:         c.DNSAddress,
		allowed:         c.AllowedClients,
		upstreams:       c.Upstreams,
		autopath:        c.Autopath == nil || *c.Autopath,
		cacheSize:       c.CacheSize,
		cacheMax:        seconds(c.CacheMaxTTL, DefaultCacheMaxTTL),
		cacheMaxNeg:     seconds(c.CacheMaxNegativeTTL, DefaultCacheMaxNegativeTTL),
		upstreamTimeout: c.UpstreamTimeout,
		maxUDP:          c.MaxUDPSize,
		clock:           c.Clock,
		logf:            c.Logf,
	}
	domain := strings.ToLower(strings.Trim(c.Domain, "."))
	if c.Domain == "" {
		domain = api.DefaultClusterDomain
	}
	if !isDomain(domain) {
		return nil, fmt.Errorf("dns config: domain %q: not a domain name", c.Domain)
	}
	s.origin = domain + "."
	s.negTTL = s.ttl
	if c.NegativeTTL != 0 {
		s.negTTL = seconds(c.NegativeTTL, DefaultTTL)
	}
	if c.TTL < 0 || c.NegativeTTL < 0 {
		return nil, fmt.Errorf("dns config: ttl %s / negative ttl %s: negative", c.TTL, c.NegativeTTL)
	}
	if !s.dnsAddr.IsValid() {
		s.dnsAddr = netip.MustParseAddr(api.DNSAddress)
	}
	s.dnsAddr = s.dnsAddr.Unmap()
	for i, p := range s.allowed {
		if !p.IsValid() {
			return nil, fmt.Errorf("dns config: allowed client %d: invalid prefix", i)
		}
	}
	for i, p := range c.ReversePrefixes {
		if !p.IsValid() {
			return nil, fmt.Errorf("dns config: reverse prefix %d: invalid prefix", i)
		}
		s.reverse = append(s.reverse, p.Masked())
	}
	if s.cacheSize == 0 {
		s.cacheSize = DefaultCacheSize
	}
	if s.upstreamTimeout <= 0 {
		s.upstreamTimeout = DefaultUpstreamTimeout
	}
	if s.maxUDP == 0 {
		s.maxUDP = DefaultMaxUDPSize
	}
	if s.maxUDP < mdns.MinMsgSize {
		return nil, fmt.Errorf("dns config: max udp size %d: below %d", s.maxUDP, mdns.MinMsgSize)
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}

	needFile := (len(c.Upstreams) == 0 && c.Upstream == nil) || c.SearchDomains == nil
	var file ResolvFile
	if needFile {
		path := c.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist) && c.ResolvConf == "":
			s.logf("dns: %s does not exist: no upstream resolvers, no node search domains", path)
		case err != nil:
			return nil, fmt.Errorf("dns config: resolv conf: %w", err)
		default:
			file = ParseResolvConf(string(b))
		}
	}
	if len(s.upstreams) == 0 && c.Upstream == nil {
		for _, ns := range file.Nameservers {
			a, err := netip.ParseAddr(ns)
			if err != nil {
				continue
			}
			if a = a.Unmap(); a == s.dnsAddr {
				continue // ourselves: a forwarding loop
			}
			s.upstreams = append(s.upstreams, netip.AddrPortFrom(a, 53))
		}
	}
	for i, u := range s.upstreams {
		if !u.IsValid() || u.Port() == 0 {
			return nil, fmt.Errorf("dns config: upstream %d %q: invalid address", i, u)
		}
		if u.Addr().Unmap() == s.dnsAddr {
			return nil, fmt.Errorf("dns config: upstream %s: the server's own address (forwarding loop)", u)
		}
	}
	search := c.SearchDomains
	if search == nil {
		search = file.Search
	}
	for _, d := range search {
		d = strings.ToLower(strings.Trim(d, "."))
		if d == "" {
			continue
		}
		if !isDomain(d) {
			return nil, fmt.Errorf("dns config: search domain %q: not a domain name", d)
		}
		s.search = append(s.search, d+".")
	}
	s.searchTail = []string{"svc." + s.origin, s.origin}
	for _, d := range s.search {
		if !slices.Contains(s.searchTail, d) {
			s.searchTail = append(s.searchTail, d)
		}
	}
	s.searchTail = append(s.searchTail, "")
	return s, nil
}

// seconds converts d to whole seconds (def when zero), at least one.
func seconds(d, def time.Duration) uint32 {
	if d == 0 {
		d = def
	}
	if d < time.Second {
		return 1
	}
	return uint32(d / time.Second)
}

// Observer receives the server's events; its methods must be quick and safe for
// concurrent use.
type Observer interface {
	// Answered is called once per query answered to a client (not for Exchange), with
	// the answer's response code.
	Answered(rcode int)
	// CacheLookup is called once per lookup of the forwarder's cache.
	CacheLookup(hit bool)
}
