// Package storetest holds an in-memory store.Store for tests and the conformance suite
// that every store implementation passes.
package storetest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/store"
)

// errClosed is returned by a Memory that has been closed.
var errClosed = errors.New("store is closed")

// Memory is an in-memory store.Store with the transaction semantics of the real ones:
// Update works on a private copy that replaces the committed state only when fn
// returns nil, Updates run one at a time, and View reads a snapshot that no concurrent
// Update changes. Liveness and Watch are those of store.Bolt (see
// store.LocalLiveness). The zero value is not usable: call NewMemory.
type Memory struct {
	// writeMu serializes Updates.
	writeMu sync.Mutex

	// mu guards state and closed. A committed state is never modified (an Update
	// builds a new one), so a View may keep reading it after releasing mu.
	mu     sync.Mutex
	state  *memState
	closed bool

	local store.LocalLiveness
}

var _ store.Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{state: newMemState()}
}

type memState struct {
	networks   map[string]api.Network
	endpoints  map[api.EndpointKey]api.Endpoint
	allocs     map[string]map[netip.Addr]string
	cursors    map[string]map[netip.Prefix]netip.Addr
	ports      map[[2]string]map[netip.Addr]string // (node, "proto/port") -> host address -> owner
	services   map[[2]string]api.Service           // (namespace, name) -> service
	policies   map[[2]string]api.NetworkPolicy     // (namespace, name) -> policy
	namespaces map[string]api.Namespace
	pods       map[[2]string]api.Pod // (namespace, name) -> pod
	nodes      map[string]api.Node
	blocks     map[string]map[netip.Prefix]api.Block // network -> prefix -> block
	bgpConfig  *api.BGPConfig                        // nil until put
	bgpPeers   map[string]api.BGPPeer
}

func newMemState() *memState {
	return &memState{
		networks:   make(map[string]api.Network),
		endpoints:  make(map[api.EndpointKey]api.Endpoint),
		allocs:     make(map[string]map[netip.Addr]string),
		cursors:    make(map[string]map[netip.Prefix]netip.Addr),
		ports:      make(map[[2]string]map[netip.Addr]string),
		services:   make(map[[2]string]api.Service),
		policies:   make(map[[2]string]api.NetworkPolicy),
		namespaces: make(map[string]api.Namespace),
		pods:       make(map[[2]string]api.Pod),
		nodes:      make(map[string]api.Node),
		blocks:     make(map[string]map[netip.Prefix]api.Block),
		bgpPeers:   make(map[string]api.BGPPeer),
	}
}

// clone copies s deeply enough that writes to the copy never reach s: values are
// cloned again on every read and write, so sharing them here is safe.
func (s *memState) clone() *memState {
	c := &memState{
		networks:   maps.Clone(s.networks),
		endpoints:  maps.Clone(s.endpoints),
		allocs:     make(map[string]map[netip.Addr]string, len(s.allocs)),
		cursors:    make(map[string]map[netip.Prefix]netip.Addr, len(s.cursors)),
		ports:      make(map[[2]string]map[netip.Addr]string, len(s.ports)),
		services:   maps.Clone(s.services),
		policies:   maps.Clone(s.policies),
		namespaces: maps.Clone(s.namespaces),
		pods:       maps.Clone(s.pods),
		nodes:      maps.Clone(s.nodes),
		blocks:     make(map[string]map[netip.Prefix]api.Block, len(s.blocks)),
		bgpConfig:  s.bgpConfig, // replaced, never modified
		bgpPeers:   maps.Clone(s.bgpPeers),
	}
	for k, v := range s.blocks {
		c.blocks[k] = maps.Clone(v)
	}
	for k, v := range s.ports {
		c.ports[k] = maps.Clone(v)
	}
	for k, v := range s.allocs {
		c.allocs[k] = maps.Clone(v)
	}
	for k, v := range s.cursors {
		c.cursors[k] = maps.Clone(v)
	}
	return c
}

