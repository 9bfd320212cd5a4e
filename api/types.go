// Package api holds the types shared by the podnet agent, the CLI and the CNI plugin,
// and the client that speaks the agent's JSON API over its unix socket. It also holds
// the one validation error type, ValidationError, with the validators that the agent and
// the plugin share, and ErrorCode, which gives every error its CNI code.
//
// The package is imported by the lean podnet-cni binary: it must not depend on
// netlink, nftables, the store or any other heavy module.
package api

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// DefaultSocket is where the agent listens unless told otherwise.
const DefaultSocket = "/run/podnet/podnet.sock"

// DefaultStateDir is where the agent keeps its store unless told otherwise.
const DefaultStateDir = "/var/lib/podnet"

// Driver names.
const (
	DriverBridge = "bridge"
	// DriverRouted is pure L3 (Calico style): a /32 (/128) per endpoint, no bridge, the
	// node answers the sandbox's gateway 169.254.1.1 by proxy ARP.
	DriverRouted = "routed"
)

// Port modes: how published ports reach endpoints.
const (
	PortModeNAT   = "nat"   // DNAT in podnet's nftables table (default)
	PortModeProxy = "proxy" // a userland proxy in the agent per mapping
)

// RoutedGateway4 is the IPv4 gateway every sandbox of a routed network uses; nobody
// owns it, the host veth answers ARP for it (proxy_arp).
const RoutedGateway4 = "169.254.1.1"

// RoutedHostMAC is the MAC of every host veth of a routed network (as Calico's).
const RoutedHostMAC = "ee:ee:ee:ee:ee:ee"

// PortMapping publishes ContainerPort of an endpoint on HostPort of the node.
type PortMapping struct {
	// HostIP restricts the mapping to one node address; invalid (zero) means all.
	HostIP        netip.Addr `json:"hostIP,omitzero"`
	HostPort      uint16     `json:"hostPort"`
	ContainerPort uint16     `json:"containerPort"`
	Protocol      string     `json:"protocol"` // "tcp" or "udp"
}

// String renders a mapping as [HOSTIP:]HOSTPORT:CONTAINERPORT/PROTO.
func (m PortMapping) String() string {
	s := fmt.Sprintf("%d:%d/%s", m.HostPort, m.ContainerPort, m.Protocol)
	if m.HostIP.IsValid() {
		host := m.HostIP.String()
		if m.HostIP.Is6() {
			host = "[" + host + "]"
		}
		s = host + ":" + s
	}
	return s
}

// NetworkSpec is a network definition as a user or a CNI config gives it: strings as
// typed, so that validation can name the field and the value that is wrong.
type NetworkSpec struct {
	Name    string   `json:"name"`
	Driver  string   `json:"driver,omitempty"`
	Subnets []string `json:"subnets"`
	// Gateways optionally fixes the gateway of the subnet of the same family.
	Gateways     []string `json:"gateways,omitempty"`
	MTU          int      `json:"mtu,omitempty"`
	NoMasquerade bool     `json:"noMasquerade,omitempty"`
	// PortMode is how published ports reach endpoints: PortModeNAT (default) or PortModeProxy.
	PortMode string `json:"portMode,omitempty"`
	// CrossNode is how pods reach pods of other nodes: CrossNodeVXLAN, CrossNodeDirect,
	// CrossNodeBGP, or "" for a network of one node (the default on the embedded store;
	// on etcd the agent defaults to vxlan).
	CrossNode string `json:"crossNode,omitempty"`
	// BlockSize is the prefix length of the IPv4 address blocks nodes claim (default 26);
	// IPv6 blocks hold as many addresses (/122 for /26). Cross-node networks only.
	BlockSize int `json:"blockSize,omitempty"`
	// VNI and VXLANPort configure the vxlan data path (default: a VNI derived from the
	// name, UDP port 4789).
	VNI       int `json:"vni,omitempty"`
	VXLANPort int `json:"vxlanPort,omitempty"`
}

