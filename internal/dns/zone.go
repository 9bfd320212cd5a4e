package dns

import (
	"cmp"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/podnet/podnet/api"
)

// zone is the index of one snapshot. It is built by buildZone, or from the previous zone
// by withServices or withPods, and never modified afterwards: every query reads it
// without a lock, and the record slices it hands out are shared (their capacity equals
// their length, so that an append copies). withServices and withPods share what did not
// change with the previous zone: the maps they change are copies.
type zone struct {
	origin      string // "cluster.local."
	ttl, negTTL uint32

	soa     []mdns.RR // apex SOA as an answer (TTL ttl)
	soaNeg  []mdns.RR // apex SOA for negative answers (TTL negTTL)
	apexNS  []mdns.RR // <zone> NS ns.dns.<zone>.
	nsAddr  rrset     // ns.dns.<zone> A/AAAA
	version []mdns.RR // dns-version.<zone> TXT

	namespaces map[string]*namespaceEntry
	// ptr holds the PTR records that services give cluster addresses (owner: the
	// reverse name). A pod's address has its own (podAddrs), which answers only when
	// no service names the address.
	ptr map[netip.Addr]*ptrSet
	// podAddrs holds every address of a pod: the namespaces of the pods holding it and
	// its PTR record.
	podAddrs map[netip.Addr]podAddr
	// reverseSOA are the negative-answer SOAs of in-addr.arpa. and ip6.arpa.
	reverseSOA4, reverseSOA6 []mdns.RR
	// clientNS maps a pod address to its namespace ("" when pods of several namespaces
	// share the address: unknown). It is what podAddrs says, in the form autopath and
	// the client check read on every query.
	clientNS map[netip.Addr]string
}

// podAddr is what the zone knows of an address of pods.
type podAddr struct {
	// namespaces are the namespaces of the pods holding the address, sorted, each once
	// (one, unless pods of several namespaces share the address).
	namespaces []string
	// ptr is the PTR record of the address, to its dashed name in the first of
	// namespaces: the choice does not depend on the order in which the pods came.
	ptr []mdns.RR
}

type namespaceEntry struct {
	services map[string]*serviceEntry
	// bare are the services that have no records (a headless service without ready
	// backends, an ExternalName that is no DNS name): they make the namespace exist.
	bare map[string]struct{}
	// pods are the namespace's pods by name (as given), each with its addresses (valid,
	// unmapped, sorted, each once); a pod makes the namespace exist, with or without
	// addresses.
	pods map[string][]netip.Addr
	// podAddrs counts, for each address of the namespace's pods, the pods holding it:
	// the addresses that have a name <a-b-c-d>.<ns>.pod.<zone>.
	podAddrs map[netip.Addr]int
	// searchFirst is "<ns>.svc.<zone>.", the first element of a pod's search list.
	searchFirst string
}

// empty reports whether nothing makes the namespace exist any more.
func (ns *namespaceEntry) empty() bool {
	return len(ns.services) == 0 && len(ns.bare) == 0 && len(ns.pods) == 0
}

type serviceEntry struct {
	rrset
	// cname is the CNAME record of an ExternalName service (then nothing else is set),
	// and target the name it points to (lower case, fully qualified).
	cname  []mdns.RR
	target string
	// protos holds the SRV names: "_tcp" -> "_http" -> records.
	protos map[string]map[string]*rrset
	// hosts are the backends' names of a headless service.
	hosts map[string]*rrset
	// ptrAddrs are the addresses the service gives PTR records (in zone.ptr).
	ptrAddrs []netip.Addr
}

// serviceKey names a service in the zone: its namespace and name in lower case.
type serviceKey struct{ ns, name string }

func (k serviceKey) compare(o serviceKey) int {
	return cmp.Or(strings.Compare(k.ns, o.ns), strings.Compare(k.name, o.name))
}

// ptrSet are the PTR records of one address, with the service that gives each, ordered
// by service (and in each service's own order): the order does not depend on the order
// in which the services came.
type ptrSet struct {
	rrs    []mdns.RR
	owners []serviceKey
}

