// Package nft keeps podnet's own nftables tables, "inet podnet" and "bridge podnet", in the
// node network namespace, and never touches any other table.
//
// The desired state is data (Ruleset). Render turns it into nft-syntax text, Table.Sync
// writes it to the kernel in one atomic netlink batch, Table.Update adds and removes the
// elements of networks, endpoints, published ports, services and network policies in one
// small batch, and Table.InSync reads the tables back and says whether the kernel still
// matches a Ruleset.
//
// Kernel objects of table inet podnet:
//
//	set pods4, pods6        interval: subnets of every network
//	set masq4, masq6        interval: subnets of masquerading networks
//	set same_network4/6     interval, ip . ip: (subnet of network A . subnet of network A)
//	set endpoints           ifname: host veths of routed endpoints
//	set endpoint_addrs4/6   ifname . ip: (host veth . address) of routed endpoints
//	set bridge_pods4/6      ifname . ip: (bridge . address) of bridged endpoints
//	set bridge_self         ifname . ifname: (bridge . bridge) of every bridge
//	map ports4, ports6      l4proto . port : address . port, published ports on every local address
//	map hostports4/6        ip . l4proto . port : address . port, published ports on one host address
//	set services4/6         VIP . l4proto . port of every service
//	set slot_bit0_4 .. slot_bit3_4, slot_bit0_6 .. slot_bit3_6  the keys of services4/6
//	                        whose slot code (0: no backends, b+1: 2^b slots) has that bit
//	set affinity_services4/6  VIP . l4proto . port of the services with client affinity
//	map backends4/6         VIP . l4proto . port . index : address . port, backends of the
//	                        services (typeof: the index is numgen's integer)
//	map affinity4/6         dynamic, timeout AffinityTimeout: client . VIP (or node address, for a
//	                        NodePort) . l4proto . port : backend
//	map nodeport_backends4/6  l4proto . NodePort . index : address . port, the backends of the
//	                        services again, by NodePort (typeof, as backends4/6)
//	map service_nodeports4/6  VIP . l4proto . port : NodePort, the NodePort of each service
//	                        (read by Update only: no rule uses it)
//	set nodeports           nf_proto . l4proto . NodePort (NodePorts on every local address;
//	                        keyed with the family of the service's VIP)
//	set nodeport_slot_bit0 .. 3  the keys of nodeports by the bits of their slot code
//	set affinity_nodeports  the keys of nodeports of the services with client affinity
//	chain antispoof   filter prerouting, priority raw: drops packets to 127.0.0.0/8 that
//	                  did not come from lo, and what a routed endpoint sends from an
//	                  address that is not its own (chains endpoint-src, from-bridge, by
//	                  map interfaces); chain from-bridge first exempts from conntrack
//	                  (notrack) what a bridged pod sends to another of its bridge when
//	                  no policy isolates either (model.go, notrackRules)
//	chain prerouting  nat prerouting, priority dstnat: service VIPs, then published ports of
//	                  one host address (DNAT), then for local destinations (fib daddr type
//	                  local) chain local-ports
//	chain output      nat output, priority -100 (dstnat): the same for connections of the node
//	chain local-ports regular: published ports of every local address, then NodePorts
//	                  (a published port wins over a NodePort of the same port)
//	set policy_in4/6, policy_out4/6  addresses isolated by a network policy (Ingress, Egress)
//	set isolated_in4/6, isolated_out4/6  the same, of every group (policy.go)
//	set pol_<ID>_sel4/6, pol_<ID>_in<K>_peers4/6, pol_<ID>_in<K>_ports4/6 (interval,
//	                  ip . l4proto . port), "out" for egress: a policy's selected pods and
//	                  what its rule K allows (policy.go; only with policies, as the chains
//	                  below marked "policies")
//	chain forward     filter forward, priority filter: established flows, untracked ones
//	                  within a bridge, network policy (jump policies), isolation of
//	                  networks by address
//	chain input       filter input, priority filter (policies with Egress): egress policy
//	                  of the connections of pods to the node itself
//	chain postrouting nat postrouting, priority srcnat: DNATed connections to chain dnatted,
//	                  then egress masquerade
//	chain dnatted     regular: remembers the backend of a new connection to a service (VIP or
//	                  NodePort) with affinity; masquerades DNATed connections from sandboxes
//	                  (hairpin), those from outside the pod networks that leave through a
//	                  VXLAN device (to the node's tunnel address), from 127.0.0.0/8, and
//	                  every connection to a NodePort
//	chains service-slots4/6[-BITS]  regular: the slot trees, from a service's key to the
//	                  pick chain of its slot count, by the slot_bit sets
//	chains pick-S, affinity, no-backends  regular: random choice of a backend among S
//	                  slots, client affinity, rejection of a service without backend;
//	                  constant (services.go explains them)
//	chains nodeport-slots[-BITS], nodeport-pick-S  regular: the same for NodePorts
//	chains policies, policy-ingress-G, policy-egress-G  regular (policies): the dispatch
//	                  to the chains of the isolated pods' groups (namespaces), each with a
//	                  rule per policy rule and family that returns what it allows and a
//	                  final counted drop (PolicyDrops)
//
// Table bridge podnet holds the same anti-spoofing check for bridged endpoints: in the inet
// hooks a packet of a bridge port shows the bridge as its input interface (br_netfilter),
// while the bridge prerouting hook sees the port itself:
//
//	set endpoints, endpoint_addrs4, endpoint_addrs6  as above, for bridged endpoints
//	set endpoint_targets6  ifname . IPv6 address as raw field (typeof iifname . @th,64,128):
//	                   the target a port may announce in a neighbour advertisement
//	set endpoint_macs  ifname . ether_addr: (bridge port . sandbox MAC)
//	chain antispoof   filter prerouting, priority filter: checks source MACs and IPv4,
//	                  IPv6 and ARP senders
//
// Per-packet cost does not grow with the number of networks, endpoints, ports, services,
// NodePorts or the addresses of policies (it grows with the number of policy rules):
// every lookup is a set or map lookup, never one rule per item. A service owns elements
// only, so that changing its backends is an element update whatever the number of
// services (a rule or chain per service would make every such batch revalidate them all).
// Every rule and set is one that nft 1.0.6 (Debian 12) lists; nft 1.0.6 also parses the
// listing back, but for the four IPv6 rules of chain dnatted that remember affinity, which
// it cannot compile itself (listing_test.go). podnet writes its batches with internal/nftwire
// (wire.go turns the model into its messages) on a netlink socket bound to the namespace
// fd; InSync reads the tables back with google/nftables and the rules with nftwire
// (compare.go), and Render prints the rules with nftwire's printer. Nothing execs nft and
// no goroutine of the caller changes namespace.
//
// What the caller (the agent) must do besides: set route_localnet=1 on the interfaces
// towards sandboxes (bridges and routed host veths) for published ports to answer on
// 127.0.0.1; set hairpin mode on bridge ports for a sandbox to reach its own published
// port through a node address (br_netfilter bridges the DNATed packet back to the port it
// came from); add an endpoint's elements (Update) before its host veth goes up, since only
// the interfaces in the endpoints set are checked. IPv6 has no localhost access to published
// ports or NodePorts: Linux never routes ::1 off the loopback device. For
// 127.0.0.1:NodePort the interfaces towards the service's backends need route_localnet=1
// too, the uplink (or VXLAN device) included when a backend is on another node (the
// anti-spoofing chain drops what comes to 127.0.0.0/8 from anywhere but lo). A connection
// of the node to a VIP needs a route to the VIP (a default route will do): the node picks
// the source address
// before the output hook DNATs. Sandboxes reach VIPs through their default gateway, the
// node. Connections from sandboxes to a VIP are masqueraded behind the node, as for
// published ports (postrouting: ct status dnat, saddr in a podnet subnet), which makes a
// backend reaching its own service (hairpin) work; backends see the node's address, and
// affinity is keyed on the client's real address (it is decided before the masquerade).
// Every connection to a NodePort is masqueraded, from outside the node too (kube-proxy's
// externalTrafficPolicy Cluster): its backend may be on another node, whose reply must come
// back through this node; backends see a node's address (so does the backend of a VIP or
// published port on a NodePort's protocol and port: the masquerade goes by the original
// port). A VIP has precedence over everything (even a VIP that is a local address of the
// node), then published ports, then NodePorts.
package nft

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/podnet/podnet/api"
)

