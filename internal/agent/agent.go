// Package agent is the podnet node agent: it owns the store and all kernel
// configuration of one node namespace, and serves the JSON API the CLI and the CNI
// plugin use. Every operation validates first, then allocates in one store
// transaction, then applies the kernel plan, and rolls back what it did on failure.
//
// Files by concern: agent.go (the Agent, its appliers and locks), networks.go (create,
// delete, look up networks), attach.go (ADD, CHECK), detach.go (DEL and the detach
// worker), gc.go (GC), reconcile.go and repair.go (periodic comparison of the kernel with
// the store), dataplane.go (what endpoints contribute to nftables and the port proxies),
// services.go and dns.go (service VIPs and the cluster DNS server), validate.go (request
// checks), server.go (the HTTP API on the unix socket).
//
// Lock order. An operation takes the locks it needs in this order, and never one that
// comes earlier while it holds a later one:
//
//  1. netMu: the set of networks (CreateNetwork, DeleteNetwork, ensureNetwork, the
//     network part of Reconcile);
//  2. one endpoint lock (lockEndpoint; never two at once: code that finishes other
//     endpoints' detaches, such as Attach on a full pool, first releases its own);
//  3. dpMu: the nftables tables (every Update and Sync, and the reads that decide them);
//  4. pendingMu: the pending map only, held for no call out;
//  5. store transactions, innermost: no lock above is taken inside one.
//
// The detach worker (detachLoop) takes one endpoint lock at a time; markAttached runs
// off the reply path and takes only a store transaction (Close waits for it).
package agent

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/fastpath"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/portproxy"
	"github.com/podnet/podnet/internal/store"
)

// Version is reported by STATUS.
const Version = "0.1.0"

// Config configures an agent.
type Config struct {
	// Store is the state store; the agent closes it.
	Store store.Store
	// NodeNS is the namespace the agent manages; the agent does not close it. The
	// appliers below that are nil work in it, and so does the cluster DNS server.
	NodeNS netns.NsHandle
	// NodeNSPath is a path of NodeNS (a /run/netns name, /proc/PID/ns/net), reported by
	// STATUS.
	NodeNSPath string
	// Kernel, Tables and Proxy apply the agent's plans: the node's links, addresses,
	// routes and sysctls; podnet's nftables tables; the userland port proxies. Nil
	// opens the real one in NodeNS (kernel.OpenNode, nft.Open, portproxy.New); tests pass
	// fakes (kerneltest, nfttest, portproxytest). The agent closes them.
	Kernel kernel.Applier
	Tables nft.Applier
	Proxy  portproxy.Applier
	// Now is the clock of the records' creation times (nil: time.Now).
	Now func() time.Time
	// ReconcileInterval is how often kernel state is compared with the store (0: 10s).
	ReconcileInterval time.Duration
	Logger            *slog.Logger
	// ServiceCIDRs are the pools of service VIPs (one per family; default
	// api.DefaultServiceCIDR).
	ServiceCIDRs []netip.Prefix
	// DNS configures the cluster DNS server.
	DNS DNSConfig

	// NodeName is this node's name in the store (default: the hostname).
	NodeName string
	// NodeIP is the node's underlay address: other nodes tunnel and route to it. Needed by
	// cross-node networks.
	NodeIP netip.Addr
	// Shared says that other nodes' agents use the store too (etcd): the agent watches it
	// and keeps to its own endpoints; networks default to CrossNode vxlan.
	Shared bool
	// LeaseTTL is how long the node stays alive after its agent stops (0: DefaultLeaseTTL).
	LeaseTTL time.Duration
	// BlockGrace is how long a node is dead before the others release its empty blocks
	// (0: DefaultBlockGrace).
	BlockGrace time.Duration
	// BGPPort is the TCP port of the BGP speaker of bgp networks (0: 179; -1: dial
	// only, do not listen).
	BGPPort int
	// NoFastPath keeps the traffic between pods of the node on the kernel's path
	// (bridge or forwarding, netfilter) instead of the eBPF fast path (internal/fastpath), which the
	// agent puts in front of the real tables (not of a Tables the config gives).
	NoFastPath bool
}