// Cross-node data paths of a network.
const (
	CrossNodeVXLAN  = "vxlan"  // a VXLAN device per node, static FDB and neighbours
	CrossNodeDirect = "direct" // routes via the other nodes' addresses (one L2 segment)
	CrossNodeBGP    = "bgp"    // routes learned from the other nodes over BGP
)

// Defaults of cross-node networks.
const (
	DefaultBlockSize = 26
	DefaultVXLANPort = 4789
	// VXLANOverhead is what VXLAN adds to a packet on an IPv4 underlay: pods get the
	// underlay's MTU minus this.
	VXLANOverhead = 50
)

// Network is a validated network as the agent stores and reports it.
type Network struct {
	Name       string   `json:"name"`
	Driver     string   `json:"driver"`
	Subnets    []Subnet `json:"subnets"`
	MTU        int      `json:"mtu"`
	Masquerade bool     `json:"masquerade"`
	PortMode   string   `json:"portMode"`
	// Bridge is the host interface of a bridge network.
	Bridge string `json:"bridge,omitempty"`
	// CrossNode, when set, makes the network span the nodes of the cluster: every node
	// claims address blocks (BlockSize4, BlockSize6 prefix lengths) and reaches the
	// others' blocks through CrossNode's data path.
	CrossNode  string    `json:"crossNode,omitempty"`
	BlockSize4 int       `json:"blockSize4,omitempty"`
	BlockSize6 int       `json:"blockSize6,omitempty"`
	VNI        int       `json:"vni,omitempty"`
	VXLANPort  int       `json:"vxlanPort,omitempty"`
	Created    time.Time `json:"created"`
}

// BlockBits returns the block prefix length of a subnet's family.
func (n Network) BlockBits(p netip.Prefix) int {
	if p.Addr().Is4() {
		return n.BlockSize4
	}
	return n.BlockSize6
}

// Node is one node of a cluster as the store records it. IP, Version and Registered
// are what the node's agent says of itself when it registers; PodCIDRs, InternalIP and
// Source are what a source (podnet controller --node-pod-cidrs, from the Kubernetes
// API) says of the node. Each side keeps the other's fields when it writes the record,
// and a source may write it before the node's agent ever registered.
type Node struct {
	Name string `json:"name"`
	// IP is the node's underlay address: other nodes send tunnel packets and route
	// blocks to it.
	IP      netip.Addr `json:"ip"`
	Version string     `json:"version"`
	// Alive: the node's agent holds its lease now (set when reading, not stored).
	Alive      bool      `json:"alive"`
	Registered time.Time `json:"registered"`
	// PodCIDRs are the node's pod ranges (Kubernetes' spec.podCIDRs): in a cross-node
	// network's subnet that they cover, the node claims its blocks only inside them.
	PodCIDRs []netip.Prefix `json:"podCIDRs,omitempty"`
	// InternalIP is the node's address as the source reports it (Kubernetes' status
	// address of type InternalIP); podnet routes to IP, not to it.
	InternalIP netip.Addr `json:"internalIP,omitzero"`
	// Source is where PodCIDRs and InternalIP come from ("": nowhere, the agent's
	// record only).
	Source string `json:"source,omitempty"`
}

// NodeInfo is a node as `podnet node ls` shows it: its record, whether it is alive, and
// the blocks it holds per network.
type NodeInfo struct {
	Node
	Blocks map[string][]netip.Prefix `json:"blocks"`
}

// Block is an address block of a cross-node network that a node claimed: the node
// allocates its pods' addresses inside its blocks without asking the others.
type Block struct {
	Network string       `json:"network"`
	Prefix  netip.Prefix `json:"prefix"`
	Node    string       `json:"node"`
	Claimed time.Time    `json:"claimed"`
}

// DefaultASN is the AS of the nodes until `podnet bgp config --as` sets one (a private
// AS, as Calico's default).
const DefaultASN = 64512

