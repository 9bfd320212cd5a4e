package agent

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/fastpath"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/store"
)

// metrics are the agent's Prometheus metrics, in a registry of its own. Counters and
// histograms are updated where things happen; the gauges of the store's contents
// (endpoints, pools, service backends) and of conntrack are read when scraped (state).
type metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec   // verb, code
	requestSeconds  *prometheus.HistogramVec // verb
	reconciles      *prometheus.CounterVec   // result
	reconcileSecond prometheus.Histogram
	repairs         *prometheus.CounterVec   // kind
	nftSeconds      *prometheus.HistogramVec // op
	dnsQueries      *prometheus.CounterVec   // rcode
	dnsCache        *prometheus.CounterVec   // result: hit, miss
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podnet_requests_total",
		Help: "API requests (CNI verbs and the CLI's) by verb and result code (0: success, else the CNI or podnet error code).",
	}, []string{"verb", "code"})
	m.requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "podnet_request_duration_seconds",
		Help:    "Time the agent took to answer an API request, by verb.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms to 4 s
	}, []string{"verb"})
	m.reconciles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podnet_reconcile_runs_total",
		Help: "Comparisons of the kernel with the store, by result (ok, error).",
	}, []string{"result"})
	m.reconcileSecond = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "podnet_reconcile_duration_seconds",
		Help:    "Time one reconcile took.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	m.repairs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podnet_repairs_total",
		Help: "What reconcile repaired, by kind: nftables (tables rewritten), endpoint-gone (released), attach-rolled-back, detach-finished, orphan-veth, and per endpoint sysctl, mac, mtu, master, alias, up, route, neighbour.",
	}, []string{"kind"})
	m.nftSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "podnet_nftables_duration_seconds",
		Help:    "Time of nftables operations: update (incremental batch), sync (whole tables), compare (tables read back).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"op"})
	m.dnsQueries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podnet_dns_queries_total",
		Help: "Queries the cluster DNS server answered, by response code.",
	}, []string{"rcode"})
	m.dnsCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podnet_dns_cache_lookups_total",
		Help: "Lookups of the DNS forwarder's cache, by result (hit, miss).",
	}, []string{"result"})
	m.reg.MustRegister(m.requests, m.requestSeconds, m.reconciles, m.reconcileSecond, m.repairs,
		m.nftSeconds, m.dnsQueries, m.dnsCache, state{a},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if rt, ok := a.store.(interface{ RoundTrips() int64 }); ok {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "podnet_store_requests_total",
			Help: "Requests the agent sent to its cluster store (etcd): reads, commits, lease and watch calls.",
		}, func() float64 { return float64(rt.RoundTrips()) }))
	}
	return m
}

// MetricsHandler serves the agent's metrics in the Prometheus exposition format.
func (a *Agent) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{})
}

// observeNft times one nftables operation.
func (m *metrics) observeNft(op string, start time.Time) {
	m.nftSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// repaired counts what one endpoint repair did (the kind is the first word of each of
// kernel.Applier.RepairEndpoint's lines).
func (m *metrics) repaired(lines []string) {
	for _, l := range lines {
		kind, _, _ := strings.Cut(l, " ")
		m.repairs.WithLabelValues(kind).Inc()
	}
}

// Answered and CacheLookup make metrics a dns.Observer.
func (m *metrics) Answered(rcode int) {
	m.dnsQueries.WithLabelValues(rcodeName(rcode)).Inc()
}

func (m *metrics) CacheLookup(hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.dnsCache.WithLabelValues(result).Inc()
}

// rcodeName is the DNS response code's mnemonic (RFC 6895), or its number.
func rcodeName(rcode int) string {
	switch rcode {
	case 0:
		return "NOERROR"
	case 1:
		return "FORMERR"
	case 2:
		return "SERVFAIL"
	case 3:
		return "NXDOMAIN"
	case 4:
		return "NOTIMP"
	case 5:
		return "REFUSED"
	case 16:
		return "BADVERS"
	}
	return strconv.Itoa(rcode)
}

// instrument wraps an API handler: it counts the request by verb and result code and
// times it. Without metrics (an Agent not made by New, in tests) it returns h.
func (m *metrics) instrument(verb string, h http.HandlerFunc) http.HandlerFunc {
	if m == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &codeWriter{ResponseWriter: w}
		h(rw, r)
		m.requests.WithLabelValues(verb, strconv.Itoa(rw.code)).Inc()
		m.requestSeconds.WithLabelValues(verb).Observe(time.Since(start).Seconds())
	}
}

// codeWriter remembers the API error code reply wrote (0: success).
type codeWriter struct {
	http.ResponseWriter
	code int
}

// state collects, when scraped, what the store and the node hold right now.
type state struct{ a *Agent }