// rrset holds the records of one name.
type rrset struct {
	a, aaaa  []mdns.RR
	srv      []mdns.RR
	srvExtra []mdns.RR // the addresses of the SRV targets (additional section)
}

// records returns the answer and additional records of type qtype.
func (r *rrset) records(qtype uint16) (answer, extra []mdns.RR) {
	switch qtype {
	case mdns.TypeA:
		return r.a, nil
	case mdns.TypeAAAA:
		return r.aaaa, nil
	case mdns.TypeSRV:
		return r.srv, r.srvExtra
	case mdns.TypeANY:
		return concat(r.a, r.aaaa, r.srv), r.srvExtra
	}
	return nil, nil
}

// zoneAnswer is what the zone says about a name.
type zoneAnswer struct {
	rcode         int // mdns.RcodeSuccess or mdns.RcodeNameError
	answer, extra []mdns.RR
	// target, when set, is the target of the CNAME in answer, whose records of the
	// asked type complete the answer (RFC 1034 section 3.6.2: the server follows it).
	target string
}

var nxdomain = zoneAnswer{rcode: mdns.RcodeNameError}

// buildZone indexes a snapshot. Names are compared in lower case (the spec's
// case-insensitive comparisons); services and hostnames that are no DNS label are
// skipped with a log line, as a record for them could not be asked for.
func buildZone(set *settings, snap Snapshot, serial uint32) *zone {
	z := &zone{
		origin:     set.origin,
		ttl:        set.ttl,
		negTTL:     set.negTTL,
		namespaces: make(map[string]*namespaceEntry),
		ptr:        make(map[netip.Addr]*ptrSet),
		podAddrs:   make(map[netip.Addr]podAddr),
		clientNS:   make(map[netip.Addr]string),
	}
	z.setSerial(serial)
	z.apexNS = one(&mdns.NS{Hdr: hdr(z.origin, mdns.TypeNS, z.ttl), Ns: z.mname()})
	z.nsAddr.add(addrRR(z.mname(), set.dnsAddr, z.ttl))
	z.nsAddr.seal()
	z.version = one(&mdns.TXT{Hdr: hdr("dns-version."+z.origin, mdns.TypeTXT, z.ttl), Txt: []string{SchemaVersion}})

	e := &zoneEdit{z: z}
	for _, svc := range snap.Services {
		e.addService(set, svc)
	}
	for _, p := range snap.Pods {
		e.addPod(set, p, true)
	}
	return z
}

// ServiceName names a service of a snapshot (Server.UpdateServices).
type ServiceName struct{ Namespace, Name string }

// withServices returns the zone of the snapshot of z with the services of remove taken
// out and those of put in place of the ones of their names (or added), at serial. It
// builds the records of the services of put only; the maps it changes are copies (the
// namespaces, the changed namespaces' services, the PTR records), whose values it
// shares with z.
func (z *zone) withServices(set *settings, put []Service, remove []ServiceName, serial uint32) *zone {
	nz := *z
	nz.setSerial(serial)
	nz.namespaces = maps.Clone(z.namespaces)
	nz.ptr = maps.Clone(z.ptr)
	e := &zoneEdit{z: &nz, own: map[string]owned{}}
	for _, r := range remove {
		e.removeService(serviceKey{namespaceName(r.Namespace), strings.ToLower(r.Name)})
	}
	for _, svc := range put {
		e.removeService(serviceKey{namespaceName(svc.Namespace), strings.ToLower(svc.Name)})
		e.addService(set, svc)
	}
	return &nz
}

// withPods returns the zone of the snapshot of z with the pods of remove taken out and
// those of put in place of the ones of their namespace and name (or added), at serial
// (see Server.UpdatePods). It indexes the addresses of the pods of the call only; the
// maps it changes are copies (the namespaces, the changed namespaces' pods, the pod
// addresses and client namespaces), whose values it shares with z.
func (z *zone) withPods(set *settings, put, remove []Pod, serial uint32) *zone {
	nz := *z
	nz.setSerial(serial)
	nz.namespaces = maps.Clone(z.namespaces)
	nz.podAddrs = maps.Clone(z.podAddrs)
	nz.clientNS = maps.Clone(z.clientNS)
	e := &zoneEdit{z: &nz, own: map[string]owned{}}
	for _, p := range remove {
		e.removePod(namespaceName(p.Namespace), p.Name)
	}
	for _, p := range put {
		e.addPod(set, p, false)
	}
	return &nz
}