// BGPConfig is the cluster's BGP settings, stored once for all nodes.
type BGPConfig struct {
	// ASN is the AS of every node: the nodes are iBGP peers of one another.
	ASN uint32 `json:"asn"`
	// NodeMesh makes every node peer with every other node (a full iBGP mesh); turn it
	// off when the nodes peer with route reflectors instead.
	NodeMesh bool `json:"nodeMesh"`
}

// BGPConfigRequest sets the cluster's AS, and the node mesh unless NodeMesh is nil.
type BGPConfigRequest struct {
	ASN      uint32 `json:"asn"`
	NodeMesh *bool  `json:"nodeMesh,omitempty"`
}

// BGPPeer is a BGP neighbour that is not a podnet node: a route reflector or a
// top-of-rack router.
type BGPPeer struct {
	Name    string     `json:"name"`
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// Node limits the peer to one node; "" means every node peers with it.
	Node string `json:"node,omitempty"`
}

// BGPSession is one BGP session of a node, as `podnet bgp status` shows it.
type BGPSession struct {
	Node    string     `json:"node"`
	Peer    string     `json:"peer"`
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// Mesh: the peer is another podnet node (the node mesh), not a configured peer.
	Mesh  bool   `json:"mesh"`
	State string `json:"state"`
	// UptimeSeconds is how long the session has been established (0 when it is not).
	UptimeSeconds int64 `json:"uptimeSeconds"`
	// Received and Advertised count prefixes.
	Received   int `json:"received"`
	Advertised int `json:"advertised"`
}

// Subnet is one address range of a network with the gateway address the node holds in it.
type Subnet struct {
	Prefix  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
}

// SubnetFor returns the subnet of n that contains a, if any.
func (n Network) SubnetFor(a netip.Addr) (Subnet, bool) {
	for _, s := range n.Subnets {
		if s.Prefix.Contains(a) {
			return s, true
		}
	}
	return Subnet{}, false
}

// EndpointKey names one attachment: the CNI triple (network, container id, interface).
type EndpointKey struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// String renders the key as network/containerID/ifName; it is also the IPAM owner id.
func (k EndpointKey) String() string {
	return k.Network + "/" + k.ContainerID + "/" + k.IfName
}

// Compare orders keys by network, container ID, then interface name.
func (k EndpointKey) Compare(o EndpointKey) int {
	return cmp.Or(strings.Compare(k.Network, o.Network), strings.Compare(k.ContainerID, o.ContainerID), strings.Compare(k.IfName, o.IfName))
}

// Endpoint is a sandbox attached to a network.
type Endpoint struct {
	EndpointKey
	// Name is an optional human name (podnet run --name, K8S_POD_NAME); it is the
	// endpoint's hostname in DNS.
	Name string `json:"name,omitempty"`
	// Namespace groups endpoints and services (podnet run --namespace,
	// K8S_POD_NAMESPACE); DefaultNamespace when empty.
	Namespace string `json:"namespace,omitempty"`
	// Labels select the endpoint into services and network policies.
	Labels map[string]string `json:"labels,omitempty"`
	// NamedPorts are the endpoint's named container ports, which policies may name.
	NamedPorts []NamedPort `json:"namedPorts,omitempty"`
	// Node is the node the endpoint lives on ("": this node, on a store of one node).
	Node string `json:"node,omitempty"`
	// Netns is the sandbox network namespace path as the runtime gave it (informative:
	// the agent works on the descriptor the client passes).
	Netns string `json:"netns"`
	// HostIf is the node-side interface (veth) name.
	HostIf string `json:"hostIf"`
	// MAC is the sandbox interface's hardware address.
	MAC string `json:"mac"`
	// IPs are the sandbox addresses with the subnet's prefix length.
	IPs []netip.Prefix `json:"ips"`
	// Ports are the endpoint's published ports.
	Ports []PortMapping `json:"ports,omitempty"`
	// State is StateAttaching until the kernel side is complete, then StateAttached;
	// StateDetaching from DEL until the veth pair is gone and the addresses released.
	State   string    `json:"state"`
	Created time.Time `json:"created"`
}

