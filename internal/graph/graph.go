// Package graph draws a podnet node: its network namespaces (the node's, and each
// sandbox's as the endpoints record them), bridges, veth pairs (host veth <-> sandbox
// interface with its addresses), routed endpoints (host veth with its /32 and /128
// routes), the node's routes towards pod ranges, published ports (host port ->
// endpoint address:port) and service VIPs (VIP:port -> backends).
//
// Build turns what the agent knows (networks, endpoints, services with their backends;
// optionally kernel facts of the node namespace read by the caller, its routes) into a
// Graph: plain data, nodes with kinds and labels, and edges. It is pure: what each
// endpoint needs on the node comes from internal/driver, the same plans the agent
// applies. Renderers: JSON (Graph.JSON), Graphviz DOT (Graph.DOT) and SVG drawn by podnet
// itself (Graph.SVG, a layered layout: entry points, routes, bridges, host veths, then
// the sandboxes). Handler serves them and a live page over HTTP.
//
// # JSON
//
// The JSON form is the Graph as encoded by encoding/json; its field names are stable:
//
//	{"nodes": [{"id", "kind", "label", "namespace", "network", "details", "state"}],
//	 "edges": [{"from", "to", "kind", "label"}]}
//
// A node's "id" is unique and stable across builds ("ns:node", "ns:<netns path>",
// "bridge:<name>", "tunnel:<name>", "link:<name>", "veth:<host veth>", "if:<network>/<container>/<ifname>",
// "route:<dst> dev <dev>", "port:<proto> <host address>:<port>",
// "service:<namespace>/<name> <vip>:<port>/<proto>", "addr:<ip>"). "kind" is one of the
// Kind constants, "namespace" the id of the namespace node that holds the node (empty
// for namespaces and for backends outside any sandbox), "network" the podnet network it
// belongs to, "details" extra lines (addresses, MAC, netns path), "state" what is
// abnormal or known about it (see the State constants; empty: nothing to say). An
// edge's "kind" is one of the EdgeKind constants and its "label" the address:port it
// leads to, for published ports and service backends. Nodes are ordered by kind, then
// id (the node's namespace first); edges by from, to, kind and label: two builds of
// the same input are byte-equal, whatever the order of the input.
package graph

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/spec"
)

// Kind is what a node of the graph is.
type Kind string

// Kinds of nodes, in the order the renderers lay them out.
const (
	// KindNamespace is a network namespace: the node's ("ns:node") or a sandbox's.
	KindNamespace Kind = "namespace"
	// KindPort is a published port of the node (host address:port/proto).
	KindPort Kind = "port"
	// KindService is one VIP:port/proto of a service.
	KindService Kind = "service"
	// KindRoute is a route of the node towards a pod range.
	KindRoute Kind = "route"
	// KindBridge is the bridge of a bridge network.
	KindBridge Kind = "bridge"
	// KindTunnel is an overlay device of the node (vxlan, geneve, ipip, gre).
	KindTunnel Kind = "tunnel"
	// KindLink is an interface of the node that podnet does not own, which a route
	// towards a pod range or a tunnel goes through.
	KindLink Kind = "link"
	// KindVeth is the host end of an endpoint's veth pair, in the node.
	KindVeth Kind = "veth"
	// KindInterface is the sandbox end of an endpoint's veth pair, with its addresses.
	KindInterface Kind = "interface"
	// KindAddress is a service backend that is no endpoint's address (given by hand).
	KindAddress Kind = "address"
)

var kindRank = map[Kind]int{KindNamespace: 0, KindPort: 1, KindService: 2, KindRoute: 3, KindBridge: 4,
	KindTunnel: 5, KindLink: 6, KindVeth: 7, KindInterface: 8, KindAddress: 9}

// EdgeKind is what an edge of the graph is.
type EdgeKind string

