package etcdstore

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/store"
)

// The store.Tx methods. Inputs are checked as the bbolt store checks them, with the
// same errors.

var _ store.Tx = (*tx)(nil)

func (t *tx) Network(name string) (api.Network, bool, error) {
	if name == "" {
		return api.Network{}, false, nil
	}
	v, ok, err := t.get(t.s.layout.networkKey(name), t.s.layout.networks())
	if err != nil || !ok {
		return api.Network{}, false, err
	}
	n, err := decodeNetwork(name, v)
	if err != nil {
		return api.Network{}, false, err
	}
	return n, true, nil
}

// decodeNetwork decodes a network record. The name comes from the key: JSON turns
// bytes that are not UTF-8 into U+FFFD, the key keeps them.
func decodeNetwork(name string, v []byte) (api.Network, error) {
	var n api.Network
	if err := json.Unmarshal(v, &n); err != nil {
		return api.Network{}, fmt.Errorf("decode network %q: %w", name, err)
	}
	n.Name = name
	return n, nil
}

func (t *tx) Networks() ([]api.Network, error) {
	c := t.s.layout.networks()
	kvs, err := t.list(c)
	if err != nil {
		return nil, err
	}
	var ns []api.Network
	for _, x := range kvs {
		name, err := segments(x.key, c.prefix, 1)
		if err != nil {
			return nil, err
		}
		n, err := decodeNetwork(name[0], x.val)
		if err != nil {
			return nil, err
		}
		ns = append(ns, n)
	}
	slices.SortFunc(ns, func(a, b api.Network) int { return strings.Compare(a.Name, b.Name) })
	return ns, nil
}

func (t *tx) PutNetwork(n api.Network) error {
	op := fmt.Sprintf("put network %q", n.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if n.Name == "" {
		return fmt.Errorf("%s: empty name", op)
	}
	v, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.networkKey(n.Name), v)
	return nil
}

func (t *tx) DeleteNetwork(name string) error {
	op := fmt.Sprintf("delete network %q", name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok, err := t.Network(name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.networkKey(name))
	t.clear(l.endpoints(name).prefix)
	t.clear(l.allocations(name).prefix)
	t.clear(l.ownersOf(name))
	t.clear(l.cursors(name).prefix)
	t.clear(l.blocks(name).prefix)
	t.del(l.endpointsGen(name).key)
	t.del(l.allocationsGen(name).key)
	t.del(l.blocksGen(name).key)
	t.bump(l.networksGen())
	return nil
}

// validEndpointKey reports whether k can be stored: bolt separates the container id
// from the interface name with a NUL, so both stores refuse one inside them.
func validEndpointKey(k api.EndpointKey) bool {
	return strings.IndexByte(k.ContainerID, 0) < 0 && strings.IndexByte(k.IfName, 0) < 0
}

func decodeEndpoint(k api.EndpointKey, v []byte) (api.Endpoint, error) {
	var ep api.Endpoint
	if err := json.Unmarshal(v, &ep); err != nil {
		return api.Endpoint{}, fmt.Errorf("decode endpoint %s: %w", k, err)
	}
	ep.EndpointKey = k
	return ep, nil
}

func (t *tx) Endpoint(k api.EndpointKey) (api.Endpoint, bool, error) {
	if k.Network == "" || !validEndpointKey(k) {
		return api.Endpoint{}, false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.endpointKey(k.Network, k.ContainerID, k.IfName), l.endpoints(k.Network))
	if err != nil || !ok {
		return api.Endpoint{}, false, err
	}
	ep, err := decodeEndpoint(k, v)
	if err != nil {
		return api.Endpoint{}, false, err
	}
	return ep, true, nil
}

func (t *tx) Endpoints(network string) ([]api.Endpoint, error) {
	l := t.s.layout
	kvs, err := t.list(l.endpoints(network))
	if err != nil {
		return nil, err
	}
	var eps []api.Endpoint
	for _, x := range kvs {
		seg, err := segments(x.key, l.endpoints("").prefix, 3)
		if err != nil {
			return nil, err
		}
		ep, err := decodeEndpoint(api.EndpointKey{Network: seg[0], ContainerID: seg[1], IfName: seg[2]}, x.val)
		if err != nil {
			return nil, err
		}
		eps = append(eps, ep)
	}
	slices.SortFunc(eps, func(a, b api.Endpoint) int {
		return cmp.Or(
			strings.Compare(a.Network, b.Network),
			strings.Compare(a.ContainerID, b.ContainerID),
			strings.Compare(a.IfName, b.IfName),
		)
	})
	return eps, nil
}

func (t *tx) PutEndpoint(ep api.Endpoint) error {
	op := fmt.Sprintf("put endpoint %s", ep.EndpointKey)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if !validEndpointKey(ep.EndpointKey) {
		return fmt.Errorf("%s: container id or interface name contains NUL", op)
	}
	if _, ok, err := t.Network(ep.Network); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: network %q: %w", op, ep.Network, store.ErrNotFound)
	}
	v, err := json.Marshal(ep)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.endpointKey(ep.Network, ep.ContainerID, ep.IfName), v)
	return nil
}