// TableName is the name of podnet's tables, in families inet and bridge.
const TableName = "podnet"

// Network is what the ruleset needs to know of one podnet network.
type Network struct {
	Name       string         // podnet network name (for comments/debug only)
	Bridge     string         // host bridge of the network (<=15 bytes); "" for a routed network
	Subnets    []netip.Prefix // IPv4 and/or IPv6
	Masquerade bool           // egress masquerade for traffic leaving the podnet subnets
	// Ingress are the other interfaces where packets from the network's addresses may
	// enter the node: the network's VXLAN device, or the underlay for direct routing
	// (pods of other nodes). Anti-spoofing drops them anywhere else.
	Ingress []string
}

// Endpoint is one sandbox attachment, for anti-spoofing: packets entering the node from
// HostIf must come from one of Addrs.
type Endpoint struct {
	HostIf string       // host-side veth (<=15 bytes)
	Bridge string       // the bridge HostIf is a port of (bridge driver); "" for the routed driver (an L3 interface of the node)
	Addrs  []netip.Addr // the sandbox's addresses
	// MAC is the sandbox interface's address. Bridged: frames that the port sends from
	// another source MAC are dropped (none: every frame is). Routed: no rule reads it
	// (the fast path addresses frames to it, package fastpath).
	MAC net.HardwareAddr
}