// Kinds of edges.
const (
	// EdgeVeth joins the two ends of a veth pair (host veth -> sandbox interface).
	EdgeVeth EdgeKind = "veth"
	// EdgeMaster makes a host veth a port of a bridge (host veth -> bridge).
	EdgeMaster EdgeKind = "master"
	// EdgeRoute leads a route to the interface it goes through (route -> device).
	EdgeRoute EdgeKind = "route"
	// EdgeUnderlay leads a tunnel to the device its encapsulated packets leave by.
	EdgeUnderlay EdgeKind = "underlay"
	// EdgeDNAT leads a published port to an endpoint address (port -> interface) by
	// DNAT in nftables; the label is the address:port.
	EdgeDNAT EdgeKind = "dnat"
	// EdgeProxy leads a published port to an endpoint address through the agent's
	// userland proxy (port mode proxy); the label is the address:port.
	EdgeProxy EdgeKind = "proxy"
	// EdgeBackend leads a service VIP:port to a ready backend (service -> interface or
	// address); the label is the backend's address:port.
	EdgeBackend EdgeKind = "backend"
)

// States of nodes. Routes have a state only when Build had kernel facts; endpoints
// (their veth and interface) only while they are not attached.
const (
	// StateOK: an intended route that the kernel has.
	StateOK = "ok"
	// StateMissing: a route podnet intends that the kernel does not have.
	StateMissing = "missing"
	// StateUnexpected: a kernel route towards a pod range that podnet did not make (a
	// leftover, another plugin's route): it may take the pods' traffic.
	StateUnexpected = "unexpected"
)

// Graph is a drawing of one node: nodes and edges.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Node is one object of the drawing.
type Node struct {
	ID    string `json:"id"`
	Kind  Kind   `json:"kind"`
	Label string `json:"label"`
	// Namespace is the ID of the namespace node that holds this one.
	Namespace string   `json:"namespace,omitempty"`
	Network   string   `json:"network,omitempty"`
	Details   []string `json:"details,omitempty"`
	State     string   `json:"state,omitempty"`
}

// Edge joins two nodes by their IDs.
type Edge struct {
	From  string   `json:"from"`
	To    string   `json:"to"`
	Kind  EdgeKind `json:"kind"`
	Label string   `json:"label,omitempty"`
}

// Input is what Build draws: the agent's records and, optionally, kernel facts.
type Input struct {
	Networks  []api.Network
	Endpoints []api.Endpoint
	// Services come with their ready backends (api.Service.Backends), as the agent
	// reports them.
	Services []api.Service
	// Node is the node's name in a cluster ("" on a store of one node): a service with
	// TrafficPolicyLocal leads to this node's backends only.
	Node string
	// Kernel holds facts read from the node namespace; nil draws what podnet intends
	// without saying whether the kernel agrees.
	Kernel *Kernel
}

// Kernel is what the caller read from the node namespace.
type Kernel struct {
	// Routes are the node's routes (main table); Build draws those towards pod ranges.
	Routes []Route
	// Tunnels are the node's overlay devices; Build draws each, with its underlay
	// device, and the routes through it.
	Tunnels []spec.Tunnel
}

// Route is a route of the node: a destination through a device ("" for none, such as
// a blackhole route).
type Route struct {
	Dst netip.Prefix
	Dev string
}

// NodeNamespace is the ID of the node's namespace.
const NodeNamespace = "ns:node"

// Build draws in. It never fails: an endpoint of a network it does not know is drawn
// from its record alone (no bridge, routes or ports).
func Build(in Input) Graph {
	b := &builder{node: in.Node, nodes: map[string]*Node{}, addrIf: map[netip.Addr]string{}, named: map[string]bool{},
		devs: map[string]string{}}
	b.add(Node{ID: NodeNamespace, Kind: KindNamespace, Label: "node"})
	nets := map[string]api.Network{}
	var pods []netip.Prefix // the pod ranges
	for _, n := range in.Networks {
		nets[n.Name] = n
		for _, s := range n.Subnets {
			pods = append(pods, s.Prefix.Masked())
		}
		if n.Bridge == "" {
			continue
		}
		br := Node{ID: "bridge:" + n.Bridge, Kind: KindBridge, Label: n.Bridge, Namespace: NodeNamespace,
			Network: n.Name, Details: []string{"network " + n.Name}}
		for _, a := range driver.NetworkFor(n).Bridge.Addrs {
			br.Details = append(br.Details, a.String())
			b.intend(Route{Dst: a.Masked(), Dev: n.Bridge}, n.Name)
		}
		b.add(br)
	}
	// In key order, whatever the caller's: the first endpoint of a sandbox names it,
	// and the first interface that has an address is the one a backend leads to.
	eps := slices.SortedFunc(slices.Values(in.Endpoints), func(x, y api.Endpoint) int {
		return strings.Compare(x.EndpointKey.String(), y.EndpointKey.String())
	})
	var ports []portEdge
	for _, ep := range eps {
		ports = append(ports, b.endpoint(ep, nets)...)
	}
	b.ports(ports)
	for _, svc := range in.Services {
		b.service(svc)
	}
	if in.Kernel != nil {
		for _, t := range in.Kernel.Tunnels {
			b.tunnel(t)
		}
	}
	b.routes(in.Kernel, pods)
	return b.graph()
}

