package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/api"
)

// Config is the network configuration a runtime passes on stdin, with podnet's keys.
//
// driver, subnets, gateways, mtu and noMasquerade define the network: when subnets is
// present the agent creates the network if it is missing and refuses (code 7) a
// definition that contradicts the existing one. Without subnets the network must
// already exist, and the other defining keys are refused because they would be ignored.
type Config struct {
	CNIVersion string `json:"cniVersion"`
	// Name is the CNI network name; Network defaults to it.
	Name string `json:"name"`
	Type string `json:"type"`
	// Network is the podnet network to attach to (default: Name).
	Network string `json:"network,omitempty"`
	// Socket is the agent's unix socket (default: api.DefaultSocket).
	Socket string `json:"socket,omitempty"`

	Driver       string   `json:"driver,omitempty"`
	Subnets      []string `json:"subnets,omitempty"`
	Gateways     []string `json:"gateways,omitempty"`
	MTU          int      `json:"mtu,omitempty"`
	NoMasquerade bool     `json:"noMasquerade,omitempty"`
	PortMode     string   `json:"portMode,omitempty"`

	Capabilities  map[string]bool `json:"capabilities,omitempty"`
	RuntimeConfig RuntimeConfig   `json:"runtimeConfig,omitzero"`
	Args          ConfigArgs      `json:"args,omitzero"`

	// PrevResult is kept as sent; the agent's record is authoritative.
	PrevResult json.RawMessage `json:"prevResult,omitempty"`
	// ValidAttachments is the list a GC keeps; nil when the key is absent or null,
	// which GC reads as an empty list (see Plugin.GC).
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
	// attachmentsKey is the key ValidAttachments came from, for errors; empty means
	// cni.dev/valid-attachments.
	attachmentsKey string
}

// RuntimeConfig holds the capability arguments a runtime injects (capabilities ips, mac).
type RuntimeConfig struct {
	IPs          []string      `json:"ips,omitempty"`
	MAC          string        `json:"mac,omitempty"`
	PortMappings []PortMapping `json:"portMappings,omitempty"`
	// Labels select the endpoint into services.
	Labels map[string]string `json:"labels,omitempty"`
}

// PortMapping is one entry of the portMappings capability, as runtimes send it.
// containerd's CRI sends the keys capitalised (HostPort, ContainerPort, Protocol,
// HostIP: go-cni's struct has no JSON tags); encoding/json matches them because it
// matches keys case-insensitively (TestPortMappingsContainerd).
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

// ConfigArgs is the "args" key of a network config; only args.cni.ips is used.
type ConfigArgs struct {
	CNI struct {
		IPs []string `json:"ips,omitempty"`
	} `json:"cni,omitzero"`
}

// EnvArgs are the CNI_ARGS pairs podnet uses. Unknown keys are ignored.
type EnvArgs struct {
	// IPs come from IP=a[,b] (podman passes the requested static addresses there).
	IPs []string
	// MAC comes from MAC=.
	MAC string
	// PodName and PodNamespace come from K8S_POD_NAME and K8S_POD_NAMESPACE.
	PodName      string
	PodNamespace string
}

// ParseConfig decodes, defaults and validates a network config. Errors are *types.Error:
// code 6 (api.CodeDecode) when stdin is not a JSON object, code 7
// (api.CodeInvalidConfig) naming the field and the value that is wrong.
func ParseConfig(stdin []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, decodeError(err)
	}
	c.defaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) defaults() {
	if c.Network == "" {
		c.Network = c.Name
	}
	if c.Socket == "" {
		c.Socket = api.DefaultSocket
	}
	if c.Driver == "" && len(c.Subnets) > 0 {
		c.Driver = api.DriverBridge
	}
}