// PortMapping is one published port: connections to HostPort of the node are DNATed to
// Addr:Port.
type PortMapping struct {
	Protocol string     // "tcp" | "udp"
	HostIP   netip.Addr // zero (or unspecified): every local address of the node of Addr's family
	HostPort uint16
	Addr     netip.Addr // endpoint address (same family as HostIP when HostIP is set)
	Port     uint16     // container port
}

// Service is a virtual IP: new connections to VIP:Port (Protocol) are DNATed to one of
// Backends, chosen at random, or, with Affinity, to the backend the client's address was
// last sent to. A service is identified by (VIP, Protocol, Port); a dual-stack service is
// two Services, one per family.
type Service struct {
	Name     string           // "<namespace>/<service>", for comments and debugging only
	VIP      netip.Addr       // one family per Service
	Protocol string           // "tcp" | "udp"
	Port     uint16           // service port
	Backends []netip.AddrPort // ready backends, of the VIP's family; none: connections are rejected
	// Affinity keeps a client on one backend: a new connection from the client's address
	// goes to the backend its previous one went to, as long as that backend is still in
	// Backends and the client made a connection to the service within AffinityTimeout.
	Affinity bool
	// NodePort, when set, also dispatches connections to Protocol NodePort on any local
	// address of the node (Kubernetes type NodePort) to Backends: those of the VIP's
	// family, IPv4 127.0.0.1 included, the same way as connections to VIP:Port (the
	// same random choice, rejection without backends, affinity per client and node
	// address), masqueraded behind the node. At most one service per family, Protocol and
	// NodePort; a published port of the same protocol and port wins over it.
	NodePort uint16
}

// AffinityTimeout is how long a client keeps its backend after its last new connection to
// a service with Affinity (Kubernetes' default sessionAffinityConfig timeout, 10800 s).
const AffinityTimeout = 3 * time.Hour

// MaxBackends is the largest number of backends of one service.
const MaxBackends = 1 << maxSlotBits