// Clone returns a store that holds m's committed state, as a process restarted after a
// crash finds it on disk: later writes to either do not reach the other. The nodes and
// blocks are kept, the registrations are not. It works on a closed store too.
func (m *Memory) Clone() *Memory {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &Memory{state: m.state} // committed states are never modified
}

func (m *Memory) snapshot() (*memState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	return m.state, nil
}

// View runs fn on a snapshot of the committed state.
func (m *Memory) View(fn func(store.Tx) error) error {
	s, err := m.snapshot()
	if err != nil {
		return err
	}
	return fn(&memTx{s: s})
}

// Update runs fn on a copy of the committed state and commits the copy when fn
// returns nil.
func (m *Memory) Update(fn func(store.Tx) error) error {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	s, err := m.snapshot()
	if err != nil {
		return err
	}
	t := &memTx{s: s.clone(), writable: true}
	if err := fn(t); err != nil {
		return err
	}
	if err := m.commit(t.s); err != nil {
		return err
	}
	if t.wrote {
		m.local.Notify()
	}
	return nil
}

func (m *Memory) commit(s *memState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	m.state = s
	return nil
}

// Register implements store.Store as store.Bolt does: lost is closed when the
// registration is taken over or the store closes, not when ctx ends.
func (m *Memory) Register(ctx context.Context, node, holder string, ttl time.Duration) (<-chan struct{}, error) {
	return m.local.Register(ctx, node, holder, ttl)
}

// Alive implements store.Store: the nodes registered on m.
func (m *Memory) Alive() (map[string]bool, error) { return m.local.Alive() }

// Watch implements store.Store: fn runs after every Update that wrote something and
// every registration that starts or ends.
func (m *Memory) Watch(ctx context.Context, fn func()) error { return m.local.Watch(ctx, fn) }