// decodeConfig decodes only what DEL and GC need (names, socket, the GC list) without
// validating the rest: a config that became invalid after ADD, even with a value of
// the wrong JSON type in a key teardown does not use, must not block teardown.
func decodeConfig(stdin []byte) (*Config, error) {
	var min struct {
		CNIVersion       string               `json:"cniVersion"`
		Name             string               `json:"name"`
		Network          string               `json:"network"`
		Socket           string               `json:"socket"`
		ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments"`
		// Attachments is the spelling of the first GC draft of the spec; libcni sends
		// both (containernetworking/cni#1101).
		Attachments []types.GCAttachment `json:"cni.dev/attachments"`
	}
	if err := json.Unmarshal(stdin, &min); err != nil {
		return nil, decodeError(err)
	}
	c := Config{CNIVersion: min.CNIVersion, Name: min.Name, Network: min.Network, Socket: min.Socket, ValidAttachments: min.ValidAttachments}
	if c.ValidAttachments == nil && min.Attachments != nil {
		c.ValidAttachments, c.attachmentsKey = min.Attachments, "cni.dev/attachments"
	}
	c.defaults()
	if c.Network == "" {
		return nil, invalidConfig("network config: name missing")
	}
	return &c, nil
}

// decodeError turns a json error into a CNI error: a value of the wrong JSON type in a
// field is an invalid config (7), anything else a decoding failure (6).
func decodeError(err error) *types.Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return invalidConfig(fmt.Sprintf("network config: field %q: cannot use JSON %s as %s", te.Field, te.Value, te.Type))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return types.NewError(api.CodeDecode, fmt.Sprintf("decode network config: %v at offset %d", se, se.Offset), "")
	}
	if te != nil {
		return types.NewError(api.CodeDecode, fmt.Sprintf("decode network config: want a JSON object, got %s", te.Value), "")
	}
	return types.NewError(api.CodeDecode, "decode network config: "+err.Error(), "")
}

func invalidConfig(msg string) *types.Error {
	return types.NewError(api.CodeInvalidConfig, msg, "")
}

// validate checks what can be checked cheaply here; the agent validates the network
// itself (overlaps, gateway in subnet, driver names).
func (c *Config) validate() error {
	if c.Name == "" {
		return invalidConfig("network config: name missing")
	}
	if strings.TrimSpace(c.Network) != c.Network || strings.ContainsAny(c.Network, "/\x00") {
		return invalidConfig(fmt.Sprintf("network config: network %q: not a valid network name", c.Network))
	}
	if len(c.Subnets) == 0 {
		switch {
		case len(c.Gateways) > 0:
			return invalidConfig("network config: gateways given without subnets")
		case c.MTU != 0:
			return invalidConfig(fmt.Sprintf("network config: mtu %d given without subnets", c.MTU))
		case c.NoMasquerade:
			return invalidConfig("network config: noMasquerade given without subnets")
		case c.Driver != "":
			return invalidConfig(fmt.Sprintf("network config: driver %q given without subnets", c.Driver))
		case c.PortMode != "":
			return invalidConfig(fmt.Sprintf("network config: portMode %q given without subnets", c.PortMode))
		}
	}
	for i, s := range c.Subnets {
		if _, err := netip.ParsePrefix(s); err != nil {
			return invalidConfig(fmt.Sprintf("network config: subnets[%d] %q: not a CIDR prefix", i, s))
		}
	}
	for i, s := range c.Gateways {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			return invalidConfig(fmt.Sprintf("network config: gateways[%d] %q: not an IP address", i, s))
		}
	}
	if c.MTU < 0 || c.MTU > 65535 {
		return invalidConfig(fmt.Sprintf("network config: mtu %d: out of range 0-65535", c.MTU))
	}
	if _, err := c.requestedIPs(nil); err != nil {
		return err
	}
	if c.RuntimeConfig.MAC != "" {
		if _, err := parseMAC(c.RuntimeConfig.MAC); err != nil {
			return invalidConfig(fmt.Sprintf("network config: runtimeConfig.mac %q: %v", c.RuntimeConfig.MAC, err))
		}
	}
	return c.validateAttachments()
}