// setSerial makes the SOA records of serial.
func (z *zone) setSerial(serial uint32) {
	mname, mbox := z.mname(), "hostmaster."+z.origin
	z.soa = one(soa(z.origin, mname, mbox, serial, z.ttl, z.negTTL))
	z.soaNeg = one(soa(z.origin, mname, mbox, serial, z.negTTL, z.negTTL))
	z.reverseSOA4 = one(soa("in-addr.arpa.", mname, mbox, serial, z.negTTL, z.negTTL))
	z.reverseSOA6 = one(soa("ip6.arpa.", mname, mbox, serial, z.negTTL, z.negTTL))
}

func (z *zone) mname() string { return "ns.dns." + z.origin }

// ptrs are the PTR records of a: the services', else the pod's.
func (z *zone) ptrs(a netip.Addr) []mdns.RR {
	if s := z.ptr[a]; s != nil {
		return s.rrs
	}
	return z.podAddrs[a].ptr
}

// zoneEdit changes a zone under construction (buildZone, withServices, withPods).
type zoneEdit struct {
	z *zone
	// own holds the namespaces whose entries this edit made or copied, which it may
	// change, with the maps of each that are its own; nil when it made them all
	// (buildZone).
	own map[string]owned
}

// owned says which maps of a namespace's entry an edit made or copied.
type owned uint8

const (
	ownServices owned = 1 << iota // services and bare
	ownPods                       // pods and podAddrs
)

// namespace returns the entry of namespace name that the edit may change, with the maps
// want names its own: a new entry, or a copy of the previous zone's at the first change,
// whose maps are copied at the first change of each (a change of services does not copy
// the namespace's pods, nor a change of pods its services).
func (e *zoneEdit) namespace(name string, want owned) *namespaceEntry {
	ns := e.z.namespaces[name]
	if ns == nil {
		ns = &namespaceEntry{
			services:    make(map[string]*serviceEntry),
			bare:        make(map[string]struct{}),
			pods:        make(map[string][]netip.Addr),
			podAddrs:    make(map[netip.Addr]int),
			searchFirst: name + ".svc." + e.z.origin,
		}
		e.z.namespaces[name] = ns
		if e.own != nil {
			e.own[name] = ownServices | ownPods
		}
		return ns
	}
	if e.own == nil {
		return ns
	}
	have, copied := e.own[name]
	if !copied {
		c := *ns // searchFirst never changes
		ns = &c
		e.z.namespaces[name] = ns
	}
	if want&^have&ownServices != 0 {
		ns.services = maps.Clone(ns.services)
		ns.bare = maps.Clone(ns.bare)
	}
	if want&^have&ownPods != 0 {
		ns.pods = maps.Clone(ns.pods)
		ns.podAddrs = maps.Clone(ns.podAddrs)
	}
	e.own[name] = have | want
	return ns
}

// removeService takes a service out, with its PTR records; a namespace that nothing
// makes exist any more goes too.
func (e *zoneEdit) removeService(k serviceKey) {
	ns := e.z.namespaces[k.ns]
	if ns == nil {
		return
	}
	svc, recorded := ns.services[k.name]
	_, bare := ns.bare[k.name]
	if !recorded && !bare {
		return
	}
	ns = e.namespace(k.ns, ownServices)
	delete(ns.services, k.name)
	delete(ns.bare, k.name)
	if recorded {
		for _, a := range svc.ptrAddrs {
			e.setPTRs(a, k, nil)
		}
	}
	if ns.empty() {
		delete(e.z.namespaces, k.ns)
	}
}