func (t *tx) DeleteEndpoint(k api.EndpointKey) error {
	op := fmt.Sprintf("delete endpoint %s", k)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok, err := t.Endpoint(k); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.endpointKey(k.Network, k.ContainerID, k.IfName))
	t.bump(l.endpointsGen(k.Network))
	return nil
}

func (t *tx) Allocation(network string, a netip.Addr) (string, bool, error) {
	if network == "" || !a.IsValid() {
		return "", false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.allocationKey(network, a), l.allocations(network))
	if err != nil || !ok {
		return "", false, err
	}
	return string(v), true, nil
}

func (t *tx) Allocations(network string) (map[netip.Addr]string, error) {
	m := make(map[netip.Addr]string)
	if network == "" {
		return m, nil
	}
	c := t.s.layout.allocations(network)
	kvs, err := t.list(c)
	if err != nil {
		return nil, err
	}
	for _, x := range kvs {
		a, err := parseAddrKey(x.key, c.prefix)
		if err != nil {
			return nil, fmt.Errorf("decode allocation in network %q: %w", network, err)
		}
		m[a] = string(x.val)
	}
	return m, nil
}

// parseAddrKey decodes the address that is the last segment of key, under prefix.
func parseAddrKey(key, prefix string) (netip.Addr, error) {
	seg, err := segments(key, prefix, 1)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(seg[0])
	if err != nil {
		return netip.Addr{}, fmt.Errorf("key %q: %w", key, err)
	}
	return a, nil
}

// validOwner refuses what bolt refuses: its owner index separates the owner from the
// address with a NUL.
func validOwner(owner string) bool { return owner != "" && strings.IndexByte(owner, 0) < 0 }