// Endpoint states. An endpoint found attaching when the agent starts was cut off by a
// crash and is rolled back; one found detaching is detached.
const (
	StateAttaching = "attaching"
	StateAttached  = "attached"
	StateDetaching = "detaching"
)

// AttachRequest asks the agent to attach a sandbox to a network (CNI ADD, podnet run).
// The sandbox network namespace travels as a file descriptor with the request; Netns
// is used only when no descriptor came along.
type AttachRequest struct {
	EndpointKey
	Netns     string            `json:"netns"`
	Name      string            `json:"name,omitempty"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Define creates the network when it does not exist; when it exists, Define must agree.
	Define *NetworkSpec `json:"define,omitempty"`
	// IPs are requested static addresses (one per family at most), with or without a prefix length.
	IPs []string `json:"ips,omitempty"`
	// MAC is a requested hardware address for the sandbox interface.
	MAC string `json:"mac,omitempty"`
	// Ports are published ports (CNI portMappings, podnet run -p).
	Ports []PortMapping `json:"ports,omitempty"`
	// NamedPorts are the sandbox's named container ports, which network policies may
	// name (CNI namedPorts, podnet run --named-port).
	NamedPorts []NamedPort `json:"namedPorts,omitempty"`
}

// DetachRequest asks the agent to detach a sandbox (CNI DEL). Succeeds when already gone.
type DetachRequest struct {
	EndpointKey
	Netns string `json:"netns,omitempty"`
}

// CheckRequest asks the agent to verify an attachment in the kernel (CNI CHECK).
type CheckRequest struct {
	EndpointKey
	Netns string `json:"netns,omitempty"`
}

// GCRequest releases every attachment of Network that is not in Valid (CNI GC).
//
// An empty (or null) Valid means that no attachment of Network is still valid: GC
// releases all of them. This is what CNI 1.1 says of cni.dev/valid-attachments, "the
// list of still valid attachments to this network": the plugin "may then remove any
// resources related to attachments that do not exist in this set". A runtime whose
// last container of the network is gone sends that empty list.
type GCRequest struct {
	// Network is the network whose attachments GC may release; it is required.
	Network string `json:"network"`
	// Valid lists the attachments to keep by their whole key: each must name Network,
	// a container ID and an interface name.
	Valid []EndpointKey `json:"valid"`
}

// Validate checks a GC request before anything is released: Network must be given (a GC
// without it would reach every network's endpoints) and every valid attachment must
// carry its whole key on Network (one with a field missing, or of another network,
// would protect nothing, and GC would release what the caller meant to keep). Errors
// are *Error with CodeInvalidConfig that wrap the *ValidationError naming the field.
func (r GCRequest) Validate() error {
	const object = "gc"
	if r.Network == "" {
		return AsError(&ValidationError{Object: object, Field: "network", NoValue: true,
			Reason: "missing (GC releases the attachments of one network and must name it)"})
	}
	for i, k := range r.Valid {
		switch {
		case k.Network != r.Network:
			return AsError(Invalid(object, fmt.Sprintf("valid[%d].network", i), k.Network, "want the request's network %q", r.Network))
		case k.ContainerID == "":
			return AsError(Missing(object, fmt.Sprintf("valid[%d].containerID", i)))
		case k.IfName == "":
			return AsError(Missing(object, fmt.Sprintf("valid[%d].ifName", i)))
		}
	}
	return nil
}

// GCResponse says what GC released.
type GCResponse struct {
	Released []EndpointKey `json:"released"`
}

// Status is the agent's health (CNI STATUS).
type Status struct {
	Ready     bool   `json:"ready"`
	Version   string `json:"version"`
	Networks  int    `json:"networks"`
	Endpoints int    `json:"endpoints"`
	// Netns is the path of the node network namespace the agent manages ("" when it
	// does not know one), so that tools on the node (podnet doctor) read the same one.
	Netns string `json:"netns,omitempty"`
	// FastPath is the eBPF fast path between the pods of the node: nil when it is off
	// (podnet agent --fast-path=false, or a kernel without tcx).
	FastPath *FastPathStatus `json:"fastPath,omitempty"`
}

// FastPathStatus counts what the fast path did since the agent started.
type FastPathStatus struct {
	// Ports are the host veths with its program attached.
	Ports int `json:"ports"`
	// Redirected went straight to the destination pod; Passed are the pods' other
	// frames (ARP too), left to the kernel's path (bridge or forwarding, and nftables).
	RedirectedPackets uint64 `json:"redirectedPackets"`
	RedirectedBytes   uint64 `json:"redirectedBytes"`
	PassedPackets     uint64 `json:"passedPackets"`
	PassedBytes       uint64 `json:"passedBytes"`
}

// Result describes an attachment in the shape of a CNI 1.1 result.
type Result struct {
	Interfaces []Interface `json:"interfaces"`
	IPs        []IPConfig  `json:"ips"`
	Routes     []Route     `json:"routes"`
	DNS        DNS         `json:"dns"`
}

// Interface is one interface of a result; Sandbox is empty for host-side interfaces.
type Interface struct {
	Name    string `json:"name"`
	MAC     string `json:"mac,omitempty"`
	MTU     int    `json:"mtu,omitempty"`
	Sandbox string `json:"sandbox,omitempty"`
}

// IPConfig is one address of a result; Interface indexes Result.Interfaces.
type IPConfig struct {
	Address   netip.Prefix `json:"address"`
	Gateway   netip.Addr   `json:"gateway,omitzero"`
	Interface int          `json:"interface"`
}

// Route is one route of a result; a zero Gateway means on-link.
type Route struct {
	Dst netip.Prefix `json:"dst"`
	GW  netip.Addr   `json:"gw,omitzero"`
}

// DNS is the resolver configuration of a result.
type DNS struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Domain      string   `json:"domain,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// Error codes: the CNI spec's well-known codes, then podnet's own (100 and up, as the
// spec reserves 0-99).
const (
	CodeIncompatibleVersion = 1
	CodeUnsupportedField    = 2
	CodeUnknownContainer    = 3
	CodeInvalidEnv          = 4
	CodeIOFailure           = 5
	CodeDecode              = 6
	CodeInvalidConfig       = 7
	CodeInvalidNetns        = 8 // CNI_NETNS names the plugin's own namespace
	CodeTryAgainLater       = 11
	CodeNotAvailable        = 50
	CodeLimitedConnectivity = 51

	CodeInternal      = 100 // unexpected failure inside the agent
	CodeNotFound      = 101 // the named network or endpoint does not exist
	CodeAddressInUse  = 102 // a requested address is taken
	CodePoolExhausted = 103 // no free address left
	CodeBusy          = 104 // the object is in use (network with endpoints)
	CodeCheckFailed   = 105 // CHECK found the kernel state different from the record
)

// Error is an API error; it has the fields of a CNI error so that the plugin can print
// it as is. An Error made by AsError wraps the error it was made from (a
// *ValidationError, say) for errors.As; that error does not travel over the API.
type Error struct {
	Code    int    `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`

	err error
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + ": " + e.Details
	}
	return e.Msg
}

// Unwrap returns the error e was made from by AsError, if any.
func (e *Error) Unwrap() error { return e.err }

// Errorf builds an *Error with a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the CNI code of err, and is the one place where a kind of error gets
// its code: the code of the *Error err is or wraps; for a *ValidationError,
// CodeInvalidEnv when its value came from the environment, else CodeInvalidConfig;
// CodeInternal for any other error.
func ErrorCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		if ve.Env {
			return CodeInvalidEnv
		}
		return CodeInvalidConfig
	}
	return CodeInternal
}

// AsError returns err as the API error that answers it: the *Error err is or wraps,
// else a new *Error with err's code (ErrorCode) and message, wrapping err so that
// errors.As still finds a *ValidationError in it. nil gives nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: ErrorCode(err), Msg: err.Error(), err: err}
}