// Policy is a network policy compiled for one node: the node's pod addresses it selects
// and what its rules allow them (policy.go explains the sets and chains it becomes). A
// pod address selected by a policy with Ingress (Egress) is isolated in that direction:
// of the new connections to it (from it), only those that a rule of a policy selecting
// it with that type allows pass. Established connections and their replies always pass.
type Policy struct {
	// ID names the policy's sets (pol_<ID>_...): unique among the node's policies and
	// stable while the policy exists, [a-z0-9], 1-12 bytes (the caller hashes
	// namespace/name).
	ID string
	// Name is "namespace/name", for comments; it must not change for one ID.
	Name string
	// Group is the policies that may select the same addresses: "" or, like ID, 1-12
	// bytes of [a-z0-9] (the caller hashes the namespace, since a policy selects pods of
	// its own namespace only). Each group has its own isolation sets and chains, so that
	// a new connection crosses the rules of its pods' groups, not those of every policy.
	// Policies of two groups must not select the same address: Sync refuses it.
	Group string
	// Selected are the node's pod addresses the policy selects, of both families.
	Selected []netip.Addr
	// Ingress and Egress are the policy's types: the directions in which the selected
	// pods are isolated. A type without rules denies every new connection in that
	// direction (default deny); the rules of a direction without its type are invalid.
	Ingress, Egress bool
	// IngressRules allow connections to the selected pods, EgressRules from them.
	IngressRules, EgressRules []PolicyRule
}

// PolicyRule allows the connections whose peer (the source for an ingress rule, the
// destination for an egress rule) is in Peers (any peer with AnyPeer) and whose
// destination address . protocol . port is in Ports (any with AnyPort).
type PolicyRule struct {
	AnyPeer bool
	Peers   []AddrRange // both families; none (without AnyPeer): the rule matches nothing
	AnyPort bool
	Ports   []PortRange // none (without AnyPort): the rule matches nothing
}

// AddrRange is the addresses From to To, inclusive, of one family.
type AddrRange struct{ From, To netip.Addr }

// PortRange allows ports From to To (inclusive, 1-65535) of Protocol to the destination
// addresses Dst: for an ingress rule, selected pods; for an egress rule, peers. Named
// ports resolve per destination pod, which is why the destination is part of the key.
type PortRange struct {
	Dst      AddrRange
	Protocol string // "tcp" | "udp" | "sctp"
	From, To uint16
}

// Ruleset is the desired content of podnet's tables. The order of its slices does not
// matter. An endpoint listed twice (same HostIf) has the union of the addresses; a port
// mapping listed twice is one mapping; a service listed twice must be listed the same way
// (backends in any order) and is one service; a backend listed twice is one backend.
// Ranges of a policy rule may overlap or touch: the tables hold their union.
type Ruleset struct {
	Networks  []Network
	Endpoints []Endpoint
	Ports     []PortMapping
	Services  []Service
	Policies  []Policy
}

// Delta is a set of networks, endpoints, port mappings, services and policies' elements
// that Update adds to or removes from the tables without rewriting them. A network in a
// Delta stands for the elements of its subnets (list all of them, and the same Bridge and
// Masquerade as when it was added). A service in a Delta is identified by (VIP, Protocol,
// Port): adding it replaces the service with that key, if any (its name, backends,
// affinity and NodePort), and removing it removes the service with that key, its NodePort
// included, whatever its other fields.
//
// A policy in a Delta is identified by its ID and stands for the elements of its own sets
// (its Selected addresses, its rules' Peers and Ports): Update changes the policy's sets
// from remove's policy (what the tables hold: the whole policy, as last synced or
// updated; none when it is not in remove) to add's (the whole policy as it must be; none
// when it is not in add, which empties its sets). The batch holds the elements that
// differ only: ranges are merged (a rule's peers 10.0.0.1-10.0.0.3 plus 10.0.0.4 are one
// element 10.0.0.1-10.0.0.4), so that a listed range is not an element of its own, and
// only the old policy and the new one together say which elements change. Update changes
// elements only, never a rule: a policy of a Delta must be in the tables with the same
// layout (Policy.SameLayout: same ID, name, types, number of rules, AnyPeer and AnyPort of
// each); a new or removed policy, or a change of layout, needs Sync (PolicyDelta says
// which).
//
// The isolation sets of a group (policy_in_G4/6, policy_out_G4/6: the addresses selected
// by at least one policy of the group with each type) are a union over the group's
// policies, which a Delta's policies alone cannot tell: the addresses that add's policy
// selects and remove's (same ID) did not are added to the isolation sets of the policy's
// group and types (always right), but remove's policies take nothing out of them. The
// addresses that no policy of a type selects any more are listed in remove's
// IngressIsolated or EgressIsolated; those of add's are added (add's policies already add
// what they newly select). Each goes to or from the set of the group of the delta's
// policy of that type that selects it: a listed address that none selects is invalid.
// PolicyDelta forms both deltas from the old and new policies.
type Delta struct {
	Networks  []Network
	Endpoints []Endpoint
	Ports     []PortMapping
	Services  []Service
	Policies  []Policy
	// IngressIsolated and EgressIsolated are elements of the isolation sets policy_in_G4/6
	// and policy_out_G4/6 (G: the group of the Policies' policy that selects each).
	IngressIsolated, EgressIsolated []netip.Addr
}

