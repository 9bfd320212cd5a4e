package spec

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/podnet/podnet/api"
)

var (
	// dnsLabelRE is an RFC 1123 label, as Kubernetes names of namespaces are.
	dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// serviceNameRE is an RFC 1035 label (starts with a letter), as service names are.
	serviceNameRE = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	labelNameRE   = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	labelValueRE  = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
)

// ValidateNamespace checks a namespace name ("" is the default namespace). Errors are
// *api.ValidationError, as are those of every function of this file.
func ValidateNamespace(ns string) error {
	if ns != "" && !dnsLabelRE.MatchString(ns) {
		return api.Invalid("", "namespace", ns, "must be a DNS label (lowercase letters, digits and '-', at most 63)")
	}
	return nil
}

// ValidateNamedPorts checks an endpoint's named container ports and canonicalises their
// protocols (lowercase, tcp when empty): names as Kubernetes names container ports
// (IANA service names), unique per endpoint; ports 1-65535; tcp, udp or sctp.
func ValidateNamedPorts(ports []api.NamedPort) ([]api.NamedPort, error) {
	out := make([]api.NamedPort, 0, len(ports))
	seen := map[string]bool{}
	for _, p := range ports {
		field := fmt.Sprintf("namedPorts[%q]", p.Name)
		if err := api.CheckPortName(p.Name); err != nil {
			return nil, api.Invalid("", "namedPorts", p.Name, "%v", err)
		}
		if seen[p.Name] {
			return nil, api.Invalid("", "namedPorts", p.Name, "named twice")
		}
		seen[p.Name] = true
		if p.Port == 0 {
			return nil, api.Invalid("", field+".port", "0", "must be 1 to 65535")
		}
		switch p.Protocol = strings.ToLower(p.Protocol); p.Protocol {
		case "":
			p.Protocol = "tcp"
		case "tcp", "udp", "sctp":
		default:
			return nil, api.Invalid("", field+".protocol", p.Protocol, "must be tcp, udp or sctp")
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseNamedPort parses NAME=PORT[/PROTO] (podnet run --named-port); ValidateNamedPorts
// judges the values.
func ParseNamedPort(s string) (api.NamedPort, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return api.NamedPort{}, api.Invalid("", "named port", s, "want NAME=PORT[/tcp|udp|sctp]")
	}
	port, proto, _ := strings.Cut(rest, "/")
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return api.NamedPort{}, api.Invalid("", "named port", s, "port %q: want 1 to 65535", port)
	}
	return api.NamedPort{Name: name, Port: uint16(n), Protocol: proto}, nil
}

// ValidateLabels checks label keys ([prefix/]name) and values as Kubernetes does.
func ValidateLabels(labels map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		name := k
		if i := strings.LastIndexByte(k, '/'); i >= 0 {
			if prefix := k[:i]; prefix == "" || len(prefix) > 253 || !dnsSubdomain(prefix) {
				return api.Invalid("", "label", k, "prefix must be a DNS subdomain")
			}
			name = k[i+1:]
		}
		if !labelNameRE.MatchString(name) {
			return api.Invalid("", "label", k, "name must be 1-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric")
		}
		if !labelValueRE.MatchString(labels[k]) {
			return api.Invalid("", "label", k, "value %q must be at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric", labels[k])
		}
	}
	return nil
}