// Close makes later transactions fail and ends the registrations and watches; calling
// it twice is harmless.
func (m *Memory) Close() error {
	m.local.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

type memTx struct {
	s        *memState
	writable bool
	// wrote is set by the writes that change something: an Update that wrote nothing
	// wakes no watcher.
	wrote bool
}

var _ store.Tx = (*memTx)(nil)

func (t *memTx) checkWritable(op string) error {
	if !t.writable {
		return fmt.Errorf("%s: %w", op, store.ErrReadOnly)
	}
	return nil
}

func cloneNetwork(n api.Network) api.Network {
	n.Subnets = slices.Clone(n.Subnets)
	return n
}

func cloneEndpoint(ep api.Endpoint) api.Endpoint {
	ep.IPs = slices.Clone(ep.IPs)
	return ep
}

func compareKeys(a, b api.EndpointKey) int {
	return cmp.Or(
		strings.Compare(a.Network, b.Network),
		strings.Compare(a.ContainerID, b.ContainerID),
		strings.Compare(a.IfName, b.IfName),
	)
}

func (t *memTx) Network(name string) (api.Network, bool, error) {
	n, ok := t.s.networks[name]
	return cloneNetwork(n), ok, nil
}

func (t *memTx) Networks() ([]api.Network, error) {
	var ns []api.Network
	for _, name := range slices.Sorted(maps.Keys(t.s.networks)) {
		ns = append(ns, cloneNetwork(t.s.networks[name]))
	}
	return ns, nil
}

func (t *memTx) PutNetwork(n api.Network) error {
	op := fmt.Sprintf("put network %q", n.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if n.Name == "" {
		return fmt.Errorf("%s: empty name", op)
	}
	t.s.networks[n.Name] = cloneNetwork(n)
	t.wrote = true
	return nil
}

func (t *memTx) DeleteNetwork(name string) error {
	op := fmt.Sprintf("delete network %q", name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok := t.s.networks[name]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.networks, name)
	maps.DeleteFunc(t.s.endpoints, func(k api.EndpointKey, _ api.Endpoint) bool {
		return k.Network == name
	})
	delete(t.s.allocs, name)
	delete(t.s.cursors, name)
	delete(t.s.blocks, name)
	t.wrote = true
	return nil
}

func (t *memTx) Endpoint(k api.EndpointKey) (api.Endpoint, bool, error) {
	ep, ok := t.s.endpoints[k]
	return cloneEndpoint(ep), ok, nil
}

func (t *memTx) Endpoints(network string) ([]api.Endpoint, error) {
	var eps []api.Endpoint
	for k, ep := range t.s.endpoints {
		if network == "" || k.Network == network {
			eps = append(eps, cloneEndpoint(ep))
		}
	}
	slices.SortFunc(eps, func(a, b api.Endpoint) int { return compareKeys(a.EndpointKey, b.EndpointKey) })
	return eps, nil
}

func (t *memTx) PutEndpoint(ep api.Endpoint) error {
	op := fmt.Sprintf("put endpoint %s", ep.EndpointKey)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if strings.IndexByte(ep.ContainerID, 0) >= 0 || strings.IndexByte(ep.IfName, 0) >= 0 {
		return fmt.Errorf("%s: container id or interface name contains NUL", op)
	}
	if _, ok := t.s.networks[ep.Network]; !ok {
		return fmt.Errorf("%s: network %q: %w", op, ep.Network, store.ErrNotFound)
	}
	t.s.endpoints[ep.EndpointKey] = cloneEndpoint(ep)
	t.wrote = true
	return nil
}

func (t *memTx) DeleteEndpoint(k api.EndpointKey) error {
	op := fmt.Sprintf("delete endpoint %s", k)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok := t.s.endpoints[k]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.endpoints, k)
	t.wrote = true
	return nil
}

func (t *memTx) Allocation(network string, a netip.Addr) (string, bool, error) {
	owner, ok := t.s.allocs[network][a]
	return owner, ok, nil
}

func (t *memTx) Allocations(network string) (map[netip.Addr]string, error) {
	m := maps.Clone(t.s.allocs[network])
	if m == nil {
		m = make(map[netip.Addr]string)
	}
	return m, nil
}

// AllocationsOf implements store.Tx (a scan: the fake does not index).
func (t *memTx) AllocationsOf(network, owner string) ([]netip.Addr, error) {
	var out []netip.Addr
	for a, o := range t.s.allocs[network] {
		if o == owner {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

func (t *memTx) PutAllocation(network string, a netip.Addr, owner string) error {
	op := fmt.Sprintf("put allocation %s in network %q", a, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	switch {
	case network == "":
		return fmt.Errorf("%s: empty network name", op)
	case !a.IsValid():
		return fmt.Errorf("%s: invalid address", op)
	case owner == "" || strings.IndexByte(owner, 0) >= 0:
		return fmt.Errorf("%s: owner %q: empty or holding NUL", op, owner)
	}
	if t.s.allocs[network] == nil {
		t.s.allocs[network] = make(map[netip.Addr]string)
	}
	t.s.allocs[network][a] = owner
	t.wrote = true
	return nil
}

func (t *memTx) DeleteAllocation(network string, a netip.Addr) error {
	op := fmt.Sprintf("delete allocation %s in network %q", a, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok := t.s.allocs[network][a]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.allocs[network], a)
	t.wrote = true
	return nil
}

func (t *memTx) Cursor(network string, subnet netip.Prefix) (netip.Addr, bool, error) {
	if !subnet.IsValid() {
		return netip.Addr{}, false, nil
	}
	a, ok := t.s.cursors[network][subnet.Masked()]
	return a, ok, nil
}

func (t *memTx) PutCursor(network string, subnet netip.Prefix, a netip.Addr) error {
	op := fmt.Sprintf("put cursor of subnet %s in network %q", subnet, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	switch {
	case network == "":
		return fmt.Errorf("%s: empty network name", op)
	case !subnet.IsValid():
		return fmt.Errorf("%s: invalid subnet", op)
	case !a.IsValid():
		return fmt.Errorf("%s: invalid address", op)
	}
	if t.s.cursors[network] == nil {
		t.s.cursors[network] = make(map[netip.Prefix]netip.Addr)
	}
	t.s.cursors[network][subnet.Masked()] = a
	t.wrote = true
	return nil
}

// portKey is the key of the ports of node on proto port.
func portKey(node, proto string, port uint16) [2]string {
	return [2]string{node, fmt.Sprintf("%s/%d", proto, port)}
}

func (t *memTx) PortOwners(node, proto string, port uint16) (map[netip.Addr]string, error) {
	m := maps.Clone(t.s.ports[portKey(node, proto, port)])
	if m == nil {
		m = make(map[netip.Addr]string)
	}
	return m, nil
}

func (t *memTx) PutPort(node, proto string, hostIP netip.Addr, port uint16, owner string) error {
	k := portKey(node, proto, port)
	op := fmt.Sprintf("put port %s %s of node %q", k[1], hostIP, node)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckPort(node, proto, owner); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if t.s.ports[k] == nil {
		t.s.ports[k] = make(map[netip.Addr]string)
	}
	t.s.ports[k][hostIP] = owner
	t.wrote = true
	return nil
}

func (t *memTx) DeletePort(node, proto string, hostIP netip.Addr, port uint16) error {
	k := portKey(node, proto, port)
	op := fmt.Sprintf("delete port %s %s of node %q", k[1], hostIP, node)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok := t.s.ports[k][hostIP]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.ports[k], hostIP)
	t.wrote = true
	return nil
}

func cloneService(svc api.Service) api.Service {
	b, _ := json.Marshal(svc)
	var c api.Service
	json.Unmarshal(b, &c)
	return c
}

func (t *memTx) Service(namespace, name string) (api.Service, bool, error) {
	svc, ok := t.s.services[[2]string{namespace, name}]
	if !ok {
		return api.Service{}, false, nil
	}
	return cloneService(svc), true, nil
}

func (t *memTx) Services(namespace string) ([]api.Service, error) {
	var out []api.Service
	for k, svc := range t.s.services {
		if namespace == "" || k[0] == namespace {
			out = append(out, cloneService(svc))
		}
	}
	slices.SortFunc(out, func(a, b api.Service) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

func (t *memTx) PutService(svc api.Service) error {
	op := fmt.Sprintf("put service %s/%s", svc.Namespace, svc.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if svc.Namespace == "" || svc.Name == "" || strings.ContainsRune(svc.Namespace+svc.Name, 0) {
		return fmt.Errorf("%s: empty or NUL in namespace or name", op)
	}
	svc.Backends = nil
	t.s.services[[2]string{svc.Namespace, svc.Name}] = cloneService(svc)
	t.wrote = true
	return nil
}

func (t *memTx) DeleteService(namespace, name string) error {
	op := fmt.Sprintf("delete service %s/%s", namespace, name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	k := [2]string{namespace, name}
	if _, ok := t.s.services[k]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.services, k)
	t.wrote = true
	return nil
}

// cloneJSON copies v as the real stores do, through JSON: the copy shares nothing
// with v, and what JSON does not keep (an empty map, a monotonic clock reading) is
// lost the same way.
func cloneJSON[T any](v T) T {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("storetest: encode %T: %v", v, err))
	}
	var c T
	if err := json.Unmarshal(b, &c); err != nil {
		panic(fmt.Sprintf("storetest: decode %T: %v", v, err))
	}
	return c
}

// clonePolicy copies p through JSON, keeping the namespace and the name as they are
// (the real stores take them from the key, which keeps bytes that are not UTF-8).
func clonePolicy(p api.NetworkPolicy) api.NetworkPolicy {
	c := cloneJSON(p)
	c.Namespace, c.Name = p.Namespace, p.Name
	return c
}

// cloneNamespace copies ns through JSON, keeping the name as it is.
func cloneNamespace(ns api.Namespace) api.Namespace {
	c := cloneJSON(ns)
	c.Name = ns.Name
	return c
}

func (t *memTx) NetworkPolicy(namespace, name string) (api.NetworkPolicy, bool, error) {
	p, ok := t.s.policies[[2]string{namespace, name}]
	if !ok {
		return api.NetworkPolicy{}, false, nil
	}
	return clonePolicy(p), true, nil
}

func (t *memTx) NetworkPolicies(namespace string) ([]api.NetworkPolicy, error) {
	var out []api.NetworkPolicy
	for k, p := range t.s.policies {
		if namespace == "" || k[0] == namespace {
			out = append(out, clonePolicy(p))
		}
	}
	slices.SortFunc(out, func(a, b api.NetworkPolicy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

func (t *memTx) PutNetworkPolicy(p api.NetworkPolicy) error {
	op := fmt.Sprintf("put network policy %s/%s", p.Namespace, p.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckNetworkPolicy(p); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	t.s.policies[[2]string{p.Namespace, p.Name}] = clonePolicy(p)
	t.wrote = true
	return nil
}

func (t *memTx) DeleteNetworkPolicy(namespace, name string) error {
	op := fmt.Sprintf("delete network policy %s/%s", namespace, name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	k := [2]string{namespace, name}
	if _, ok := t.s.policies[k]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.policies, k)
	t.wrote = true
	return nil
}

func (t *memTx) Namespace(name string) (api.Namespace, bool, error) {
	ns, ok := t.s.namespaces[name]
	if !ok {
		return api.Namespace{}, false, nil
	}
	return cloneNamespace(ns), true, nil
}

func (t *memTx) Namespaces() ([]api.Namespace, error) {
	var out []api.Namespace
	for _, name := range slices.Sorted(maps.Keys(t.s.namespaces)) {
		out = append(out, cloneNamespace(t.s.namespaces[name]))
	}
	return out, nil
}

func (t *memTx) PutNamespace(ns api.Namespace) error {
	op := fmt.Sprintf("put namespace %q", ns.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckNamespace(ns); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	t.s.namespaces[ns.Name] = cloneNamespace(ns)
	t.wrote = true
	return nil
}

func (t *memTx) DeleteNamespace(name string) error {
	op := fmt.Sprintf("delete namespace %q", name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok := t.s.namespaces[name]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.namespaces, name)
	t.wrote = true
	return nil
}

// clonePod copies p through JSON, keeping the namespace and the name as they are.
func clonePod(p api.Pod) api.Pod {
	c := cloneJSON(p)
	c.Namespace, c.Name = p.Namespace, p.Name
	return c
}

func (t *memTx) Pod(namespace, name string) (api.Pod, bool, error) {
	p, ok := t.s.pods[[2]string{namespace, name}]
	if !ok {
		return api.Pod{}, false, nil
	}
	return clonePod(p), true, nil
}

func (t *memTx) Pods(namespace string) ([]api.Pod, error) {
	var out []api.Pod
	for k, p := range t.s.pods {
		if namespace == "" || k[0] == namespace {
			out = append(out, clonePod(p))
		}
	}
	slices.SortFunc(out, func(a, b api.Pod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

func (t *memTx) PutPod(p api.Pod) error {
	op := fmt.Sprintf("put pod %s/%s", p.Namespace, p.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckPod(p); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	t.s.pods[[2]string{p.Namespace, p.Name}] = clonePod(p)
	t.wrote = true
	return nil
}

func (t *memTx) DeletePod(namespace, name string) error {
	op := fmt.Sprintf("delete pod %s/%s", namespace, name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	k := [2]string{namespace, name}
	if _, ok := t.s.pods[k]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.pods, k)
	t.wrote = true
	return nil
}

func (t *memTx) Node(name string) (api.Node, bool, error) {
	n, ok := t.s.nodes[name]
	return n, ok, nil
}

func (t *memTx) Nodes() ([]api.Node, error) {
	var ns []api.Node
	for _, name := range slices.Sorted(maps.Keys(t.s.nodes)) {
		ns = append(ns, t.s.nodes[name])
	}
	return ns, nil
}

func (t *memTx) PutNode(n api.Node) error {
	op := fmt.Sprintf("put node %q", n.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckNode(n); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	n.Alive = false // read from the registrations, never stored
	t.s.nodes[n.Name] = n
	t.wrote = true
	return nil
}

func (t *memTx) DeleteNode(name string) error {
	op := fmt.Sprintf("delete node %q", name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok := t.s.nodes[name]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.nodes, name)
	t.wrote = true
	return nil
}

func (t *memTx) Block(network string, prefix netip.Prefix) (api.Block, bool, error) {
	b, ok := t.s.blocks[network][prefix]
	return b, ok, nil
}

func (t *memTx) Blocks(network string) ([]api.Block, error) {
	var out []api.Block
	for nw, blocks := range t.s.blocks {
		if network == "" || nw == network {
			out = slices.AppendSeq(out, maps.Values(blocks))
		}
	}
	slices.SortFunc(out, func(a, b api.Block) int {
		return cmp.Or(strings.Compare(a.Network, b.Network), a.Prefix.Compare(b.Prefix))
	})
	return out, nil
}

func (t *memTx) PutBlock(b api.Block) error {
	op := fmt.Sprintf("put block %s in network %q", b.Prefix, b.Network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckBlock(b); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if _, ok := t.s.networks[b.Network]; !ok {
		return fmt.Errorf("%s: network %q: %w", op, b.Network, store.ErrNotFound)
	}
	if t.s.blocks[b.Network] == nil {
		t.s.blocks[b.Network] = make(map[netip.Prefix]api.Block)
	}
	t.s.blocks[b.Network][b.Prefix] = b
	t.wrote = true
	return nil
}

func (t *memTx) DeleteBlock(network string, prefix netip.Prefix) error {
	op := fmt.Sprintf("delete block %s in network %q", prefix, network)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok := t.s.blocks[network][prefix]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.blocks[network], prefix)
	t.wrote = true
	return nil
}

func (t *memTx) BGPConfig() (api.BGPConfig, bool, error) {
	if t.s.bgpConfig == nil {
		return api.BGPConfig{}, false, nil
	}
	return *t.s.bgpConfig, true, nil
}

func (t *memTx) PutBGPConfig(c api.BGPConfig) error {
	if err := t.checkWritable("put bgp config"); err != nil {
		return err
	}
	t.s.bgpConfig = &c
	t.wrote = true
	return nil
}

func (t *memTx) BGPPeer(name string) (api.BGPPeer, bool, error) {
	p, ok := t.s.bgpPeers[name]
	return p, ok, nil
}

func (t *memTx) BGPPeers() ([]api.BGPPeer, error) {
	var ps []api.BGPPeer
	for _, name := range slices.Sorted(maps.Keys(t.s.bgpPeers)) {
		ps = append(ps, t.s.bgpPeers[name])
	}
	return ps, nil
}

func (t *memTx) PutBGPPeer(p api.BGPPeer) error {
	op := fmt.Sprintf("put bgp peer %q", p.Name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if err := store.CheckBGPPeer(p); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	t.s.bgpPeers[p.Name] = p
	t.wrote = true
	return nil
}

func (t *memTx) DeleteBGPPeer(name string) error {
	op := fmt.Sprintf("delete bgp peer %q", name)
	if err := t.checkWritable(op); err != nil {
		return err
	}
	if _, ok := t.s.bgpPeers[name]; !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	delete(t.s.bgpPeers, name)
	t.wrote = true
	return nil
}