// validateAttachments checks that every entry of the GC list names its attachment
// whole: an entry without containerID or ifname would protect nothing.
func (c *Config) validateAttachments() error {
	key := c.attachmentsKey
	if key == "" {
		key = "cni.dev/valid-attachments"
	}
	for i, a := range c.ValidAttachments {
		if a.ContainerID == "" || a.IfName == "" {
			return invalidConfig(fmt.Sprintf("network config: %s[%d]: containerID and ifname are required", key, i))
		}
	}
	return nil
}

// Define returns the network definition the config carries, or nil without subnets.
func (c *Config) Define() *api.NetworkSpec {
	if len(c.Subnets) == 0 {
		return nil
	}
	return &api.NetworkSpec{
		Name:         c.Network,
		Driver:       c.Driver,
		Subnets:      slices.Clone(c.Subnets),
		Gateways:     slices.Clone(c.Gateways),
		MTU:          c.MTU,
		NoMasquerade: c.NoMasquerade,
		PortMode:     c.PortMode,
	}
}

// key is the endpoint key of args on c's network.
func (c *Config) key(args *skel.CmdArgs) api.EndpointKey {
	return api.EndpointKey{Network: c.Network, ContainerID: args.ContainerID, IfName: args.IfName}
}

// AttachRequest builds the request of an ADD. Requested addresses are the union of
// runtimeConfig.ips, args.cni.ips and CNI_ARGS IP, in that order, one entry per address
// (podman passes the same address as "10.88.0.5/16" in runtimeConfig and "10.88.0.5" in
// CNI_ARGS). The MAC comes from runtimeConfig.mac, else CNI_ARGS MAC.
func (c *Config) AttachRequest(args *skel.CmdArgs) (api.AttachRequest, error) {
	env, err := ParseEnvArgs(args.Args)
	if err != nil {
		return api.AttachRequest{}, err
	}
	req := api.AttachRequest{
		EndpointKey: c.key(args),
		Netns:       args.Netns,
		Name:        env.PodName,
		Namespace:   env.PodNamespace,
		Labels:      c.RuntimeConfig.Labels,
		Define:      c.Define(),
	}

	if req.IPs, err = c.requestedIPs(env.IPs); err != nil {
		return api.AttachRequest{}, err
	}

	switch {
	case c.RuntimeConfig.MAC != "":
		mac, err := parseMAC(c.RuntimeConfig.MAC)
		if err != nil {
			return api.AttachRequest{}, invalidConfig(fmt.Sprintf("network config: runtimeConfig.mac %q: %v", c.RuntimeConfig.MAC, err))
		}
		req.MAC = mac.String()
	case env.MAC != "":
		mac, err := parseMAC(env.MAC)
		if err != nil {
			return api.AttachRequest{}, types.NewError(api.CodeInvalidEnv, fmt.Sprintf("CNI_ARGS MAC %q: %v", env.MAC, err), "")
		}
		req.MAC = mac.String()
	}
	for i, pm := range c.RuntimeConfig.PortMappings {
		m, err := pm.mapping()
		if err != nil {
			return api.AttachRequest{}, invalidConfig(fmt.Sprintf("network config: runtimeConfig.portMappings[%d]: %v", i, err))
		}
		req.Ports = append(req.Ports, m)
	}
	return req, nil
}

// mapping converts and checks the fields a plugin can judge alone; conflicts and
// families are the agent's business.
func (pm PortMapping) mapping() (api.PortMapping, error) {
	m := api.PortMapping{Protocol: strings.ToLower(pm.Protocol)}
	if m.Protocol == "" {
		m.Protocol = "tcp"
	}
	if m.Protocol != "tcp" && m.Protocol != "udp" {
		return m, fmt.Errorf("protocol %q: want tcp or udp", pm.Protocol)
	}
	if pm.HostPort < 1 || pm.HostPort > 65535 {
		return m, fmt.Errorf("hostPort %d: want 1-65535", pm.HostPort)
	}
	if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		return m, fmt.Errorf("containerPort %d: want 1-65535", pm.ContainerPort)
	}
	m.HostPort, m.ContainerPort = uint16(pm.HostPort), uint16(pm.ContainerPort)
	// podman and containerd send "" or 0.0.0.0 (also ::) for all addresses.
	if pm.HostIP != "" {
		ip, err := netip.ParseAddr(pm.HostIP)
		if err != nil {
			return m, fmt.Errorf("hostIP %q: not an IP address", pm.HostIP)
		}
		if !ip.IsUnspecified() {
			m.HostIP = ip.Unmap()
		}
	}
	return m, nil
}