// delta is r as a Delta (without isolation sets: in a Ruleset they follow from the
// policies).
func (r Ruleset) delta() Delta {
	return Delta{Networks: r.Networks, Endpoints: r.Endpoints, Ports: r.Ports, Services: r.Services, Policies: r.Policies}
}

// Applier makes podnet's tables of one namespace equal to a Ruleset.
// Table implements it on the kernel; nfttest.Fake in memory.
type Applier interface {
	// Sync replaces the tables with r, atomically. Calling it twice with the same r is
	// harmless. It fails, changing nothing, when r does not Validate.
	Sync(r Ruleset) error
	// Update removes the elements of remove, then adds those of add, in one atomic batch
	// whose size depends on the deltas only, not on the size of the tables. Adding an
	// element that exists or removing one that does not is not an error, so calling it
	// twice is harmless. An endpoint in remove takes its interface out of the checked
	// ones, with the listed addresses (list all of them); to change the addresses of an
	// endpoint, remove it and add it back in the same call. A service in add replaces the
	// service with its key, in remove removes it (see Delta); a service in both is
	// replaced by add's. It fails, changing nothing, when a delta does not Validate, when
	// the tables do not exist (ErrNoTable: call Sync), or when a port mapping's host side
	// is mapped to another target in the table, a network's subnet overlaps one in the
	// table, or an added service's NodePort is another service's in the table
	// (ErrConflict: to move a mapping or a NodePort, remove or replace the old one in the
	// same call). A
	// policy of a delta changes from remove's to add's (see Delta); Update fails with
	// ErrNoTable when the tables do not have the policy's sets as its layout says (a new
	// policy, another number of rules: call Sync), and with ErrConflict when an added
	// range overlaps one in the set (the tables did not hold remove's policy).
	Update(add, remove Delta) error
	// UpdatePolicies makes the tables' policies go from old (what they hold, as Sync or
	// Update last wrote them) to next, in one atomic batch, without rewriting the rest of
	// the tables: it is how a policy is added or removed, or changes its layout
	// (Policy.SameLayout), which Update cannot do. The rules and sets of the policies only
	// in old or laid out anew are deleted, those of the policies only in next or laid out
	// anew are created (their rules inserted where Sync writes them), the other policies'
	// elements change as Update changes them, and the isolation sets become next's; a
	// group's isolation sets, chains and dispatch rules come with its first policy of a
	// type and go with its last. The batch holds what changes only; the reads before it depend on the policies (their
	// sets and rules), never on the networks, endpoints, port mappings or services of the
	// tables, which stay as they are. The drop counters (PolicyDrops) carry on, but
	// those of the groups' chains that go. Calling it
	// again with old = next changes nothing: when next lists old's policies the same way,
	// it sends no batch. Both lists are sorted by ID. It fails, changing nothing, when an
	// ID is invalid or listed twice, or a policy it writes (one that comes, or the changed
	// lists of one that stays) does not validate (those that do not change are not
	// validated again: their cost would grow with the pods they select), and with
	// ErrNoTable when old or next is empty, or only one
	// of them has a policy with Egress (the dispatch chain and chain input come and go
	// with them: Sync), or the tables do not have the sets of old's policies
	// as their layouts say, or have those of a policy new in next; with ErrNoTable or
	// ErrConflict when the kernel finds that the tables do not hold old (a missing set, an
	// overlapping range). On ErrNoTable and ErrConflict, call Sync.
	UpdatePolicies(old, next []Policy) error
	// InSync reports whether the tables equal r. It is false, with no error, when a table
	// is missing or was changed (flushed rules, chains, set or map elements).
	InSync(r Ruleset) (bool, error)
	// Delete removes the tables. It succeeds when they are already gone.
	Delete() error
	// PolicyDrops returns the number of packets dropped so far by the final rules of
	// the groups' chains policy-ingress-G and policy-egress-G: new connections to (from)
	// isolated pods that no rule allowed. Sync resets them, UpdatePolicies keeps them; 0 when there is
	// no policy.
	PolicyDrops() (ingress, egress uint64, err error)
	// Generation is a counter that changes with every change of the namespace's
	// nftables ruleset (any table, any tool): while it stays the same, the tables are
	// what they were.
	Generation() (uint32, error)
	// Close releases the applier's handles; the tables stay.
	Close() error
}