func dnsSubdomain(s string) bool {
	for _, l := range strings.Split(s, ".") {
		if !dnsLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

// ParseLabels parses "k=v,k2=v2" (and repeated flags joined by the caller).
func ParseLabels(items []string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range items {
		for _, kv := range strings.Split(item, ",") {
			if kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, api.Invalid("", "label", kv, "want key=value")
			}
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out, ValidateLabels(out)
}

// ParseServicePort parses [NAME:]PORT[:TARGETPORT][/tcp|/udp].
func ParseServicePort(s string) (api.ServicePort, error) {
	bad := func(reason string) (api.ServicePort, error) {
		return api.ServicePort{}, api.Invalid("", "port", s, "%s (want [NAME:]PORT[:TARGETPORT][/tcp|/udp])", reason)
	}
	p := api.ServicePort{Protocol: "tcp"}
	rest := s
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		p.Protocol, rest = strings.ToLower(rest[i+1:]), rest[:i]
	}
	parts := strings.Split(rest, ":")
	if len(parts) > 0 && parts[0] != "" && (parts[0][0] < '0' || parts[0][0] > '9') {
		p.Name, parts = parts[0], parts[1:]
	}
	if len(parts) < 1 || len(parts) > 2 {
		return bad("wrong number of fields")
	}
	nums := make([]uint16, len(parts))
	for i, f := range parts {
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return bad(fmt.Sprintf("%q is not a port number 1-65535", f))
		}
		nums[i] = uint16(n)
	}
	p.Port, p.TargetPort = nums[0], nums[0]
	if len(nums) == 2 {
		p.TargetPort = nums[1]
	}
	return p, nil
}

// CanonicalizeService validates a service definition (VIPs and Created are left to the
// caller). Errors name the service, the field and the value.
func CanonicalizeService(s api.ServiceSpec) (api.Service, error) {
	if s.Namespace == "" {
		s.Namespace = api.DefaultNamespace
	}
	fail := func(field, value, format string, args ...any) (api.Service, error) {
		return api.Service{}, api.Invalid(fmt.Sprintf("service %s/%s", s.Namespace, s.Name), field, value, format, args...)
	}
	if !serviceNameRE.MatchString(s.Name) {
		return fail("name", s.Name, "must be a DNS label starting with a letter (lowercase letters, digits and '-', at most 63)")
	}
	if err := ValidateNamespace(s.Namespace); err != nil {
		return fail("namespace", s.Namespace, "must be a DNS label")
	}
	svc := api.Service{Name: s.Name, Namespace: s.Namespace, Headless: s.Headless, Affinity: s.Affinity,
		Source: s.Source, ExternalName: s.ExternalName, InternalTrafficPolicy: s.InternalTrafficPolicy}
	switch {
	case s.Source != "" && s.Source != api.SourceKubernetes:
		return fail("source", s.Source, "want %q or nothing", api.SourceKubernetes)
	case s.ExternalName != "" && (len(s.ExternalName) > 253 || !dnsSubdomain(strings.TrimSuffix(s.ExternalName, "."))):
		return fail("externalName", s.ExternalName, "must be a DNS name (lowercase labels separated by dots)")
	case s.ExternalName != "" && (s.Headless || len(s.VIPs) > 0 || len(s.Selector)+len(s.Endpoints)+len(s.Slices) > 0):
		return fail("externalName", s.ExternalName, "an alias has no VIPs, selector or backends")
	case len(s.Ports) == 0 && !s.Headless && s.ExternalName == "":
		return fail("ports", "", "at least one port is required")
	case len(s.VIPs) > 0 && s.Headless:
		return fail("vips", fmt.Sprint(s.VIPs), "a headless service has no VIPs")
	}
	switch s.InternalTrafficPolicy {
	case "", api.TrafficPolicyCluster, api.TrafficPolicyLocal:
	default:
		return fail("internalTrafficPolicy", s.InternalTrafficPolicy, "want %s or %s", api.TrafficPolicyCluster, api.TrafficPolicyLocal)
	}
	families := map[bool]bool{}
	for _, v := range s.VIPs {
		if !v.IsValid() || v.IsUnspecified() || families[v.Unmap().Is4()] {
			return fail("vips", fmt.Sprint(s.VIPs), "want one valid address per family")
		}
		families[v.Unmap().Is4()] = true
		svc.VIPs = append(svc.VIPs, v.Unmap())
	}
	names := map[string]bool{}
	seen := map[string]bool{}
	nodePorts := map[string]bool{}
	for _, p := range s.Ports {
		p.Protocol = strings.ToLower(p.Protocol)
		if p.Protocol == "" {
			p.Protocol = "tcp"
		}
		if p.TargetPort == 0 {
			p.TargetPort = p.Port
		}
		desc := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		switch {
		case p.Protocol != "tcp" && p.Protocol != "udp":
			return fail("port", desc, "protocol must be tcp or udp")
		case p.Port == 0:
			return fail("port", desc, "port must be 1-65535")
		case seen[desc]:
			return fail("port", desc, "declared twice")
		case p.Name != "" && !dnsLabelRE.MatchString(p.Name):
			return fail("port name", p.Name, "must be a DNS label")
		case p.Name != "" && names[p.Name]:
			return fail("port name", p.Name, "declared twice")
		}
		if p.NodePort != 0 {
			np := fmt.Sprintf("%d/%s", p.NodePort, p.Protocol)
			if nodePorts[np] {
				return fail("nodePort", np, "declared twice")
			}
			nodePorts[np] = true
		}
		seen[desc], names[p.Name] = true, p.Name != ""
		svc.Ports = append(svc.Ports, p)
	}
	switch s.Affinity {
	case "", api.AffinityClientIP:
	default:
		return fail("affinity", s.Affinity, "want %q or nothing", api.AffinityClientIP)
	}
	if len(s.Selector) > 0 && len(s.Endpoints) > 0 || len(s.Slices) > 0 && len(s.Selector)+len(s.Endpoints) > 0 {
		return fail("selector", labelString(s.Selector), "a service has one of a selector, endpoints or slices, not both")
	}
	for _, e := range s.Slices {
		if len(e.Addrs) == 0 {
			return fail("slices", e.Pod, "an endpoint without addresses")
		}
		for _, a := range e.Addrs {
			if !a.IsValid() || a.IsUnspecified() {
				return fail("slices", a.String(), "not an endpoint address")
			}
		}
		for _, p := range e.Ports {
			if p.Port == 0 || p.Protocol != "tcp" && p.Protocol != "udp" && p.Protocol != "sctp" {
				return fail("slices", fmt.Sprintf("%s=%d/%s", p.Name, p.Port, p.Protocol), "want a port 1-65535 of tcp, udp or sctp")
			}
		}
	}
	svc.Slices = slices.Clone(s.Slices)
	if err := ValidateLabels(s.Selector); err != nil {
		return fail("selector", labelString(s.Selector), "%v", err)
	}
	if len(s.Selector) > 0 {
		svc.Selector = maps.Clone(s.Selector)
	}
	for _, e := range s.Endpoints {
		ap, err := parseBackend(e)
		if err != nil {
			return fail("endpoint", e, "%v", err)
		}
		svc.Manual = append(svc.Manual, ap)
	}
	return svc, nil
}

// parseBackend parses IP or IP:PORT ([IPv6]:PORT); a zero port means the target port.
func parseBackend(s string) (netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), 0), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("want IP or IP:PORT")
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func labelString(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// Selects reports whether a selector matches labels (every pair present and equal).
// An empty selector selects nothing: a service without selector has manual backends.
func Selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