// setPTRs replaces the PTR records that service k gives address a with rrs.
func (e *zoneEdit) setPTRs(a netip.Addr, k serviceKey, rrs []mdns.RR) {
	var old ptrSet
	if p := e.z.ptr[a]; p != nil {
		old = *p
	}
	s := &ptrSet{}
	n := len(old.rrs) + len(rrs)
	s.rrs, s.owners = make([]mdns.RR, 0, n), make([]serviceKey, 0, n)
	added := len(rrs) == 0
	addK := func() {
		s.rrs = append(s.rrs, rrs...)
		for range rrs {
			s.owners = append(s.owners, k)
		}
		added = true
	}
	for i, o := range old.owners {
		if o == k {
			continue
		}
		if !added && k.compare(o) < 0 {
			addK()
		}
		s.rrs, s.owners = append(s.rrs, old.rrs[i]), append(s.owners, o)
	}
	if !added {
		addK()
	}
	if len(s.rrs) == 0 {
		delete(e.z.ptr, a)
		return
	}
	s.rrs, s.owners = s.rrs[:len(s.rrs):len(s.rrs)], s.owners[:len(s.owners):len(s.owners)]
	e.z.ptr[a] = s
}

func (e *zoneEdit) addService(set *settings, svc Service) {
	z := e.z
	name, nsName := strings.ToLower(svc.Name), namespaceName(svc.Namespace)
	if !isLabel(name) || !isLabel(nsName) {
		set.logf("dns: service %q in namespace %q: not DNS labels, no records", svc.Name, svc.Namespace)
		return
	}
	ns := e.namespace(nsName, ownServices) // the namespace exists even if the service has no records
	_, dup := ns.services[name]
	if _, bare := ns.bare[name]; dup || bare {
		set.logf("dns: service %s/%s: listed twice, the first one wins", nsName, name)
		return
	}
	key := serviceKey{nsName, name}
	fqdn := name + "." + nsName + ".svc." + z.origin
	if svc.ExternalName != "" {
		// Spec 2.5: a CNAME record, and no SRV or PTR records.
		target, ok := externalTarget(svc.ExternalName)
		if !ok {
			set.logf("dns: service %s/%s: external name %q is no DNS name, no records", nsName, name, svc.ExternalName)
			ns.bare[name] = struct{}{}
			return
		}
		ns.services[name] = &serviceEntry{
			cname:  one(&mdns.CNAME{Hdr: hdr(fqdn, mdns.TypeCNAME, z.ttl), Target: target}),
			target: target,
		}
		return
	}
	en := &serviceEntry{protos: make(map[string]map[string]*rrset)}
	// ptrs are the service's PTR records by address, in the order they came.
	ptrs := map[netip.Addr][]mdns.RR{}
	addPTR := func(a netip.Addr, target string) {
		if rr := ptrRR(a, target, z.ttl); rr != nil {
			if _, ok := ptrs[a]; !ok {
				en.ptrAddrs = append(en.ptrAddrs, a)
			}
			ptrs[a] = append(ptrs[a], rr)
		}
	}

	type target struct {
		name string
		set  *rrset
	}
	var targets []target
	if svc.Headless {
		if len(svc.Backends) == 0 {
			ns.bare[name] = struct{}{}
			return // spec 2.4.1: no ready endpoints, NXDOMAIN
		}
		en.hosts = make(map[string]*rrset)
		seen := make(map[netip.Addr]bool)
		backends := slices.Clone(svc.Backends)
		slices.SortFunc(backends, func(a, b Backend) int {
			return cmp.Or(strings.Compare(a.Hostname, b.Hostname), a.Addr.Compare(b.Addr))
		})
		for _, b := range backends {
			if !b.Addr.IsValid() {
				continue
			}
			addr := b.Addr.Unmap()
			host := strings.ToLower(b.Hostname)
			named := host != ""
			if named && !isLabel(host) {
				set.logf("dns: service %s/%s: backend hostname %q is no DNS label, using its address", nsName, name, b.Hostname)
				named = false
			}
			if !named {
				host = dashed(addr)
			}
			hostFQDN := host + "." + fqdn
			h := en.hosts[host]
			if h == nil {
				h = &rrset{}
				en.hosts[host] = h
				targets = append(targets, target{hostFQDN, h})
			}
			h.add(addrRR(hostFQDN, addr, z.ttl))
			if !seen[addr] {
				seen[addr] = true
				en.add(addrRR(fqdn, addr, z.ttl))
			}
			if named { // spec 2.4.3: PTR for a ready endpoint's hostname
				addPTR(addr, hostFQDN)
			}
		}
		for _, h := range en.hosts {
			h.seal()
		}
	} else {
		for _, v := range svc.VIPs {
			if !v.IsValid() {
				continue
			}
			v = v.Unmap()
			en.add(addrRR(fqdn, v, z.ttl))
			addPTR(v, fqdn)
		}
		en.seal()
		targets = []target{{fqdn, &en.rrset}}
	}

	for _, p := range svc.Ports {
		port, proto := strings.ToLower(p.Name), strings.ToLower(p.Protocol)
		if port == "" || !isPortLabel(port) || !isPortLabel(proto) {
			continue // spec: unnamed ports have no SRV record
		}
		srvName := "_" + port + "._" + proto + "." + fqdn
		byPort := en.protos["_"+proto]
		if byPort == nil {
			byPort = make(map[string]*rrset)
			en.protos["_"+proto] = byPort
		}
		s := byPort["_"+port]
		if s == nil {
			s = &rrset{}
			byPort["_"+port] = s
		}
		for _, t := range targets {
			s.srv = append(s.srv, &mdns.SRV{Hdr: hdr(srvName, mdns.TypeSRV, z.ttl), Port: p.Port, Target: t.name})
			s.srvExtra = append(s.srvExtra, t.set.a...)
			s.srvExtra = append(s.srvExtra, t.set.aaaa...)
		}
	}
	for _, byPort := range en.protos {
		for _, s := range byPort {
			// RFC 2782: priority 0 for all, the weight spread evenly.
			w := uint16(max(1, 100/len(s.srv)))
			for _, rr := range s.srv {
				rr.(*mdns.SRV).Weight = w
			}
			s.seal()
		}
	}
	en.seal()
	ns.services[name] = en
	for _, a := range en.ptrAddrs {
		e.setPTRs(a, key, ptrs[a])
	}
}