// Agent serves one node.
type Agent struct {
	store  store.Store
	node   kernel.Applier
	nodeNS netns.NsHandle
	nsPath string
	// The node in the cluster (cluster.go).
	nodeName, underDev string
	nodeIP             netip.Addr
	underMTU           int
	shared             bool
	defaultCrossNode   string
	leaseTTL           time.Duration
	blockGrace         time.Duration
	deadSince          map[string]time.Time // nodes this agent saw dead, since when (clusterLoop only)
	clusterSig         chan struct{}
	clusterStop        context.CancelFunc
	clusterWG          sync.WaitGroup // keepRegistered and clusterLoop
	bgp                bgpState       // the speaker of bgp networks (bgp.go)
	// clusterNets are the networks syncCluster last applied, appliedOverlays the
	// overlay plans applied last, by network (both guarded by netMu).
	clusterNets     []api.Network
	appliedOverlays map[string]plan.Overlay
	tunnels         map[string]tunnel // this node's tunnel addresses, by network (tunnel.go; netMu)
	bgpPort         int
	nft             nft.Applier
	noFastPath      bool
	fastpath        *fastpath.Applier // nil: off
	proxy           portproxy.Applier
	now             func() time.Time
	log             *slog.Logger
	// serviceCIDRs are the VIP pools.
	serviceCIDRs []netip.Prefix
	dns          *dnsService
	every        time.Duration
	metrics      *metrics

	// The locks, in the order they are taken (see the package doc).

	// netMu serializes changes to the set of networks (create, delete, nftables sync).
	netMu sync.Mutex
	// epMu serializes operations on one endpoint key (striped by hash).
	epMu [64]sync.Mutex
	// dpMu serializes changes to the nftables tables: every incremental update computes
	// what it writes and writes it under dpMu, and Reconcile derives the whole desired
	// state from the store and writes it under dpMu, so that neither overwrites the other
	// with something stale.
	dpMu sync.Mutex
	// verified says that the nftables tables equaled the store's desired state at
	// generation verifiedGen (guarded by dpMu; see tablesUnchanged).
	verified    bool
	verifiedGen uint32
	// verifiedWant is the desired state the tables were found equal to (guarded by
	// dpMu): a cluster sync that computes the same state again skips the comparison.
	// verifiedServices are the service changes of the element batches committed since,
	// in order, which verifiedRulesetLocked folds into it when it is read: a change of
	// one service costs the same whatever the number of services.
	verifiedWant     nft.Ruleset
	verifiedServices []serviceBatch
	// appliedPolicies are the compiled policies the tables hold (guarded by dpMu): what
	// the policies' incremental updates start from; nil when not known.
	appliedPolicies *[]nft.Policy
	// polc compiles the policies from the store's policies, namespaces and endpoints as
	// they were when the last full sync read them, with every change since (guarded by
	// dpMu; nil when unknown: the next change reads the store whole). See followPolicies.
	polc *driver.PolicyCompiler
	// pendingMu guards pending: the endpoints marked detaching whose detach has not
	// finished yet (so that an ADD finds them without reading every endpoint).
	pendingMu sync.Mutex
	pending   map[api.EndpointKey]bool
	// attaching counts the ADDs between their store commit and the end of their
	// tables' update: with pending, the changes that the store holds and the tables may
	// not yet (see resyncIfDiffers).
	attaching atomic.Int64
	// repairDeferred is set when a Reconcile left a difference of the tables to the next
	// one, because an ADD or DEL was in flight (guarded by dpMu).
	repairDeferred bool

	// detachq feeds detachLoop with endpoints that DEL marked detaching.
	detachq    chan api.EndpointKey
	detachDone chan struct{}
	// marking counts markAttached calls in flight.
	marking sync.WaitGroup
}