type builder struct {
	node   string // Input.Node
	nodes  map[string]*Node
	edges  []Edge
	addrIf map[netip.Addr]string // endpoint address -> its interface's ID
	// intended are the routes podnet intends, with their network.
	intended []intendedRoute
	// devs maps the names of podnet's interfaces of the node (bridges, host veths) to
	// their node IDs.
	devs map[string]string
	// named holds the sandboxes that an endpoint's name labels.
	named map[string]bool
}

type intendedRoute struct {
	Route
	network string
}

// portEdge is one published port's way to one endpoint address.
type portEdge struct {
	m    api.PortMapping
	kind EdgeKind
	to   string
	dst  netip.AddrPort
}

func (b *builder) add(n Node) *Node {
	if old, ok := b.nodes[n.ID]; ok {
		return old
	}
	b.nodes[n.ID] = &n
	if n.Kind == KindBridge || n.Kind == KindVeth || n.Kind == KindTunnel {
		b.devs[n.Label] = n.ID
	}
	return &n
}

func (b *builder) edge(from, to string, kind EdgeKind, label string) {
	b.edges = append(b.edges, Edge{From: from, To: to, Kind: kind, Label: label})
}

func (b *builder) intend(r Route, network string) {
	b.intended = append(b.intended, intendedRoute{r, network})
}

// endpoint draws an endpoint: its sandbox, veth pair, bridge port and routes; it
// returns its published ports' ways, drawn once every endpoint is.
func (b *builder) endpoint(ep api.Endpoint, nets map[string]api.Network) []portEdge {
	sbID := "ns:" + ep.Netns
	if ep.Netns == "" {
		sbID = "ns:container:" + ep.ContainerID
	}
	sb := b.add(Node{ID: sbID, Kind: KindNamespace, Label: shortID(ep.ContainerID), Details: sandboxDetails(ep)})
	if ep.Name != "" && !b.named[sbID] { // the first named endpoint names its sandbox
		sb.Label, b.named[sbID] = ep.Name, true
	}
	state := ""
	if ep.State != api.StateAttached {
		state = ep.State
	}
	n, known := nets[ep.Network]
	addrs := ep.IPs
	var plan driver.Endpoint
	if known {
		plan = driver.EndpointFor(n, ep)
		addrs = plan.Kernel.Addrs
	}
	ifID := "if:" + ep.EndpointKey.String()
	iface := Node{ID: ifID, Kind: KindInterface, Label: ep.IfName, Namespace: sbID, Network: ep.Network, State: state}
	for _, a := range addrs {
		iface.Details = append(iface.Details, a.String())
		if _, taken := b.addrIf[a.Addr()]; !taken {
			b.addrIf[a.Addr()] = ifID
		}
	}
	if ep.MAC != "" {
		iface.Details = append(iface.Details, "mac "+ep.MAC)
	}
	b.add(iface)
	if ep.HostIf == "" {
		return nil
	}
	vethID := "veth:" + ep.HostIf
	veth := Node{ID: vethID, Kind: KindVeth, Label: ep.HostIf, Namespace: NodeNamespace, Network: ep.Network,
		Details: []string{"network " + ep.Network}, State: state}
	if known && plan.Kernel.Master == "" { // routed: the host veth is the sandbox's gateway
		veth.Details[0] += " (routed)"
		var extra []string
		for _, sc := range plan.Kernel.HostSysctls {
			if strings.HasSuffix(sc.Key, "/proxy_arp") && sc.Value == "1" {
				extra = append(extra, "proxy_arp")
			}
		}
		if plan.Kernel.HostMAC != nil {
			extra = append(extra, "mac "+plan.Kernel.HostMAC.String())
		}
		veth.Details = append(veth.Details, strings.Join(extra, ", "))
	}
	b.add(veth)
	b.edge(vethID, ifID, EdgeVeth, "")
	if !known {
		return nil
	}
	if plan.Kernel.Master != "" {
		b.edge(vethID, "bridge:"+plan.Kernel.Master, EdgeMaster, "")
	}
	for _, r := range plan.Kernel.NodeRoutes {
		b.intend(Route{Dst: r.Dst, Dev: ep.HostIf}, ep.Network)
	}
	var out []portEdge
	for _, p := range plan.Tables.Ports {
		out = append(out, portEdge{m: api.PortMapping{HostIP: p.HostIP, HostPort: p.HostPort, Protocol: p.Protocol},
			kind: EdgeDNAT, to: ifID, dst: netip.AddrPortFrom(p.Addr, p.Port)})
	}
	for _, p := range plan.Proxies {
		out = append(out, portEdge{m: api.PortMapping{HostIP: p.HostIP, HostPort: p.HostPort, Protocol: p.Protocol},
			kind: EdgeProxy, to: ifID, dst: p.Backend})
	}
	return out
}

