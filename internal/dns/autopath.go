package dns

import (
	"context"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"
)

// Autopath: a pod with dnsPolicy ClusterFirst has the search list
//
//	<ns>.svc.<zone> svc.<zone> <zone> [node's search domains]
//
// and ndots:5, so its stub resolver turns a lookup of example.com into
// example.com.<ns>.svc.<zone>, example.com.svc.<zone>, example.com.<zone>, ... and
// finally example.com: four round trips, twice with A and AAAA. The server knows the
// namespace of every pod address (Snapshot.Pods), hence the pod's search list. When a
// pod of namespace ns asks for <name>.<ns>.svc.<zone> and that name does not exist in the
// zone, the server walks the rest of the list itself and answers the first candidate that
// exists with
//
//	<name>.<ns>.svc.<zone>. CNAME <candidate>.
//	<candidate's records>
//
// which the stub accepts as the answer to its first query. As CoreDNS's autopath:
//   - only a NXDOMAIN of the zone is taken over: names that exist (NODATA included) are
//     never changed;
//   - a candidate "exists" when it is not NXDOMAIN, whatever the type: the A and AAAA
//     queries of one lookup stop at the same candidate (an ExternalName service exists
//     even when its target does not: the answer is then its CNAME and NXDOMAIN);
//   - when every candidate is NXDOMAIN, the original NXDOMAIN is returned and the stub
//     walks its list as usual (a CNAME to a name that does not exist would be NXDOMAIN
//     too, and a stub reads NXDOMAIN as "try the next search domain" either way).
//
// Beyond CoreDNS's autopath:
//   - a candidate that exists without records of the type (NODATA) is answered with the
//     CNAME and an empty answer, not with a bare NOERROR for the original name (a correct
//     CNAME-to-NODATA response: the stub learns the canonical name);
//   - when a candidate cannot be resolved (upstream failure, SERVFAIL), the walk stops and
//     the original NXDOMAIN is returned, instead of skipping that candidate: the stub then
//     meets the failure itself, where skipping could answer with a later candidate the
//     stub would never have reached;
//   - queries with the DO bit (a validating resolver) are left alone, as are CNAME and
//     ANY queries.
//
// The trade-off is CoreDNS's: the server assumes the pod's resolv.conf is the ClusterFirst
// one. A pod (dnsPolicy None) asking explicitly for x.<ns>.svc.<zone>. would get a CNAME
// to x. rather than NXDOMAIN. Config.Autopath turns the shortcut off.
func (s *Server) autopath(ctx context.Context, z *zone, client netip.Addr, q mdns.Question, name string) (reply, bool) {
	if !s.set.autopath {
		return reply{}, false
	}
	switch q.Qtype {
	case mdns.TypeCNAME, mdns.TypeANY, mdns.TypeDNAME:
		return reply{}, false
	}
	nsName := z.clientNS[client]
	if nsName == "" {
		return reply{}, false // not a pod, or an address shared by several namespaces
	}
	first := z.namespaces[nsName].searchFirst // "<ns>.svc.<zone>."
	if len(name) <= len(first) || name[len(name)-len(first)-1] != '.' || !strings.HasSuffix(name, first) {
		return reply{}, false // not an expansion of the first search domain
	}
	base := name[:len(name)-len(first)] // "example.com."
	orig := base
	if len(q.Name) == len(name) {
		orig = q.Name[:len(base)] // the client's spelling
	}
	for _, suffix := range s.set.searchTail {
		cand := base + suffix
		if len(cand) > 254 {
			continue // no such name: the stub would skip it too
		}
		rep := s.lookup(ctx, z, client, cand, q.Qtype, q.Qclass, false, false)
		switch {
		case rep.rcode == mdns.RcodeNameError && !rep.alias:
			continue
		case rep.rcode == mdns.RcodeSuccess, rep.rcode == mdns.RcodeNameError:
			// The candidate exists: records, NODATA, or a CNAME (of an ExternalName
			// service) to a name that does not exist.
		default:
			return reply{}, false
		}
		cname := &mdns.CNAME{Hdr: hdr(q.Name, mdns.TypeCNAME, cnameTTL(z.negTTL, rep)), Target: orig + suffix}
		answer := make([]mdns.RR, 0, 1+len(rep.answer))
		answer = append(answer, cname)
		answer = append(answer, rep.answer...)
		return reply{rcode: rep.rcode, aa: rep.aa, answer: answer, ns: rep.ns, extra: rep.extra}, true
	}
	return reply{}, false
}

// cnameTTL is how long the synthesized CNAME holds: no longer than the NXDOMAIN of the
// original name (the zone's negative TTL) nor than the answer it leads to.
func cnameTTL(negTTL uint32, rep reply) uint32 {
	ttl := negTTL
	for _, rr := range rep.answer {
		ttl = min(ttl, rr.Header().Ttl)
	}
	for _, rr := range rep.ns {
		if soa, ok := rr.(*mdns.SOA); ok {
			ttl = min(ttl, soa.Hdr.Ttl, soa.Minttl)
		}
	}
	return ttl
}