// maxIfName is the longest interface name the kernel accepts (IFNAMSIZ-1).
const maxIfName = 15

// Validate checks that r can be written to the kernel: every network has a valid bridge
// name (or none) used by no other network, valid subnets that overlap no other network's,
// the endpoints and port mappings are valid and do not contradict each other, and every
// policy is valid with an ID of its own.
func (r Ruleset) Validate() error {
	return r.delta().Validate()
}

// validateNetworks checks bridge names and subnets, and that no two networks share a
// bridge or overlap.
func validateNetworks(nets []Network) error {
	bridges := make(map[string]string, len(nets))
	type owned struct {
		p    netip.Prefix
		net  int
		name string
	}
	var subnets []owned
	for i, n := range nets {
		if n.Bridge != "" {
			if err := validIfName(n.Bridge); err != nil {
				return fmt.Errorf("network %q: bridge %q: %w", n.Name, n.Bridge, err)
			}
			if other, ok := bridges[n.Bridge]; ok {
				return fmt.Errorf("network %q: bridge %q: already used by network %q", n.Name, n.Bridge, other)
			}
			bridges[n.Bridge] = n.Name
		}
		for _, p := range n.Subnets {
			if !p.IsValid() || p.Addr().Is4In6() {
				return fmt.Errorf("network %q: subnet %v: invalid prefix", n.Name, p)
			}
			for _, o := range subnets {
				if o.net != i && o.p.Overlaps(p) {
					return fmt.Errorf("network %q: subnet %v: overlaps subnet %v of network %q", n.Name, p, o.p, o.name)
				}
			}
			subnets = append(subnets, owned{p, i, n.Name})
		}
	}
	return nil
}