// addPod adds pod p, or gives the pod of its namespace and name new addresses: p's, or
// when merge both's (buildZone: a snapshot that lists a pod twice makes one pod of both
// entries). The addresses that the pod keeps are not touched.
func (e *zoneEdit) addPod(set *settings, p Pod, merge bool) {
	nsName := namespaceName(p.Namespace)
	if !isLabel(nsName) {
		set.logf("dns: pod %q in namespace %q: namespace is no DNS label, no records", p.Name, p.Namespace)
		return
	}
	addrs := podAddrsOf(p.Addrs)
	if ns := e.z.namespaces[nsName]; ns != nil {
		if prev, ok := ns.pods[p.Name]; ok {
			if merge {
				addrs = podAddrsOf(slices.Concat(prev, addrs))
			}
			if slices.Equal(prev, addrs) {
				return // nothing changes: nothing to copy
			}
		}
	}
	ns := e.namespace(nsName, ownPods)
	prev := ns.pods[p.Name]
	ns.pods[p.Name] = addrs
	for _, a := range prev {
		if _, kept := slices.BinarySearchFunc(addrs, a, netip.Addr.Compare); !kept {
			e.dropPodAddr(ns, nsName, a)
		}
	}
	for _, a := range addrs {
		if _, had := slices.BinarySearchFunc(prev, a, netip.Addr.Compare); !had {
			e.addPodAddr(ns, nsName, a)
		}
	}
}