// New opens the appliers that cfg does not give, reconciles the store with the kernel
// and returns a ready agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.ServiceCIDRs) == 0 {
		cfg.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix(api.DefaultServiceCIDR)}
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w", err)
		}
		cfg.NodeName = h
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.BlockGrace == 0 {
		cfg.BlockGrace = DefaultBlockGrace
	}
	a := &Agent{store: cfg.Store, nodeNS: cfg.NodeNS, nsPath: cfg.NodeNSPath, node: cfg.Kernel, nft: cfg.Tables, proxy: cfg.Proxy,
		now: cfg.Now, log: cfg.Logger, every: cfg.ReconcileInterval, serviceCIDRs: cfg.ServiceCIDRs,
		detachq: make(chan api.EndpointKey, 4096), detachDone: make(chan struct{}),
		pending:  map[api.EndpointKey]bool{},
		nodeName: cfg.NodeName, nodeIP: cfg.NodeIP, shared: cfg.Shared, leaseTTL: cfg.LeaseTTL,
		blockGrace: cfg.BlockGrace, deadSince: map[string]time.Time{}, tunnels: map[string]tunnel{}, bgpPort: cfg.BGPPort, noFastPath: cfg.NoFastPath}
	if cfg.Shared {
		a.defaultCrossNode = api.CrossNodeVXLAN
	}
	a.metrics = newMetrics(a)
	if err := a.openAppliers(); err != nil {
		a.closeAppliers()
		return nil, err
	}
	if err := a.startDNS(cfg.DNS); err != nil {
		a.closeAppliers()
		return nil, err
	}
	go a.detachLoop()
	if err := a.node.EnableForwarding(); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.startCluster(); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.Reconcile(true); err != nil {
		a.Close()
		return nil, fmt.Errorf("reconcile at start: %w", err)
	}
	return a, nil
}

// openAppliers opens the real appliers that the config left nil, in the node namespace.
func (a *Agent) openAppliers() error {
	if a.node == nil {
		node, err := kernel.OpenNode(a.nodeNS)
		if err != nil {
			return err
		}
		a.node = node
	}
	if a.nft == nil {
		tbl, err := nft.Open(int(a.nodeNS))
		if err != nil {
			return fmt.Errorf("open nftables: %w", err)
		}
		a.nft = tbl
		if !a.noFastPath {
			fp, err := fastpath.New(a.nodeNS, tbl, func(format string, args ...any) {
				a.log.Warn(fmt.Sprintf(format, args...), "component", "fastpath")
			})
			if err != nil {
				a.log.Warn("fast path off: pods' traffic takes the bridge, the forwarding and nftables only", "err", err)
			} else {
				a.nft, a.fastpath = fp, fp
			}
		}
	}
	if a.proxy == nil {
		proxy, err := portproxy.New(a.nodeNS, portproxy.Config{Logf: func(format string, args ...any) {
			a.log.Warn(fmt.Sprintf(format, args...), "component", "portproxy")
		}})
		if err != nil {
			return fmt.Errorf("port proxy: %w", err)
		}
		a.proxy = proxy
	}
	return nil
}

// closeAppliers closes the appliers that are open.
func (a *Agent) closeAppliers() {
	if a.proxy != nil {
		a.proxy.Close()
	}
	if a.node != nil {
		a.node.Close()
	}
	if a.nft != nil {
		a.nft.Close()
	}
}

// created is a record's creation time: now, to the second, in UTC.
func (a *Agent) created() time.Time { return a.now().UTC().Truncate(time.Second) }

// OpenBoltStore opens the embedded store in stateDir.
func OpenBoltStore(stateDir string) (store.Store, error) {
	return store.OpenBolt(filepath.Join(stateDir, "podnet.db"))
}

// Close finishes pending detaches and releases the store and kernel handles. The
// kernel configuration stays. Serve must have returned.
func (a *Agent) Close() error {
	a.stopCluster()
	a.stopBGP()
	close(a.detachq)
	<-a.detachDone
	a.marking.Wait()
	a.stopDNS()
	a.closeAppliers()
	return a.store.Close()
}

func (a *Agent) lockEndpoint(k api.EndpointKey) func() {
	h := fnv.New32a()
	h.Write([]byte(k.String()))
	m := &a.epMu[h.Sum32()%uint32(len(a.epMu))]
	m.Lock()
	return m.Unlock
}

// Status reports readiness and counts.
func (a *Agent) Status() (api.Status, error) {
	st := api.Status{Ready: true, Version: Version, Netns: a.nsPath}
	err := a.store.View(func(tx store.Tx) error {
		ns, err := tx.Networks()
		if err != nil {
			return err
		}
		eps, err := tx.Endpoints("")
		st.Networks, st.Endpoints = len(ns), len(eps)
		return err
	})
	if a.fastpath != nil {
		if fp, ferr := a.fastpath.Stats(); ferr == nil {
			st.FastPath = &api.FastPathStatus{Ports: fp.Ports,
				RedirectedPackets: fp.Redirected.Packets, RedirectedBytes: fp.Redirected.Bytes,
				PassedPackets: fp.Passed.Packets, PassedBytes: fp.Passed.Bytes}
		}
	}
	return st, err
}

// DefaultLogger logs text to stderr at the given level.
func DefaultLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
