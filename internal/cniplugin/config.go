package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/podnet/podnet/api"
)

// Config is the network configuration a runtime passes on stdin, with podnet's keys.
//
// driver, subnets, gateways, mtu, noMasquerade, portMode, crossNode and blockSize
// define the network: when subnets is
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
	// CrossNode and BlockSize define how a network spans nodes (see api.NetworkSpec).
	CrossNode string `json:"crossNode,omitempty"`
	BlockSize int    `json:"blockSize,omitempty"`

	Capabilities  map[string]bool `json:"capabilities,omitempty"`
	RuntimeConfig RuntimeConfig   `json:"runtimeConfig,omitzero"`
	Args          ConfigArgs      `json:"args,omitzero"`

	// PrevResult is kept as sent; the agent's record is authoritative.
	PrevResult json.RawMessage `json:"prevResult,omitempty"`
	// ValidAttachments is the list a GC keeps; nil when the key is absent or null,
	// which GC reads as an empty list (see Plugin.GC).
	ValidAttachments []GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
	// attachmentsKey is the key ValidAttachments came from, for errors; empty means
	// cni.dev/valid-attachments.
	attachmentsKey string
}

// GCAttachment is an entry of a GC's list of attachments that are still valid.
type GCAttachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// RuntimeConfig holds the capability arguments a runtime injects (capabilities ips, mac).
type RuntimeConfig struct {
	IPs          []string      `json:"ips,omitempty"`
	MAC          string        `json:"mac,omitempty"`
	PortMappings []PortMapping `json:"portMappings,omitempty"`
	// Labels select the endpoint into services and network policies.
	Labels map[string]string `json:"labels,omitempty"`
	// NamedPorts are the sandbox's named container ports (capability namedPorts), which
	// network policies may name.
	NamedPorts []api.NamedPort `json:"namedPorts,omitempty"`
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

// ParseConfig decodes, defaults and validates a network config. Errors are an *api.Error
// with code 6 (api.CodeDecode) when stdin is not a JSON object, else an
// *api.ValidationError (code 7, api.CodeInvalidConfig) naming the field and the value
// that is wrong; the definition's subnets, gateways and mtu are judged by the agent's own
// rules (api.ParseSubnet, api.ParseGateway, api.CheckMTU).
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
		CNIVersion       string         `json:"cniVersion"`
		Name             string         `json:"name"`
		Network          string         `json:"network"`
		Socket           string         `json:"socket"`
		ValidAttachments []GCAttachment `json:"cni.dev/valid-attachments"`
		// Attachments is the spelling of the first GC draft of the spec; libcni sends
		// both (containernetworking/cni#1101).
		Attachments []GCAttachment `json:"cni.dev/attachments"`
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
		return nil, api.Missing(configObject, "name")
	}
	return &c, nil
}

// configObject names the network config in errors.
const configObject = "network config"

// decodeError turns a json error into an api error: a value of the wrong JSON type in a
// field is an invalid config (7), anything else a decoding failure (6).
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return &api.ValidationError{Object: configObject, Field: te.Field, NoValue: true,
			Reason: fmt.Sprintf("cannot use JSON %s as %s", te.Value, te.Type)}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return api.Errorf(api.CodeDecode, "decode network config: %v at offset %d", se, se.Offset)
	}
	if te != nil {
		return api.Errorf(api.CodeDecode, "decode network config: want a JSON object, got %s", te.Value)
	}
	return api.Errorf(api.CodeDecode, "decode network config: %v", err)
}

// validate checks each field with the validators the agent uses too; the agent checks
// the network as a whole (overlaps, gateway in subnet, one subnet per family, driver
// names).
func (c *Config) validate() error {
	if c.Name == "" {
		return api.Missing(configObject, "name")
	}
	if err := api.CheckNetworkName(c.Network); err != nil {
		return api.Invalid(configObject, "network", c.Network, "%v", err)
	}
	if len(c.Subnets) == 0 {
		const reason = "given without subnets"
		switch {
		case len(c.Gateways) > 0:
			return api.Invalid(configObject, "gateways", strings.Join(c.Gateways, ","), reason)
		case c.MTU != 0:
			return api.Invalid(configObject, "mtu", strconv.Itoa(c.MTU), reason)
		case c.NoMasquerade:
			return api.Invalid(configObject, "noMasquerade", "true", reason)
		case c.Driver != "":
			return api.Invalid(configObject, "driver", c.Driver, reason)
		case c.PortMode != "":
			return api.Invalid(configObject, "portMode", c.PortMode, reason)
		case c.CrossNode != "":
			return api.Invalid(configObject, "crossNode", c.CrossNode, reason)
		case c.BlockSize != 0:
			return api.Invalid(configObject, "blockSize", strconv.Itoa(c.BlockSize), reason)
		}
	}
	var has6 bool
	for i, s := range c.Subnets {
		p, err := api.ParseSubnet(s)
		if err != nil {
			return api.Invalid(configObject, fmt.Sprintf("subnets[%d]", i), s, "%v", err)
		}
		has6 = has6 || p.Addr().Is6()
	}
	for i, s := range c.Gateways {
		if _, err := api.ParseGateway(s); err != nil {
			return api.Invalid(configObject, fmt.Sprintf("gateways[%d]", i), s, "%v", err)
		}
	}
	if err := api.CheckMTU(c.MTU, has6); err != nil {
		return api.Invalid(configObject, "mtu", strconv.Itoa(c.MTU), "%v", err)
	}
	if _, err := c.requestedIPs(nil); err != nil {
		return err
	}
	if _, err := c.requestedMAC(""); err != nil {
		return err
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
			return &api.ValidationError{Object: configObject, Field: fmt.Sprintf("%s[%d]", key, i), NoValue: true,
				Reason: "containerID and ifname are required"}
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
		CrossNode:    c.CrossNode,
		BlockSize:    c.BlockSize,
	}
}