func sandboxDetails(ep api.Endpoint) []string {
	var d []string
	if ep.Netns != "" {
		d = append(d, ep.Netns)
	}
	return append(d, "container "+shortID(ep.ContainerID))
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ports draws the published ports, one node per host address, port and protocol.
func (b *builder) ports(ways []portEdge) {
	for _, w := range ways {
		host := "*"
		if w.m.HostIP.IsValid() {
			host = w.m.HostIP.String()
			if w.m.HostIP.Is6() {
				host = "[" + host + "]"
			}
		}
		label := fmt.Sprintf("%s:%d/%s", host, w.m.HostPort, w.m.Protocol)
		id := "port:" + w.m.Protocol + " " + host + fmt.Sprintf(":%d", w.m.HostPort)
		how := "nat"
		if w.kind == EdgeProxy {
			how = "proxy"
		}
		b.add(Node{ID: id, Kind: KindPort, Label: label, Namespace: NodeNamespace,
			Network: b.nodes[w.to].Network, Details: []string{"published (" + how + ")"}})
		b.edge(id, w.to, w.kind, w.dst.String())
	}
}

// service draws one node per VIP, port and protocol of svc, each with its backends.
func (b *builder) service(svc api.Service) {
	name := svc.Namespace + "/" + svc.Name
	for _, t := range driver.ServiceTables(svc, b.node) {
		vip := netip.AddrPortFrom(t.VIP, t.Port).String() + "/" + t.Protocol
		id := "service:" + name + " " + vip
		n := Node{ID: id, Kind: KindService, Label: vip, Namespace: NodeNamespace, Details: []string{"service " + name}}
		if t.Affinity {
			n.Details = append(n.Details, "affinity "+api.AffinityClientIP)
		}
		if len(t.Backends) == 0 {
			n.Details = append(n.Details, "no backends: rejects")
		}
		b.add(n)
		for _, be := range t.Backends {
			to, ok := b.addrIf[be.Addr()]
			if !ok {
				to = "addr:" + be.Addr().String()
				b.add(Node{ID: to, Kind: KindAddress, Label: be.Addr().String(), Details: []string{"backend by address"}})
			}
			b.edge(id, to, EdgeBackend, be.String())
		}
	}
}

// routes draws the intended routes, and with kernel facts compares them with the
// kernel's routes towards pod ranges.
func (b *builder) routes(k *Kernel, pods []netip.Prefix) {
	type entry struct {
		network string
		state   string
	}
	all := map[Route]*entry{}
	for _, r := range b.intended {
		if _, ok := all[r.Route]; !ok {
			all[r.Route] = &entry{network: r.network}
		}
	}
	if k != nil {
		for _, e := range all {
			e.state = StateMissing
		}
		for _, r := range k.Routes {
			r.Dst = r.Dst.Masked()
			if r.Dst.Bits() == 0 || !slices.ContainsFunc(pods, r.Dst.Overlaps) {
				continue // the default route, or not towards a pod range
			}
			if e, ok := all[r]; ok {
				e.state = StateOK
			} else {
				all[r] = &entry{network: networkOf(r.Dst, b.intended), state: StateUnexpected}
			}
		}
	}
	for r, e := range all {
		label := r.Dst.String()
		if r.Dev != "" {
			label += " dev " + r.Dev
		}
		id := "route:" + label
		b.add(Node{ID: id, Kind: KindRoute, Label: label, Namespace: NodeNamespace, Network: e.network, State: e.state})
		if r.Dev == "" {
			continue
		}
		b.edge(id, b.link(r.Dev), EdgeRoute, "")
	}
}

// tunnel draws an overlay device of the node and its underlay device.
func (b *builder) tunnel(t spec.Tunnel) {
	id := "tunnel:" + t.Name
	head := t.Kind
	if t.ID != 0 {
		head += fmt.Sprintf(" id %d", t.ID)
	}
	if t.Port != 0 {
		head += fmt.Sprintf(" dstport %d", t.Port)
	}
	details := []string{head, fmt.Sprintf("mtu %d", t.MTU)}
	if t.Local.IsValid() {
		details = append(details, "local "+t.Local.String())
	}
	b.add(Node{ID: id, Kind: KindTunnel, Label: t.Name, Namespace: NodeNamespace, Details: details})
	if t.Dev != "" {
		dev := b.link(t.Dev)
		b.edge(id, dev, EdgeUnderlay, "")
	}
}

// link returns the node ID of the node's interface dev: podnet's, a tunnel, or one that
// is not podnet's.
func (b *builder) link(dev string) string {
	if id, ok := b.devs[dev]; ok {
		return id
	}
	id := "link:" + dev
	b.add(Node{ID: id, Kind: KindLink, Label: dev, Namespace: NodeNamespace, Details: []string{"not podnet's"}})
	return id
}

// networkOf names the network whose intended routes overlap dst, if one does.
func networkOf(dst netip.Prefix, intended []intendedRoute) string {
	for _, r := range intended {
		if r.Dst.Overlaps(dst) {
			return r.network
		}
	}
	return ""
}

// graph returns the nodes and edges in their stable order.
func (b *builder) graph() Graph {
	g := Graph{Nodes: make([]Node, 0, len(b.nodes)), Edges: b.edges}
	for _, n := range b.nodes {
		g.Nodes = append(g.Nodes, *n)
	}
	slices.SortFunc(g.Nodes, func(x, y Node) int {
		return cmp.Or(cmp.Compare(kindRank[x.Kind], kindRank[y.Kind]),
			cmp.Compare(boolRank(x.ID != NodeNamespace), boolRank(y.ID != NodeNamespace)), cmp.Compare(x.ID, y.ID))
	})
	slices.SortFunc(g.Edges, func(x, y Edge) int {
		return cmp.Or(strings.Compare(x.From, y.From), strings.Compare(x.To, y.To),
			strings.Compare(string(x.Kind), string(y.Kind)), strings.Compare(x.Label, y.Label))
	})
	g.Edges = slices.Compact(g.Edges)
	if g.Edges == nil {
		g.Edges = []Edge{}
	}
	return g
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// JSON renders g as indented JSON (see the package doc for its fields).
func (g Graph) JSON() []byte {
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		panic(err) // strings and slices of them only
	}
	return append(b, '\n')
}

// Node returns the node of that ID.
func (g Graph) Node(id string) (Node, bool) {
	i := slices.IndexFunc(g.Nodes, func(n Node) bool { return n.ID == id })
	if i < 0 {
		return Node{}, false
	}
	return g.Nodes[i], true
}
