package spec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/podnet/podnet/api"
)

// ParsePort parses a published port as podnet run -p takes it:
// [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp], HOSTIP in brackets for IPv6. Errors are
// *api.ValidationError.
func ParsePort(s string) (api.PortMapping, error) {
	bad := func(reason string) (api.PortMapping, error) {
		return api.PortMapping{}, api.Invalid("", "port", s, "%s (want [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp])", reason)
	}
	m := api.PortMapping{Protocol: "tcp"}
	rest := s
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		m.Protocol, rest = strings.ToLower(rest[i+1:]), rest[:i]
	}
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]:")
		if end < 0 {
			return bad("unterminated [IPv6 address]")
		}
		ip, err := netip.ParseAddr(rest[1:end])
		if err != nil || !ip.Is6() {
			return bad("bad IPv6 host address")
		}
		m.HostIP, rest = ip, rest[end+2:]
	}
	parts := strings.Split(rest, ":")
	switch len(parts) {
	case 2:
	case 3:
		if m.HostIP.IsValid() {
			return bad("too many fields")
		}
		ip, err := netip.ParseAddr(parts[0])
		if err != nil || !ip.Is4() {
			return bad("bad host address " + strconv.Quote(parts[0]))
		}
		m.HostIP, parts = ip, parts[1:]
	default:
		return bad("wrong number of fields")
	}
	hp, err1 := strconv.ParseUint(parts[0], 10, 16)
	cp, err2 := strconv.ParseUint(parts[1], 10, 16)
	if err1 != nil || err2 != nil {
		return bad("ports are numbers from 1 to 65535")
	}
	m.HostPort, m.ContainerPort = uint16(hp), uint16(cp)
	return m, ValidatePort(m)
}

// portObject names a mapping in errors: "port 8080:80/tcp".
func portObject(m api.PortMapping) string {
	return "port " + m.String()
}

// ValidatePort checks one mapping on its own. Errors are *api.ValidationError.
func ValidatePort(m api.PortMapping) error {
	switch {
	case m.Protocol != "tcp" && m.Protocol != "udp":
		return api.Invalid(portObject(m), "protocol", m.Protocol, "want tcp or udp")
	case m.HostPort == 0 || m.ContainerPort == 0:
		return &api.ValidationError{Object: portObject(m), Reason: "ports are numbers from 1 to 65535"}
	case m.HostIP.IsValid() && (m.HostIP.IsMulticast() || m.HostIP.IsUnspecified() || m.HostIP.Zone() != ""):
		return api.Invalid(portObject(m), "hostIP", m.HostIP.String(), "want a unicast address of the node (or none for all)")
	}
	return nil
}

// ValidatePorts checks a set of mappings of one endpoint whose addresses are addrs:
// each valid, no host port twice, a host address only of a family the endpoint has.
// Errors are *api.ValidationError.
func ValidatePorts(ms []api.PortMapping, addrs []netip.Prefix) error {
	seen := map[string]bool{}
	for _, m := range ms {
		if err := ValidatePort(m); err != nil {
			return err
		}
		key := fmt.Sprintf("%s/%d", m.Protocol, m.HostPort)
		if seen[key] {
			return &api.ValidationError{Object: portObject(m), Reason: fmt.Sprintf("host port %d/%s published twice", m.HostPort, m.Protocol)}
		}
		seen[key] = true
		if m.HostIP.IsValid() && !hasFamily(addrs, m.HostIP.Is4()) {
			return api.Invalid(portObject(m), "hostIP", m.HostIP.String(), "the endpoint has no address of that family")
		}
	}
	return nil
}

func hasFamily(addrs []netip.Prefix, v4 bool) bool {
	for _, a := range addrs {
		if a.Addr().Is4() == v4 {
			return true
		}
	}
	return false
}

// PortConflict returns the owner of a published port that m would collide with: one on
// the same host address, or either of them on all addresses.
func PortConflict(m api.PortMapping, owners map[netip.Addr]string) (netip.Addr, string, bool) {
	for ip, owner := range owners {
		if !ip.IsValid() || !m.HostIP.IsValid() || ip == m.HostIP {
			return ip, owner, true
		}
	}
	return netip.Addr{}, "", false
}