// removePod takes pod name of namespace nsName out, with its addresses; a namespace that
// nothing makes exist any more goes too.
func (e *zoneEdit) removePod(nsName, name string) {
	ns := e.z.namespaces[nsName]
	if ns == nil {
		return
	}
	prev, ok := ns.pods[name]
	if !ok {
		return
	}
	ns = e.namespace(nsName, ownPods)
	delete(ns.pods, name)
	for _, a := range prev {
		e.dropPodAddr(ns, nsName, a)
	}
	if ns.empty() {
		delete(e.z.namespaces, nsName)
	}
}

// addPodAddr counts one more pod of ns (namespace nsName, an entry the edit owns the
// pods of) holding address a.
func (e *zoneEdit) addPodAddr(ns *namespaceEntry, nsName string, a netip.Addr) {
	ns.podAddrs[a]++
	if ns.podAddrs[a] > 1 {
		return // the namespace held a already
	}
	prev := e.z.podAddrs[a]
	i, _ := slices.BinarySearch(prev.namespaces, nsName)
	nss := make([]string, 0, len(prev.namespaces)+1)
	nss = append(nss, prev.namespaces[:i]...)
	nss = append(nss, nsName)
	nss = append(nss, prev.namespaces[i:]...)
	e.setPodAddr(a, prev, nss)
}

// dropPodAddr counts one pod of ns (namespace nsName, an entry the edit owns the pods
// of) less holding address a.
func (e *zoneEdit) dropPodAddr(ns *namespaceEntry, nsName string, a netip.Addr) {
	if n := ns.podAddrs[a]; n > 1 {
		ns.podAddrs[a] = n - 1
		return // other pods of the namespace hold a
	}
	delete(ns.podAddrs, a)
	prev := e.z.podAddrs[a]
	i, found := slices.BinarySearch(prev.namespaces, nsName)
	if !found {
		return
	}
	nss := make([]string, 0, len(prev.namespaces)-1)
	nss = append(nss, prev.namespaces[:i]...)
	nss = append(nss, prev.namespaces[i+1:]...)
	e.setPodAddr(a, prev, nss)
}

// setPodAddr makes nss (sorted, each once; a new slice) the namespaces of the pods
// holding address a, which prev described, and sets the address's PTR record and client
// namespace accordingly: no pods, no address.
func (e *zoneEdit) setPodAddr(a netip.Addr, prev podAddr, nss []string) {
	z := e.z
	if len(nss) == 0 {
		delete(z.podAddrs, a)
		delete(z.clientNS, a)
		return
	}
	pa := podAddr{namespaces: nss, ptr: prev.ptr}
	if len(prev.namespaces) == 0 || prev.namespaces[0] != nss[0] {
		pa.ptr = nil
		if rr := ptrRR(a, dashed(a)+"."+nss[0]+".pod."+z.origin, z.ttl); rr != nil {
			pa.ptr = one(rr)
		}
	}
	z.podAddrs[a] = pa
	if len(nss) == 1 {
		z.clientNS[a] = nss[0]
	} else {
		z.clientNS[a] = "" // ambiguous: no autopath for this client
	}
}