// requestedIPs merges runtimeConfig.ips, args.cni.ips and envIPs (CNI_ARGS IP), in that
// order, into one entry per address; an address with a prefix length wins over the same
// bare address, two different prefix lengths for one address are an error.
func (c *Config) requestedIPs(envIPs []string) ([]string, error) {
	type source struct {
		name string
		ips  []string
	}
	var seen []netip.Prefix // as parsed; Bits() == -1 for a bare address
	var from []string
	for _, src := range []source{
		{"runtimeConfig.ips", c.RuntimeConfig.IPs},
		{"args.cni.ips", c.Args.CNI.IPs},
		{"CNI_ARGS IP", envIPs},
	} {
		for i, s := range src.ips {
			p, err := parseIP(s)
			if err != nil {
				return nil, invalidConfig(fmt.Sprintf("network config: %s[%d] %q: %v", src.name, i, s, err))
			}
			j := slices.IndexFunc(seen, func(q netip.Prefix) bool { return q.Addr() == p.Addr() })
			switch {
			case j < 0:
				seen = append(seen, p)
				from = append(from, fmt.Sprintf("%s %q", src.name, s))
			case seen[j].Bits() < 0:
				seen[j] = p
				from[j] = fmt.Sprintf("%s %q", src.name, s)
			case p.Bits() >= 0 && p.Bits() != seen[j].Bits():
				return nil, invalidConfig(fmt.Sprintf("network config: %s %q contradicts %s", src.name, s, from[j]))
			}
		}
	}
	var ips []string
	for _, p := range seen {
		if p.Bits() < 0 {
			ips = append(ips, p.Addr().String())
		} else {
			ips = append(ips, p.String())
		}
	}
	return ips, nil
}

// ParseEnvArgs parses CNI_ARGS ("K=V;K2=V2"). Unknown keys are ignored whatever
// IgnoreUnknown says; a pair without "=" or an IP value that is not an address is an
// error with code 4 (api.CodeInvalidEnv).
func ParseEnvArgs(s string) (EnvArgs, error) {
	var e EnvArgs
	for pair := range strings.SplitSeq(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return EnvArgs{}, types.NewError(api.CodeInvalidEnv, fmt.Sprintf("CNI_ARGS: pair %q is not KEY=VALUE", pair), "")
		}
		switch k {
		case "IP":
			for ip := range strings.SplitSeq(v, ",") {
				ip = strings.TrimSpace(ip)
				if ip == "" {
					continue
				}
				if _, err := parseIP(ip); err != nil {
					return EnvArgs{}, types.NewError(api.CodeInvalidEnv, fmt.Sprintf("CNI_ARGS IP %q: %v", ip, err), "")
				}
				e.IPs = append(e.IPs, ip)
			}
		case "MAC":
			e.MAC = v
		case "K8S_POD_NAME":
			e.PodName = v
		case "K8S_POD_NAMESPACE":
			e.PodNamespace = v
		}
	}
	return e, nil
}

// parseIP accepts an address with or without a prefix length; a bare address is
// returned as a prefix with Bits() == -1.
func parseIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, errors.New("not an IP address or address/prefix-length")
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, errors.New("not an IP address")
	}
	// netip.PrefixFrom with an out-of-range length yields an invalid prefix whose
	// Addr() is still a and Bits() is -1.
	return netip.PrefixFrom(a, -1), nil
}

// parseMAC accepts a unicast 48-bit hardware address.
func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, errors.New("not a 48-bit MAC address")
	}
	if mac[0]&1 != 0 {
		return nil, errors.New("multicast MAC address")
	}
	if bytes.Equal(mac, make(net.HardwareAddr, 6)) {
		return nil, errors.New("all-zero MAC address")
	}
	return mac, nil
}