// key is the endpoint key of args on c's network.
func (c *Config) key(args *CmdArgs) api.EndpointKey {
	return api.EndpointKey{Network: c.Network, ContainerID: args.ContainerID, IfName: args.IfName}
}

// AttachRequest builds the request of an ADD. Requested addresses are the union of
// runtimeConfig.ips, args.cni.ips and CNI_ARGS IP, in that order, one entry per address
// (podman passes the same address as "10.88.0.5/16" in runtimeConfig and "10.88.0.5" in
// CNI_ARGS). The MAC comes from runtimeConfig.mac, else CNI_ARGS MAC. Errors are
// *api.ValidationError, with Env set for CNI_ARGS.
func (c *Config) AttachRequest(args *CmdArgs) (api.AttachRequest, error) {
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
		NamedPorts:  c.RuntimeConfig.NamedPorts,
		Define:      c.Define(),
	}

	if req.IPs, err = c.requestedIPs(env.IPs); err != nil {
		return api.AttachRequest{}, err
	}

	if req.MAC, err = c.requestedMAC(env.MAC); err != nil {
		return api.AttachRequest{}, err
	}
	for i, pm := range c.RuntimeConfig.PortMappings {
		m, err := pm.mapping(fmt.Sprintf("runtimeConfig.portMappings[%d].", i))
		if err != nil {
			return api.AttachRequest{}, err
		}
		req.Ports = append(req.Ports, m)
	}
	return req, nil
}

// requestedMAC returns the MAC of runtimeConfig.mac, else of envMAC (CNI_ARGS MAC), in
// canonical form; "" when neither is given.
func (c *Config) requestedMAC(envMAC string) (string, error) {
	switch {
	case c.RuntimeConfig.MAC != "":
		mac, err := api.ParseMAC(c.RuntimeConfig.MAC)
		if err != nil {
			return "", api.Invalid(configObject, "runtimeConfig.mac", c.RuntimeConfig.MAC, "%v", err)
		}
		return mac.String(), nil
	case envMAC != "":
		mac, err := api.ParseMAC(envMAC)
		if err != nil {
			return "", api.InvalidEnv("CNI_ARGS MAC", envMAC, "%v", err)
		}
		return mac.String(), nil
	}
	return "", nil
}

// mapping converts and checks the fields a plugin can judge alone; conflicts and
// families are the agent's business. Errors name the field as prefix (the entry's key
// and a dot) followed by the field's own key.
func (pm PortMapping) mapping(prefix string) (api.PortMapping, error) {
	bad := func(field, value, reason string) (api.PortMapping, error) {
		return api.PortMapping{}, api.Invalid(configObject, prefix+field, value, "%s", reason)
	}
	m := api.PortMapping{Protocol: strings.ToLower(pm.Protocol)}
	if m.Protocol == "" {
		m.Protocol = "tcp"
	}
	if m.Protocol != "tcp" && m.Protocol != "udp" {
		return bad("protocol", pm.Protocol, "want tcp or udp")
	}
	if pm.HostPort < 1 || pm.HostPort > 65535 {
		return bad("hostPort", strconv.Itoa(pm.HostPort), "want 1-65535")
	}
	if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		return bad("containerPort", strconv.Itoa(pm.ContainerPort), "want 1-65535")
	}
	m.HostPort, m.ContainerPort = uint16(pm.HostPort), uint16(pm.ContainerPort)
	// podman and containerd send "" or 0.0.0.0 (also ::) for all addresses.
	if pm.HostIP != "" {
		ip, err := netip.ParseAddr(pm.HostIP)
		if err != nil {
			return bad("hostIP", pm.HostIP, "not an IP address")
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
				return nil, api.Invalid(configObject, fmt.Sprintf("%s[%d]", src.name, i), s, "%v", err)
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
				return nil, api.Invalid(configObject, src.name, s, "contradicts %s", from[j])
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
// *api.ValidationError of the environment (code 4, api.CodeInvalidEnv).
func ParseEnvArgs(s string) (EnvArgs, error) {
	var e EnvArgs
	for pair := range strings.SplitSeq(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return EnvArgs{}, api.InvalidEnv("CNI_ARGS", s, "pair %q is not KEY=VALUE", pair)
		}
		switch k {
		case "IP":
			for ip := range strings.SplitSeq(v, ",") {
				ip = strings.TrimSpace(ip)
				if ip == "" {
					continue
				}
				if _, err := parseIP(ip); err != nil {
					return EnvArgs{}, api.InvalidEnv("CNI_ARGS IP", ip, "%v", err)
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