// podAddrsOf returns the valid addresses of addrs, unmapped, sorted, each once (nil when
// none): the form namespaceEntry.pods holds, so that the same pod is the same value
// whatever the order and repetitions of its addresses.
func podAddrsOf(addrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if a.IsValid() {
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Clip(slices.Compact(out))
}

// namespaceName is the lower-case namespace, api.DefaultNamespace for "".
func namespaceName(ns string) string {
	if ns == "" {
		return api.DefaultNamespace
	}
	return strings.ToLower(ns)
}

// ptrRR is the PTR record of a to target (nil when a has no reverse name).
func ptrRR(a netip.Addr, target string, ttl uint32) mdns.RR {
	rev, err := mdns.ReverseAddr(a.String())
	if err != nil {
		return nil
	}
	return &mdns.PTR{Hdr: hdr(rev, mdns.TypePTR, ttl), Ptr: target}
}

// lookup answers a query for name (lower case, fully qualified, inside the zone).
func (z *zone) lookup(name string, qtype uint16) zoneAnswer {
	rel := name[:len(name)-len(z.origin)]
	if rel == "" {
		return z.apex(qtype)
	}
	rel = rel[:len(rel)-1] // the dot before the origin
	if strings.IndexByte(rel, '\\') >= 0 {
		return nxdomain // an escaped character: none of our names has one
	}
	// labels[0] is the label under the origin, labels[1] the one under it...
	var labels [5]string
	n := 0
	for {
		if n == len(labels) {
			return nxdomain // deeper than any name of the zone
		}
		i := strings.LastIndexByte(rel, '.')
		labels[n] = rel[i+1:]
		n++
		if i < 0 {
			break
		}
		rel = rel[:i]
	}
	switch labels[0] {
	case "dns-version":
		if n > 1 {
			return nxdomain
		}
		if qtype == mdns.TypeTXT || qtype == mdns.TypeANY {
			return zoneAnswer{answer: z.version}
		}
		return zoneAnswer{}
	case "dns":
		switch {
		case n == 1:
			return zoneAnswer{} // empty non-terminal
		case n == 2 && labels[1] == "ns":
			ans, _ := z.nsAddr.records(qtype)
			return zoneAnswer{answer: ans}
		}
		return nxdomain
	case "svc":
		return z.lookupService(labels[1:n], qtype)
	case "pod":
		return z.lookupPod(name, labels[1:n], qtype)
	}
	return nxdomain
}

func (z *zone) apex(qtype uint16) zoneAnswer {
	switch qtype {
	case mdns.TypeSOA:
		return zoneAnswer{answer: z.soa}
	case mdns.TypeNS:
		return zoneAnswer{answer: z.apexNS, extra: concat(z.nsAddr.a, z.nsAddr.aaaa)}
	case mdns.TypeANY:
		return zoneAnswer{answer: concat(z.soa, z.apexNS)}
	}
	return zoneAnswer{}
}

// lookupService answers names under svc.<zone>: labels are namespace, service,
// then hostname or _proto, then _port.
func (z *zone) lookupService(labels []string, qtype uint16) zoneAnswer {
	if len(labels) == 0 {
		return zoneAnswer{} // svc.<zone>: empty non-terminal
	}
	ns := z.namespaces[labels[0]]
	if ns == nil {
		return nxdomain
	}
	if len(labels) == 1 {
		return zoneAnswer{} // <ns>.svc.<zone> of an existing namespace
	}
	svc := ns.services[labels[1]]
	if svc == nil {
		return nxdomain
	}
	var set *rrset
	switch {
	case len(labels) == 2 && svc.cname != nil:
		if qtype == mdns.TypeCNAME || qtype == mdns.TypeANY {
			return zoneAnswer{answer: svc.cname} // the CNAME is what was asked for
		}
		return zoneAnswer{answer: svc.cname, target: svc.target}
	case len(labels) == 2:
		set = &svc.rrset
	case strings.HasPrefix(labels[2], "_"):
		byPort := svc.protos[labels[2]]
		if byPort == nil {
			return nxdomain
		}
		if len(labels) == 3 {
			return zoneAnswer{} // _<proto>.<svc>...: empty non-terminal
		}
		if set = byPort[labels[3]]; set == nil || len(labels) > 4 {
			return nxdomain
		}
	default:
		if set = svc.hosts[labels[2]]; set == nil || len(labels) > 3 {
			return nxdomain
		}
	}
	ans, extra := set.records(qtype)
	return zoneAnswer{answer: ans, extra: extra}
}

// lookupPod answers names under pod.<zone>: <ns>, then the dashed address. Only the
// addresses of the namespace's pods exist (CoreDNS's "pods verified" mode: "insecure"
// would let anyone mint a name in any namespace for any address).
func (z *zone) lookupPod(name string, labels []string, qtype uint16) zoneAnswer {
	if len(labels) == 0 {
		return zoneAnswer{}
	}
	ns := z.namespaces[labels[0]]
	if ns == nil {
		return nxdomain
	}
	if len(labels) == 1 {
		return zoneAnswer{}
	}
	if len(labels) > 2 {
		return nxdomain
	}
	a, ok := undash(labels[1])
	if !ok {
		return nxdomain
	}
	if _, ok := ns.podAddrs[a]; !ok {
		return nxdomain
	}
	rr := addrRR(name, a, z.ttl)
	switch {
	case qtype == mdns.TypeANY,
		qtype == mdns.TypeA && a.Is4(),
		qtype == mdns.TypeAAAA && a.Is6():
		return zoneAnswer{answer: []mdns.RR{rr}}
	}
	return zoneAnswer{}
}

func (r *rrset) add(rr mdns.RR) {
	switch rr.(type) {
	case *mdns.A:
		r.a = append(r.a, rr)
	case *mdns.AAAA:
		r.aaaa = append(r.aaaa, rr)
	}
}

// seal trims the capacities so that no append on a shared slice writes into the index.
func (r *rrset) seal() {
	r.a = r.a[:len(r.a):len(r.a)]
	r.aaaa = r.aaaa[:len(r.aaaa):len(r.aaaa)]
	r.srv = r.srv[:len(r.srv):len(r.srv)]
	r.srvExtra = r.srvExtra[:len(r.srvExtra):len(r.srvExtra)]
}

func hdr(name string, t uint16, ttl uint32) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: ttl}
}