// Validate checks every network, endpoint, port mapping, service, policy and isolated
// address of d, and that d does not contradict itself: two networks with one bridge or
// overlapping subnets, an interface both bridged and routed, one host port mapped to two
// targets, one service key listed twice with different names, backends or affinity, or
// two policies with one ID. A policy is valid with a well-formed ID, valid selected
// addresses, rules of its types only, ranges of one family each and in order (From <=
// To), protocols tcp, udp or sctp, ports from 1, and no peers (ports) listed with AnyPeer
// (AnyPort).
func (d Delta) Validate() error {
	if err := validateNetworks(d.Networks); err != nil {
		return err
	}
	bridgeOf := make(map[string]string, len(d.Endpoints))
	for _, e := range d.Endpoints {
		if err := e.validate(); err != nil {
			return err
		}
		switch b, ok := bridgeOf[e.HostIf]; {
		case ok && (b == "") != (e.Bridge == ""):
			return fmt.Errorf("endpoint %q: listed both as bridged and as routed", e.HostIf)
		case ok && b != e.Bridge:
			return fmt.Errorf("endpoint %q: listed as a port of bridges %q and %q", e.HostIf, b, e.Bridge)
		}
		bridgeOf[e.HostIf] = e.Bridge
	}
	targets := make(map[portKey]PortMapping, len(d.Ports))
	for _, p := range d.Ports {
		if err := p.validate(); err != nil {
			return err
		}
		k := p.key()
		if o, ok := targets[k]; ok && (o.Addr != p.Addr || o.Port != p.Port) {
			return fmt.Errorf("port mapping %s: host side already mapped to %s", p, netip.AddrPortFrom(o.Addr, o.Port))
		}
		targets[k] = p
	}
	services := make(map[serviceKey]Service, len(d.Services))
	for _, s := range d.Services {
		if err := s.validate(); err != nil {
			return err
		}
		k := s.key()
		if o, ok := services[k]; ok && !o.same(s) {
			if o.Name != s.Name {
				return fmt.Errorf("service %q (%s): VIP and port already used by service %q", s.Name, s, o.Name)
			}
			return fmt.Errorf("service %q (%s): listed twice with different backends or affinity", s.Name, s)
		}
		services[k] = s
	}
	if err := validateNodePorts(d.Services); err != nil {
		return err
	}
	if err := validatePolicies(d.Policies); err != nil {
		return err
	}
	for _, dir := range directions {
		addrs := d.isolated(dir)
		if len(addrs) == 0 {
			continue
		}
		groupOf := d.groupsOf(dir)
		for _, a := range addrs {
			if !validUnicast(a) {
				return fmt.Errorf("%s isolated address %v: invalid pod address", dir.name, a)
			}
			if _, ok := groupOf[a]; !ok {
				return fmt.Errorf("%s isolated address %v: no policy of the delta with %s selects it (its group's set is unknown)", dir.name, a, dir.name)
			}
		}
	}
	return nil
}

// bridged reports whether e is a bridge port.
func (e Endpoint) bridged() bool { return e.Bridge != "" }

func (e Endpoint) validate() error {
	if err := validIfName(e.HostIf); err != nil {
		return fmt.Errorf("endpoint %q: host interface: %w", e.HostIf, err)
	}
	if e.bridged() {
		if err := validIfName(e.Bridge); err != nil {
			return fmt.Errorf("endpoint %q: bridge: %w", e.HostIf, err)
		}
	}
	for _, a := range e.Addrs {
		if !a.IsValid() || a.IsUnspecified() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("endpoint %q: address %v: invalid sandbox address", e.HostIf, a)
		}
	}
	if e.MAC != nil && len(e.MAC) != 6 {
		return fmt.Errorf("endpoint %q: MAC %v: not an Ethernet address", e.HostIf, e.MAC)
	}
	return nil
}

// String prints the mapping as "tcp [HOSTIP]:HOSTPORT -> ADDR:PORT".
func (p PortMapping) String() string {
	host := fmt.Sprintf(":%d", p.HostPort)
	if h := p.hostIP(); h.IsValid() {
		host = netip.AddrPortFrom(h, p.HostPort).String()
	}
	return fmt.Sprintf("%s %s -> %s", p.Protocol, host, netip.AddrPortFrom(p.Addr, p.Port))
}

func (p PortMapping) validate() error {
	switch {
	case protoNumber(p.Protocol) == 0:
		return fmt.Errorf("port mapping %s: protocol %q: want tcp or udp", p, p.Protocol)
	case p.HostPort == 0:
		return fmt.Errorf("port mapping %s: host port 0", p)
	case p.Port == 0:
		return fmt.Errorf("port mapping %s: port 0", p)
	case !p.Addr.IsValid() || p.Addr.IsUnspecified() || p.Addr.Is4In6() || p.Addr.Zone() != "":
		return fmt.Errorf("port mapping %s: address %v: invalid endpoint address", p, p.Addr)
	case p.HostIP.IsValid() && (p.HostIP.Is4() != p.Addr.Is4() || p.HostIP.Is4In6() || p.HostIP.Zone() != ""):
		return fmt.Errorf("port mapping %s: host IP %v: not of the endpoint address's family", p, p.HostIP)
	}
	return nil
}

