// Package store keeps podnet's desired state: networks, endpoints and address
// allocations, services, network policies, namespaces and pods, published ports, and
// for clusters the nodes, the address blocks they claimed and the BGP configuration.
// Every change happens inside one transaction (Update), so that an address allocation
// and the record that owns it commit together or not at all.
//
// Implementations: Bolt (an embedded bbolt file, one node), etcdstore.Store (etcd,
// shared by the nodes of a cluster) and, for tests, storetest.Memory. All pass
// storetest.Conformance.
package store

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/podnet/podnet/api"
)

// ErrNotFound is returned by Delete* when the object does not exist.
var ErrNotFound = errors.New("not found")

// ErrReadOnly is returned by the writes of a Tx that runs inside View.
var ErrReadOnly = errors.New("write in a read-only transaction")

// ErrNodeTaken is returned by Register when a live lease of another holder has the
// node name.
var ErrNodeTaken = errors.New("node name held by a live lease of another node")

// Store is a transactional store with node liveness and change notification.
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction; the changes commit only if fn returns
	// nil. fn may run more than once (a store shared by several writers retries it after
	// a conflict): it must have no effect outside the transaction.
	Update(fn func(Tx) error) error
	// Register makes node alive under a lease of ttl, kept alive until ctx ends or the
	// store closes; when the holder dies, the lease expires after ttl and the node is no
	// longer alive. holder identifies who registers (the node's address): a live lease
	// of the same holder is taken over (an agent restarted on its node), one of another
	// holder is ErrNodeTaken. The returned channel is closed when the registration ends for
	// any reason but ctx: the lease expired or was revoked while the holder was cut off, the
	// same holder took the node over, or the store closed; the caller registers again if it
	// still wants the node.
	Register(ctx context.Context, node, holder string, ttl time.Duration) (lost <-chan struct{}, err error)
	// Alive returns the names of the nodes whose leases are alive.
	Alive() (map[string]bool, error)
	// Watch calls fn after changes committed by anyone, liveness included, until ctx
	// ends; calls are sequential and may coalesce several changes. It returns once the
	// watch is established.
	Watch(ctx context.Context, fn func()) error
	// Close releases the store; calling it twice is harmless.
	Close() error
}