var (
	endpointsDesc = prometheus.NewDesc("podnet_endpoints",
		"Endpoints recorded, by network and state (attaching, attached, detaching).", []string{"network", "state"}, nil)
	poolSizeDesc = prometheus.NewDesc("podnet_pool_addresses",
		"Addresses a subnet can hand out (its size less the network, gateway and IPv4 broadcast addresses; capped at 2^53).", []string{"network", "subnet"}, nil)
	poolUsedDesc = prometheus.NewDesc("podnet_pool_allocated_addresses",
		"Addresses of a subnet that are allocated.", []string{"network", "subnet"}, nil)
	poolRatioDesc = prometheus.NewDesc("podnet_pool_utilization_ratio",
		"Allocated addresses of a subnet over those it can hand out.", []string{"network", "subnet"}, nil)
	backendsDesc = prometheus.NewDesc("podnet_service_backends",
		"Ready backends of a service.", []string{"namespace", "service"}, nil)
	conntrackDesc = prometheus.NewDesc("podnet_conntrack_entries",
		"Connection tracking entries in the node namespace (nf_conntrack_count).", nil, nil)
	conntrackMaxDesc = prometheus.NewDesc("podnet_conntrack_entries_limit",
		"Most connection tracking entries the node namespace holds (nf_conntrack_max).", nil, nil)
	policyDropsDesc = prometheus.NewDesc("podnet_policy_drops_total",
		"New connections network policies dropped on this node, by direction (ingress of the destination pod, egress of the source pod).", []string{"direction"}, nil)
	fastPacketsDesc = prometheus.NewDesc("podnet_fastpath_packets_total",
		"Frames the pods sent that the eBPF fast path saw, by path: redirected (straight to the destination pod of the same bridge or routed network), passed (left to the kernel's path: bridge or forwarding, and nftables; ARP and neighbour discovery too).", []string{"path"}, nil)
	fastBytesDesc = prometheus.NewDesc("podnet_fastpath_bytes_total",
		"Bytes of those packets, by path.", []string{"path"}, nil)
	fastPortsDesc = prometheus.NewDesc("podnet_fastpath_ports",
		"Host veths of pods with the fast path's program attached.", nil, nil)
)

func (state) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{endpointsDesc, poolSizeDesc, poolUsedDesc, poolRatioDesc, backendsDesc, conntrackDesc, conntrackMaxDesc, policyDropsDesc, fastPacketsDesc, fastBytesDesc, fastPortsDesc} {
		ch <- d
	}
}

func (s state) Collect(ch chan<- prometheus.Metric) {
	r, err := s.a.records()
	nets, eps, svcs := r.nets, r.eps, r.svcs
	allocs := map[string]map[netip.Addr]string{}
	if err == nil {
		err = s.a.store.View(func(tx store.Tx) (err error) {
			for _, n := range nets {
				if allocs[n.Name], err = tx.Allocations(n.Name); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(endpointsDesc, err)
		return
	}
	counts := map[[2]string]int{}
	for _, n := range nets {
		for _, st := range []string{api.StateAttaching, api.StateAttached, api.StateDetaching} {
			counts[[2]string{n.Name, st}] = 0
		}
	}
	for _, ep := range eps {
		counts[[2]string{ep.Network, ep.State}]++
	}
	for k, c := range counts {
		ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(c), k[0], k[1])
	}
	for _, n := range nets {
		for _, sub := range n.Subnets {
			size := min(float64(ipam.Capacity(sub)), 1<<53)
			used := 0
			for a := range allocs[n.Name] {
				if sub.Prefix.Contains(a) {
					used++
				}
			}
			labels := []string{n.Name, sub.Prefix.String()}
			ch <- prometheus.MustNewConstMetric(poolSizeDesc, prometheus.GaugeValue, size, labels...)
			ch <- prometheus.MustNewConstMetric(poolUsedDesc, prometheus.GaugeValue, float64(used), labels...)
			ch <- prometheus.MustNewConstMetric(poolRatioDesc, prometheus.GaugeValue, float64(used)/max(size, 1), labels...)
		}
	}
	for _, svc := range svcs {
		ch <- prometheus.MustNewConstMetric(backendsDesc, prometheus.GaugeValue, float64(len(driver.Backends(svc, eps))), svc.Namespace, svc.Name)
	}
	if count, limit, err := s.a.node.Conntrack(); err == nil {
		ch <- prometheus.MustNewConstMetric(conntrackDesc, prometheus.GaugeValue, float64(count))
		ch <- prometheus.MustNewConstMetric(conntrackMaxDesc, prometheus.GaugeValue, float64(limit))
	}
	if in, out, err := s.a.nft.PolicyDrops(); err == nil {
		ch <- prometheus.MustNewConstMetric(policyDropsDesc, prometheus.CounterValue, float64(in), "ingress")
		ch <- prometheus.MustNewConstMetric(policyDropsDesc, prometheus.CounterValue, float64(out), "egress")
	}
	if fp := s.a.fastpath; fp != nil {
		if st, err := fp.Stats(); err == nil {
			for path, c := range map[string]fastpath.Counter{"redirected": st.Redirected, "passed": st.Passed} {
				ch <- prometheus.MustNewConstMetric(fastPacketsDesc, prometheus.CounterValue, float64(c.Packets), path)
				ch <- prometheus.MustNewConstMetric(fastBytesDesc, prometheus.CounterValue, float64(c.Bytes), path)
			}
			ch <- prometheus.MustNewConstMetric(fastPortsDesc, prometheus.GaugeValue, float64(st.Ports))
		}
	}
}