// AllocationsOf implements store.Tx with a prefix read of the owner index.
func (t *tx) AllocationsOf(network, owner string) ([]netip.Addr, error) {
	if network == "" || !validOwner(owner) {
		return nil, nil
	}
	c := t.s.layout.owners(network, owner)
	kvs, err := t.list(c)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, x := range kvs {
		a, err := parseAddrKey(x.key, c.prefix)
		if err != nil {
			return nil, fmt.Errorf("decode owner index of network %q: %w", network, err)
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

func (t *tx) PutAllocation(network string, a netip.Addr, owner string) error {
	op := fmt.Sprintf("put allocation %s in network %q", a, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	switch {
	case !validOwner(owner):
		return fmt.Errorf("%s: owner %q: empty or holding NUL", op, owner)
	case !a.IsValid():
		return fmt.Errorf("%s: invalid address", op)
	case network == "":
		return fmt.Errorf("%s: empty network name", op)
	}
	old, taken, err := t.Allocation(network, a)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	l := t.s.layout
	if taken && old != owner {
		t.del(l.ownerKey(network, old, a))
		t.bump(l.allocationsGen(network))
	}
	t.put(l.allocationKey(network, a), []byte(owner))
	t.put(l.ownerKey(network, owner, a), nil)
	return nil
}

func (t *tx) DeleteAllocation(network string, a netip.Addr) error {
	op := fmt.Sprintf("delete allocation %s in network %q", a, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	owner, ok, err := t.Allocation(network, a)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.allocationKey(network, a))
	t.del(l.ownerKey(network, owner, a))
	t.bump(l.allocationsGen(network))
	return nil
}

func (t *tx) Cursor(network string, subnet netip.Prefix) (netip.Addr, bool, error) {
	if network == "" || !subnet.IsValid() {
		return netip.Addr{}, false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.cursorKey(network, subnet), l.cursors(network))
	if err != nil || !ok {
		return netip.Addr{}, false, err
	}
	a, err := netip.ParseAddr(string(v))
	if err != nil {
		return netip.Addr{}, false, fmt.Errorf("decode cursor of subnet %s in network %q: %w", subnet, network, err)
	}
	return a, true, nil
}

func (t *tx) PutCursor(network string, subnet netip.Prefix, a netip.Addr) error {
	op := fmt.Sprintf("put cursor of subnet %s in network %q", subnet, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	switch {
	case !subnet.IsValid():
		return fmt.Errorf("%s: invalid subnet", op)
	case !a.IsValid():
		return fmt.Errorf("%s: invalid address", op)
	case network == "":
		return fmt.Errorf("%s: empty network name", op)
	}
	t.put(t.s.layout.cursorKey(network, subnet), []byte(a.String()))
	return nil
}

func portName(proto string, port uint16) string { return fmt.Sprintf("%s/%d", proto, port) }

func (t *tx) PortOwners(node, proto string, port uint16) (map[netip.Addr]string, error) {
	if node == "" {
		return make(map[netip.Addr]string), nil
	}
	c := t.s.layout.ports(node, proto, port)
	kvs, err := t.list(c)
	if err != nil {
		return nil, err
	}
	m := make(map[netip.Addr]string, len(kvs))
	for _, x := range kvs {
		seg, err := segments(x.key, c.prefix, 1)
		if err != nil {
			return nil, err
		}
		a, err := parsePortHost(seg[0])
		if err != nil {
			return nil, fmt.Errorf("decode port key %q: %w", x.key, err)
		}
		m[a] = string(x.val)
	}
	return m, nil
}

func (t *tx) PutPort(node, proto string, hostIP netip.Addr, port uint16, owner string) error {
	op := fmt.Sprintf("put port %s %s of node %q", portName(proto, port), hostIP, node)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckPort(node, proto, owner); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	t.put(t.s.layout.portKey(node, proto, port, hostIP), []byte(owner))
	return nil
}

func (t *tx) DeletePort(node, proto string, hostIP netip.Addr, port uint16) error {
	op := fmt.Sprintf("delete port %s %s of node %q", portName(proto, port), hostIP, node)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if node == "" {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	key := l.portKey(node, proto, port, hostIP)
	if _, ok, err := t.get(key, l.ports(node, proto, port)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	t.del(key)
	t.bump(l.portsGen(node))
	return nil
}

// decodeService decodes the record v of service namespace/name under key, or hands out a
// copy of its last decoding (store.DecodedServices).
func (t *tx) decodeService(key, namespace, name string, v []byte) (api.Service, error) {
	svc, err := t.s.services.Decode(key, v, func(v []byte) (svc api.Service, err error) {
		err = json.Unmarshal(v, &svc)
		svc.Namespace, svc.Name = namespace, name
		return svc, err
	})
	if err != nil {
		return api.Service{}, fmt.Errorf("decode service %s/%s: %w", namespace, name, err)
	}
	return svc, nil
}

func (t *tx) Service(namespace, name string) (api.Service, bool, error) {
	if validService(namespace, name) != nil {
		return api.Service{}, false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.serviceKey(namespace, name), l.services(namespace))
	if err != nil || !ok {
		return api.Service{}, false, err
	}
	svc, err := t.decodeService(l.serviceKey(namespace, name), namespace, name, v)
	if err != nil {
		return api.Service{}, false, err
	}
	return svc, true, nil
}

func (t *tx) Services(namespace string) ([]api.Service, error) {
	l := t.s.layout
	kvs, err := t.list(l.services(namespace))
	if err != nil {
		return nil, err
	}
	var out []api.Service
	var seen map[string]bool // the keys of a full listing
	if namespace == "" {
		seen = map[string]bool{}
	}
	for _, x := range kvs {
		seg, err := segments(x.key, l.services("").prefix, 2)
		if err != nil {
			return nil, err
		}
		svc, err := t.decodeService(x.key, seg[0], seg[1], x.val)
		if err != nil {
			return nil, err
		}
		out = append(out, svc)
		if seen != nil {
			seen[x.key] = true
		}
	}
	if seen != nil {
		t.s.services.Keep(seen)
	}
	slices.SortFunc(out, func(a, b api.Service) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

func (t *tx) PutService(svc api.Service) error {
	op := fmt.Sprintf("put service %s/%s", svc.Namespace, svc.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := validService(svc.Namespace, svc.Name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	svc.Backends = nil // derived, never stored
	v, err := json.Marshal(svc)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.serviceKey(svc.Namespace, svc.Name), v)
	return nil
}

func (t *tx) DeleteService(namespace, name string) error {
	op := fmt.Sprintf("delete service %s/%s", namespace, name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok, err := t.Service(namespace, name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.serviceKey(namespace, name))
	t.bump(l.servicesGen())
	return nil
}

// decodeNetworkPolicy decodes a policy record. The namespace and the name come from
// the key.
func decodeNetworkPolicy(namespace, name string, v []byte) (api.NetworkPolicy, error) {
	var p api.NetworkPolicy
	if err := json.Unmarshal(v, &p); err != nil {
		return api.NetworkPolicy{}, fmt.Errorf("decode network policy %s/%s: %w", namespace, name, err)
	}
	p.Namespace, p.Name = namespace, name
	return p, nil
}

func (t *tx) NetworkPolicy(namespace, name string) (api.NetworkPolicy, bool, error) {
	if store.CheckNetworkPolicy(api.NetworkPolicy{Namespace: namespace, Name: name}) != nil {
		return api.NetworkPolicy{}, false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.networkPolicyKey(namespace, name), l.networkPolicies(namespace))
	if err != nil || !ok {
		return api.NetworkPolicy{}, false, err
	}
	p, err := decodeNetworkPolicy(namespace, name, v)
	if err != nil {
		return api.NetworkPolicy{}, false, err
	}
	return p, true, nil
}

func (t *tx) NetworkPolicies(namespace string) ([]api.NetworkPolicy, error) {
	if namespace != "" && store.CheckNamespace(api.Namespace{Name: namespace}) != nil {
		return nil, nil // bolt cannot hold it: nothing to list
	}
	l := t.s.layout
	kvs, err := t.list(l.networkPolicies(namespace))
	if err != nil {
		return nil, err
	}
	var out []api.NetworkPolicy
	for _, x := range kvs {
		seg, err := segments(x.key, l.networkPolicies("").prefix, 2)
		if err != nil {
			return nil, err
		}
		p, err := decodeNetworkPolicy(seg[0], seg[1], x.val)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b api.NetworkPolicy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

func (t *tx) PutNetworkPolicy(p api.NetworkPolicy) error {
	op := fmt.Sprintf("put network policy %s/%s", p.Namespace, p.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckNetworkPolicy(p); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.networkPolicyKey(p.Namespace, p.Name), v)
	return nil
}

func (t *tx) DeleteNetworkPolicy(namespace, name string) error {
	op := fmt.Sprintf("delete network policy %s/%s", namespace, name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok, err := t.NetworkPolicy(namespace, name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.networkPolicyKey(namespace, name))
	t.bump(l.networkPoliciesGen())
	return nil
}

// decodeNamespace decodes a namespace record. The name comes from the key.
func decodeNamespace(name string, v []byte) (api.Namespace, error) {
	var ns api.Namespace
	if err := json.Unmarshal(v, &ns); err != nil {
		return api.Namespace{}, fmt.Errorf("decode namespace %q: %w", name, err)
	}
	ns.Name = name
	return ns, nil
}

func (t *tx) Namespace(name string) (api.Namespace, bool, error) {
	if store.CheckNamespace(api.Namespace{Name: name}) != nil {
		return api.Namespace{}, false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.namespaceKey(name), l.namespaces())
	if err != nil || !ok {
		return api.Namespace{}, false, err
	}
	ns, err := decodeNamespace(name, v)
	if err != nil {
		return api.Namespace{}, false, err
	}
	return ns, true, nil
}

func (t *tx) Namespaces() ([]api.Namespace, error) {
	c := t.s.layout.namespaces()
	kvs, err := t.list(c)
	if err != nil {
		return nil, err
	}
	var out []api.Namespace
	for _, x := range kvs {
		name, err := segments(x.key, c.prefix, 1)
		if err != nil {
			return nil, err
		}
		ns, err := decodeNamespace(name[0], x.val)
		if err != nil {
			return nil, err
		}
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b api.Namespace) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (t *tx) PutNamespace(ns api.Namespace) error {
	op := fmt.Sprintf("put namespace %q", ns.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckNamespace(ns); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(ns)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.namespaceKey(ns.Name), v)
	return nil
}

func (t *tx) DeleteNamespace(name string) error {
	op := fmt.Sprintf("delete namespace %q", name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok, err := t.Namespace(name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.namespaceKey(name))
	t.bump(l.namespacesGen())
	return nil
}

// decodePod decodes a pod record. The namespace and the name come from the key.
func decodePod(namespace, name string, v []byte) (api.Pod, error) {
	var p api.Pod
	if err := json.Unmarshal(v, &p); err != nil {
		return api.Pod{}, fmt.Errorf("decode pod %s/%s: %w", namespace, name, err)
	}
	p.Namespace, p.Name = namespace, name
	return p, nil
}

func (t *tx) Pod(namespace, name string) (api.Pod, bool, error) {
	if store.CheckPod(api.Pod{Namespace: namespace, Name: name}) != nil {
		return api.Pod{}, false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.podKey(namespace, name), l.pods(namespace))
	if err != nil || !ok {
		return api.Pod{}, false, err
	}
	p, err := decodePod(namespace, name, v)
	if err != nil {
		return api.Pod{}, false, err
	}
	return p, true, nil
}

func (t *tx) Pods(namespace string) ([]api.Pod, error) {
	if namespace != "" && store.CheckNamespace(api.Namespace{Name: namespace}) != nil {
		return nil, nil // bolt cannot hold it: nothing to list
	}
	l := t.s.layout
	kvs, err := t.list(l.pods(namespace))
	if err != nil {
		return nil, err
	}
	var out []api.Pod
	for _, x := range kvs {
		seg, err := segments(x.key, l.pods("").prefix, 2)
		if err != nil {
			return nil, err
		}
		p, err := decodePod(seg[0], seg[1], x.val)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b api.Pod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

func (t *tx) PutPod(p api.Pod) error {
	op := fmt.Sprintf("put pod %s/%s", p.Namespace, p.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckPod(p); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.podKey(p.Namespace, p.Name), v)
	return nil
}

func (t *tx) DeletePod(namespace, name string) error {
	op := fmt.Sprintf("delete pod %s/%s", namespace, name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok, err := t.Pod(namespace, name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.podKey(namespace, name))
	t.bump(l.podsGen())
	return nil
}

// decodeNode decodes a node record. The name comes from the key; Alive is not stored.
func decodeNode(name string, v []byte) (api.Node, error) {
	var n api.Node
	if err := json.Unmarshal(v, &n); err != nil {
		return api.Node{}, fmt.Errorf("decode node %q: %w", name, err)
	}
	n.Name, n.Alive = name, false
	return n, nil
}

func (t *tx) Node(name string) (api.Node, bool, error) {
	if name == "" {
		return api.Node{}, false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.nodeKey(name), l.nodes())
	if err != nil || !ok {
		return api.Node{}, false, err
	}
	n, err := decodeNode(name, v)
	if err != nil {
		return api.Node{}, false, err
	}
	return n, true, nil
}

func (t *tx) Nodes() ([]api.Node, error) {
	c := t.s.layout.nodes()
	kvs, err := t.list(c)
	if err != nil {
		return nil, err
	}
	var ns []api.Node
	for _, x := range kvs {
		name, err := segments(x.key, c.prefix, 1)
		if err != nil {
			return nil, err
		}
		n, err := decodeNode(name[0], x.val)
		if err != nil {
			return nil, err
		}
		ns = append(ns, n)
	}
	slices.SortFunc(ns, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
	return ns, nil
}

func (t *tx) PutNode(n api.Node) error {
	op := fmt.Sprintf("put node %q", n.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckNode(n); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	n.Alive = false // read from the leases, never stored
	v, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.nodeKey(n.Name), v)
	return nil
}

func (t *tx) DeleteNode(name string) error {
	op := fmt.Sprintf("delete node %q", name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok, err := t.Node(name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.nodeKey(name))
	t.bump(l.nodesGen())
	return nil
}

// decodeBlock decodes a block record. Network and prefix come from the key.
func decodeBlock(network string, p netip.Prefix, v []byte) (api.Block, error) {
	var b api.Block
	if err := json.Unmarshal(v, &b); err != nil {
		return api.Block{}, fmt.Errorf("decode block %s in network %q: %w", p, network, err)
	}
	b.Network, b.Prefix = network, p
	return b, nil
}

func (t *tx) Block(network string, prefix netip.Prefix) (api.Block, bool, error) {
	if network == "" || !store.IsBlockPrefix(prefix) {
		return api.Block{}, false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.blockKey(network, prefix), l.blocks(network))
	if err != nil || !ok {
		return api.Block{}, false, err
	}
	b, err := decodeBlock(network, prefix, v)
	if err != nil {
		return api.Block{}, false, err
	}
	return b, true, nil
}

func (t *tx) Blocks(network string) ([]api.Block, error) {
	l := t.s.layout
	kvs, err := t.list(l.blocks(network))
	if err != nil {
		return nil, err
	}
	var out []api.Block
	for _, x := range kvs {
		seg, err := segments(x.key, l.blocks("").prefix, 2)
		if err != nil {
			return nil, err
		}
		p, err := netip.ParsePrefix(seg[1])
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", x.key, err)
		}
		b, err := decodeBlock(seg[0], p, x.val)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b api.Block) int {
		return cmp.Or(strings.Compare(a.Network, b.Network), a.Prefix.Compare(b.Prefix))
	})
	return out, nil
}

func (t *tx) PutBlock(b api.Block) error {
	op := fmt.Sprintf("put block %s in network %q", b.Prefix, b.Network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckBlock(b); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if _, ok, err := t.Network(b.Network); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: network %q: %w", op, b.Network, store.ErrNotFound)
	}
	v, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.blockKey(b.Network, b.Prefix), v)
	return nil
}

func (t *tx) DeleteBlock(network string, prefix netip.Prefix) error {
	op := fmt.Sprintf("delete block %s in network %q", prefix, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok, err := t.Block(network, prefix); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.blockKey(network, prefix))
	t.bump(l.blocksGen(network))
	return nil
}

func (t *tx) BGPConfig() (api.BGPConfig, bool, error) {
	l := t.s.layout
	v, ok, err := t.get(l.bgpConfigKey(), l.bgpConfig())
	if err != nil || !ok {
		return api.BGPConfig{}, false, err
	}
	var c api.BGPConfig
	if err := json.Unmarshal(v, &c); err != nil {
		return api.BGPConfig{}, false, fmt.Errorf("decode bgp config: %w", err)
	}
	return c, true, nil
}

func (t *tx) PutBGPConfig(c api.BGPConfig) error {
	const op = "put bgp config"
	if err := t.checkWritable(op); err != nil {
		return err
	}
	v, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.bgpConfigKey(), v)
	return nil
}

// decodeBGPPeer decodes a peer record. The name comes from the key.
func decodeBGPPeer(name string, v []byte) (api.BGPPeer, error) {
	var p api.BGPPeer
	if err := json.Unmarshal(v, &p); err != nil {
		return api.BGPPeer{}, fmt.Errorf("decode bgp peer %q: %w", name, err)
	}
	p.Name = name
	return p, nil
}

func (t *tx) BGPPeer(name string) (api.BGPPeer, bool, error) {
	if name == "" {
		return api.BGPPeer{}, false, nil
	}
	l := t.s.layout
	v, ok, err := t.get(l.bgpPeerKey(name), l.bgpPeers())
	if err != nil || !ok {
		return api.BGPPeer{}, false, err
	}
	p, err := decodeBGPPeer(name, v)
	if err != nil {
		return api.BGPPeer{}, false, err
	}
	return p, true, nil
}

func (t *tx) BGPPeers() ([]api.BGPPeer, error) {
	c := t.s.layout.bgpPeers()
	kvs, err := t.list(c)
	if err != nil {
		return nil, err
	}
	var ps []api.BGPPeer
	for _, x := range kvs {
		name, err := segments(x.key, c.prefix, 1)
		if err != nil {
			return nil, err
		}
		p, err := decodeBGPPeer(name[0], x.val)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b api.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	return ps, nil
}

func (t *tx) PutBGPPeer(p api.BGPPeer) error {
	op := fmt.Sprintf("put bgp peer %q", p.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckBGPPeer(p); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	v, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	t.put(t.s.layout.bgpPeerKey(p.Name), v)
	return nil
}

func (t *tx) DeleteBGPPeer(name string) error {
	op := fmt.Sprintf("delete bgp peer %q", name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok, err := t.BGPPeer(name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	l := t.s.layout
	t.del(l.bgpPeerKey(name))
	t.bump(l.bgpPeersGen())
	return nil
}