func addrRR(name string, a netip.Addr, ttl uint32) mdns.RR {
	if a.Is4() {
		return &mdns.A{Hdr: hdr(name, mdns.TypeA, ttl), A: net.IP(a.AsSlice())}
	}
	return &mdns.AAAA{Hdr: hdr(name, mdns.TypeAAAA, ttl), AAAA: net.IP(a.AsSlice())}
}

func soa(zone, mname, mbox string, serial, ttl, minTTL uint32) mdns.RR {
	return &mdns.SOA{
		Hdr: hdr(zone, mdns.TypeSOA, ttl), Ns: mname, Mbox: mbox, Serial: serial,
		Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: minTTL,
	}
}

func one(rr mdns.RR) []mdns.RR { return []mdns.RR{rr} }

// concat joins record slices into a new one (nil when all are empty).
func concat(sets ...[]mdns.RR) []mdns.RR {
	n := 0
	for _, s := range sets {
		n += len(s)
	}
	if n == 0 {
		return nil
	}
	out := make([]mdns.RR, 0, n)
	for _, s := range sets {
		out = append(out, s...)
	}
	return out
}

// dashed renders an address as one label: 10-0-0-5, fd00--5 (CoreDNS's form of an
// endpoint without hostname and of pod names).
func dashed(a netip.Addr) string {
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.String(), ":", "-")
}

// undash parses a dashed address label (any spelling of the IPv6 form).
func undash(label string) (netip.Addr, bool) {
	if strings.Count(label, "-") == 3 {
		if a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ".")); err == nil && a.Is4() {
			return a, true
		}
	}
	a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ":"))
	if err != nil || !a.Is6() || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// isLabel reports whether s is a lower-case DNS label of letters, digits and hyphens
// (RFC 1123; Kubernetes names are such labels).
func isLabel(s string) bool {
	return len(s) <= 63 && s != "" && s[0] != '-' && s[len(s)-1] != '-' && lowerAlnumHyphen(s)
}

// isPortLabel accepts port names and protocols (letters, digits, hyphens).
func isPortLabel(s string) bool {
	return s != "" && len(s) <= 62 && lowerAlnumHyphen(s)
}

// lowerAlnumHyphen reports whether s has only lower-case letters, digits and hyphens.
func lowerAlnumHyphen(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// externalTarget returns the target of an ExternalName service's CNAME: name in lower
// case, fully qualified. It accepts what Kubernetes accepts (a DNS subdomain of RFC 1123,
// with or without the final dot) and reports false for anything else.
func externalTarget(name string) (string, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" || len(name) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(name, ".") {
		if !isLabel(label) {
			return "", false
		}
	}
	return name + ".", true
}

// isDomain reports whether d (lower case, no trailing dot) is a domain name of labels of
// letters, digits, hyphens and underscores: what search domains and zones are made of.
func isDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}