// Tx is one transaction. Reads of missing objects report ok=false, never an error.
// Writes inside a View transaction return an error.
type Tx interface {
	Network(name string) (n api.Network, ok bool, err error)
	// Networks lists all networks sorted by name.
	Networks() ([]api.Network, error)
	// PutNetwork creates or replaces a network.
	PutNetwork(n api.Network) error
	// DeleteNetwork removes a network together with its endpoints, allocations and
	// cursors; ErrNotFound when it does not exist.
	DeleteNetwork(name string) error

	Endpoint(k api.EndpointKey) (ep api.Endpoint, ok bool, err error)
	// Endpoints lists the endpoints of one network, or of all when network is "",
	// sorted by key.
	Endpoints(network string) ([]api.Endpoint, error)
	// PutEndpoint creates or replaces an endpoint; its network must exist.
	PutEndpoint(ep api.Endpoint) error
	// DeleteEndpoint removes an endpoint; ErrNotFound when it does not exist.
	DeleteEndpoint(k api.EndpointKey) error

	// Allocation returns the owner of an address of a network.
	Allocation(network string, a netip.Addr) (owner string, ok bool, err error)
	// Allocations lists all addresses of a network with their owners.
	Allocations(network string) (map[netip.Addr]string, error)
	// AllocationsOf lists the addresses owner holds in a network, sorted; its cost
	// depends on what owner holds, not on the size of the network.
	AllocationsOf(network, owner string) ([]netip.Addr, error)
	// PutAllocation records that owner holds a; it overwrites any previous owner (the
	// caller checks first).
	PutAllocation(network string, a netip.Addr, owner string) error
	// DeleteAllocation releases a; ErrNotFound when it was free.
	DeleteAllocation(network string, a netip.Addr) error

	// PortOwners lists who publishes a port of node: host address (zero: all addresses
	// of the node) -> owner; an empty map when nobody does. Ports are node-wide, not
	// per network, and the ports of different nodes are independent.
	PortOwners(node, proto string, port uint16) (map[netip.Addr]string, error)
	// PutPort records that owner publishes proto port on hostIP (zero: all) of node; it
	// overwrites any previous owner (the caller checks first).
	PutPort(node, proto string, hostIP netip.Addr, port uint16, owner string) error
	// DeletePort releases a published port of node; ErrNotFound when nobody held it.
	DeletePort(node, proto string, hostIP netip.Addr, port uint16) error

	Service(namespace, name string) (svc api.Service, ok bool, err error)
	// Services lists the services of one namespace, or of all when namespace is "",
	// sorted by namespace and name.
	Services(namespace string) ([]api.Service, error)
	// PutService creates or replaces a service.
	PutService(svc api.Service) error
	// DeleteService removes a service; ErrNotFound when it does not exist.
	DeleteService(namespace, name string) error

	NetworkPolicy(namespace, name string) (p api.NetworkPolicy, ok bool, err error)
	// NetworkPolicies lists the policies of one namespace, or of all when namespace is
	// "", sorted by namespace and name.
	NetworkPolicies(namespace string) ([]api.NetworkPolicy, error)
	// PutNetworkPolicy creates or replaces a policy.
	PutNetworkPolicy(p api.NetworkPolicy) error
	// DeleteNetworkPolicy removes a policy; ErrNotFound when it does not exist.
	DeleteNetworkPolicy(namespace, name string) error

	Namespace(name string) (ns api.Namespace, ok bool, err error)
	// Namespaces lists the namespaces that have a record, sorted by name.
	Namespaces() ([]api.Namespace, error)
	// PutNamespace creates or replaces a namespace's record (its labels).
	PutNamespace(ns api.Namespace) error
	// DeleteNamespace removes a namespace's record; ErrNotFound when it has none.
	DeleteNamespace(name string) error

	Pod(namespace, name string) (p api.Pod, ok bool, err error)
	// Pods lists the pod records of one namespace, or of all when namespace is "",
	// sorted by namespace and name.
	Pods(namespace string) ([]api.Pod, error)
	// PutPod creates or replaces a pod record.
	PutPod(p api.Pod) error
	// DeletePod removes a pod record; ErrNotFound when it does not exist.
	DeletePod(namespace, name string) error

	// Cursor is the last address handed out in a subnet or block (round-robin allocation).
	Cursor(network string, subnet netip.Prefix) (a netip.Addr, ok bool, err error)
	PutCursor(network string, subnet netip.Prefix, a netip.Addr) error

	Node(name string) (n api.Node, ok bool, err error)
	// Nodes lists the cluster's nodes sorted by name (Alive unset: see Store.Alive).
	Nodes() ([]api.Node, error)
	// PutNode creates or replaces a node.
	PutNode(n api.Node) error
	// DeleteNode removes a node (not its blocks); ErrNotFound when it does not exist.
	DeleteNode(name string) error

	Block(network string, prefix netip.Prefix) (b api.Block, ok bool, err error)
	// Blocks lists the blocks of one network, or of all when network is "", sorted by
	// network and prefix.
	Blocks(network string) ([]api.Block, error)
	// PutBlock creates or replaces a block; its network must exist. Claiming a free block
	// is Block (not ok) then PutBlock in one Update: the commit fails for all but one of
	// the nodes that race for it.
	PutBlock(b api.Block) error
	// DeleteBlock releases a block; ErrNotFound when it was free. DeleteNetwork removes
	// the network's blocks.
	DeleteBlock(network string, prefix netip.Prefix) error

	// BGPConfig returns the cluster's BGP settings; ok is false until they are first put.
	BGPConfig() (c api.BGPConfig, ok bool, err error)
	// PutBGPConfig creates or replaces the cluster's BGP settings.
	PutBGPConfig(c api.BGPConfig) error
	BGPPeer(name string) (p api.BGPPeer, ok bool, err error)
	// BGPPeers lists the configured BGP peers sorted by name.
	BGPPeers() ([]api.BGPPeer, error)
	// PutBGPPeer creates or replaces a peer.
	PutBGPPeer(p api.BGPPeer) error
	// DeleteBGPPeer removes a peer; ErrNotFound when it does not exist.
	DeleteBGPPeer(name string) error
}
