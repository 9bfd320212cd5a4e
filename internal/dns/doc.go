// Package dns is podnet's cluster DNS server.
//
// It is authoritative for the cluster zone (Config.Domain, "cluster.local" unless told
// otherwise) following Kubernetes' "DNS-based service discovery" specification, schema
// 1.1.0:
//
//	<svc>.<ns>.svc.<zone>                 A/AAAA: the service's VIPs; a headless service:
//	                                      one record per ready backend (NXDOMAIN when none)
//	<hostname>.<svc>.<ns>.svc.<zone>      A/AAAA of a headless service's backend
//	_<port>._<proto>.<svc>.<ns>.svc.<zone> SRV per named port (headless: per backend)
//	<svc>.<ns>.svc.<zone>                 CNAME <external name> of an ExternalName service
//	                                      (no SRV, no PTR); for another type the answer
//	                                      goes on with the target's records, from the
//	                                      zone or upstream
//	<a-b-c-d>.<ns>.pod.<zone>             A (AAAA for the dashed IPv6 form) of a pod,
//	                                      only if a pod of <ns> has that address
//	dns-version.<zone>                    TXT "1.1.0"
//	<zone>                                SOA, NS ns.dns.<zone> (A/AAAA: Config.DNSAddress)
//
// and for the PTR records of VIPs, of headless backends and of pods (in-addr.arpa,
// ip6.arpa; an address of pods of several namespaces points to the first namespace by
// name). A name that exists without a record of the asked type gets NODATA (NOERROR,
// empty answer), a name that does not exist NXDOMAIN; both carry the zone's SOA in the
// authority section. Every other name is forwarded to upstream resolvers through a
// bounded cache, and a query from a pod for a search-list expansion of an external name
// is answered in one round trip (autopath, see autopath.go).
//
// The server reads the cluster through a Snapshot the agent hands it (SetSnapshot), and
// changes of services and pods to it (UpdateServices, UpdatePods); it builds its indexes once per snapshot,
// copies and amends them per change, and serves from them without locks. The side
// effects sit behind small interfaces with fakes in package dnstest: the upstream
// (Exchanger) and the clock (Clock). ServeDNS is a miekg/dns Handler and is tested
// without sockets.
//
// Sockets: ListenAndServe opens one UDP and one TCP socket inside a network namespace
// (kernel.ListenPacketIn / kernel.ListenIn); the forwarder's sockets are opened in the
// caller's own namespace. A UDP answer is at most Config.MaxUDPSize bytes (1232) whatever
// the client's EDNS0 size says, and truncated beyond (TC: the client asks again over
// TCP). The UDP socket is served by the package's own read loop (udp.go), which keeps
// answering under a flood: a large receive buffer, junk dropped on its header, and work
// in progress bounded per client and in all, forwarded questions included (inflight.go).
package dns