// String prints the service's key as "tcp 10.96.0.10:80".
func (s Service) String() string {
	return s.Protocol + " " + netip.AddrPortFrom(s.VIP, s.Port).String()
}

func (s Service) validate() error {
	k := s.String()
	switch {
	case protoNumber(s.Protocol) == 0:
		return fmt.Errorf("service %q (%s): protocol %q: want tcp or udp", s.Name, k, s.Protocol)
	case s.Port == 0:
		return fmt.Errorf("service %q (%s): port 0", s.Name, k)
	case !validUnicast(s.VIP):
		return fmt.Errorf("service %q (%s): VIP %v: invalid address", s.Name, k, s.VIP)
	case len(s.Backends) > MaxBackends:
		return fmt.Errorf("service %q (%s): %d backends, at most %d", s.Name, k, len(s.Backends), MaxBackends)
	}
	for _, b := range s.Backends {
		switch {
		case !validUnicast(b.Addr()) || b.Addr().Is4() != s.VIP.Is4():
			return fmt.Errorf("service %q (%s): backend %v: invalid address or not of the VIP's family", s.Name, k, b)
		case b.Port() == 0:
			return fmt.Errorf("service %q (%s): backend %v: port 0", s.Name, k, b)
		}
	}
	return nil
}

// validUnicast reports whether a can be a VIP or a backend address: valid, specified, not
// an IPv4-mapped IPv6 address, without zone.
func validUnicast(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.Is4In6() && a.Zone() == ""
}

// serviceKey identifies a service: at most one per key.
type serviceKey struct {
	vip   netip.Addr
	proto byte
	port  uint16
}

func (s Service) key() serviceKey {
	return serviceKey{vip: s.VIP, proto: protoNumber(s.Protocol), port: s.Port}
}

// String prints the key as "tcp 10.96.0.10:80".
func (k serviceKey) String() string {
	proto := "tcp"
	if k.proto == protoNumber("udp") {
		proto = "udp"
	}
	return proto + " " + netip.AddrPortFrom(k.vip, k.port).String()
}

// same reports whether s and o are the same service: same key, name and affinity, and the
// same backends in any order, duplicates ignored.
func (s Service) same(o Service) bool {
	return s.key() == o.key() && s.Name == o.Name && s.Affinity == o.Affinity && s.NodePort == o.NodePort &&
		slices.Equal(sortedBackends(s.Backends), sortedBackends(o.Backends))
}

// sortedBackends returns the backends sorted, without duplicates: the order of the
// backends' indexes in the kernel.
func sortedBackends(bs []netip.AddrPort) []netip.AddrPort {
	bs = slices.Clone(bs)
	slices.SortFunc(bs, netip.AddrPort.Compare)
	return slices.Compact(bs)
}

// hostIP is p.HostIP, or the zero Addr when it stands for every local address.
func (p PortMapping) hostIP() netip.Addr {
	if p.HostIP.IsValid() && p.HostIP.IsUnspecified() {
		return netip.Addr{}
	}
	return p.HostIP
}

// portKey is what the kernel maps: at most one target per key.
type portKey struct {
	v6       bool
	hostIP   netip.Addr
	proto    byte
	hostPort uint16
}

func (p PortMapping) key() portKey {
	return portKey{v6: !p.Addr.Is4(), hostIP: p.hostIP(), proto: protoNumber(p.Protocol), hostPort: p.HostPort}
}

// protoNumber is the IP protocol number of "tcp" or "udp", else 0.
func protoNumber(name string) byte {
	switch name {
	case "tcp":
		return 6
	case "udp":
		return 17
	}
	return 0
}

// validIfName applies the kernel's rules for interface names (dev_valid_name), the
// rule the agent and the plugin apply too (api.CheckIfName).
func validIfName(name string) error { return api.CheckIfName(name) }
