package api

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ValidationError says that a value is invalid: Field of Object holds Value, which is
// wrong for Reason. It is the one error type of validation, wherever it happens: network
// and service definitions, API requests, IPAM's static addresses, the CNI plugin's
// network config and CNI_* variables. ErrorCode gives its CNI code, AsError the API
// error that carries it; errors.As finds it through both and through %w wrapping.
type ValidationError struct {
	// Object names what holds the field as messages spell it: `network "blue"`,
	// `service default/web`, "port 8080:80/tcp", "network config"; empty when the field
	// alone says enough.
	Object string
	// Field is the field as its key is spelled ("subnet", "runtimeConfig.mac",
	// "CNI_IFNAME"); empty when the whole object is at fault.
	Field string
	// Value is the field's value as given.
	Value string
	// NoValue leaves Value out of the message: the field is missing, or its value
	// cannot be shown (a value of the wrong JSON type).
	NoValue bool
	// Reason says what is wrong.
	Reason string
	// Env marks a value that came from the runtime's environment (CNI_* variables,
	// CNI_ARGS) rather than from a configuration or request: its code is
	// CodeInvalidEnv, not CodeInvalidConfig.
	Env bool
}

// Error renders `OBJECT: FIELD "VALUE": REASON`, leaving out what is empty (and the
// value when NoValue is set), e.g. `network "blue": subnet "10.0.0.0/33": not a CIDR
// prefix` or `gc: network: missing`.
func (e *ValidationError) Error() string {
	var b strings.Builder
	if e.Object != "" {
		b.WriteString(e.Object)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		if !e.NoValue {
			b.WriteByte(' ')
			b.WriteString(strconv.Quote(e.Value))
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Invalid returns the error of field of object holding value, with a formatted reason.
func Invalid(object, field, value, format string, args ...any) *ValidationError {
	return &ValidationError{Object: object, Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// Missing returns the error of a required field that object lacks or leaves empty.
func Missing(object, field string) *ValidationError {
	return &ValidationError{Object: object, Field: field, NoValue: true, Reason: "missing"}
}

// InvalidEnv returns the error of an environment variable (or a CNI_ARGS key) holding
// value, with a formatted reason.
func InvalidEnv(variable, value, format string, args ...any) *ValidationError {
	return &ValidationError{Field: variable, Value: value, Reason: fmt.Sprintf(format, args...), Env: true}
}

// MissingEnv returns the error of a required environment variable that is unset or empty.
func MissingEnv(variable string) *ValidationError {
	return &ValidationError{Field: variable, NoValue: true, Reason: "missing", Env: true}
}

// The validators below are shared by the agent and the CNI plugin, so that a value is
// judged by one rule wherever it is checked. Each returns the reason alone (an error
// such as "not a CIDR prefix"): the caller names the object and the field, since one
// value arrives under different keys (a network's "subnet", the plugin's "subnets[0]").

// Limits of a network's MTU.
const (
	DefaultMTU = 1500
	MinMTU     = 576
	MinMTU6    = 1280 // IPv6 needs at least this
	MaxMTU     = 65535
)

// Smallest subnets: a gateway and at least one sandbox must fit.
const (
	maxBits4 = 30
	maxBits6 = 126
)

// reservedRanges can never hold pod addresses.
var reservedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/127"), // unspecified and loopback
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// ValidName reports whether s is made of letters, digits, '_', '.' and '-', starting
// with a letter or digit: the characters of a network name and of a container ID.
func ValidName(s string) bool {
	ok := s != "" && alnum(s[0])
	for i := 1; ok && i < len(s); i++ {
		c := s[i]
		ok = alnum(c) || c == '_' || c == '.' || c == '-'
	}
	return ok
}

// CheckNetworkName checks a network name: 1-63 letters, digits, '_', '.' or '-',
// starting with a letter or digit.
func CheckNetworkName(name string) error {
	if len(name) > 63 || !ValidName(name) {
		return errors.New("must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit")
	}
	return nil
}

func alnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ParseSubnet parses one subnet of a network definition (spaces around it are ignored)
// and checks it on its own: a CIDR prefix without zone or host bits, not IPv4-mapped,
// with room for a gateway and a sandbox, clear of reserved ranges (loopback, multicast,
// link-local, unspecified). Rules between subnets (one per family, overlaps) are the
// agent's.
func ParseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	switch {
	case err != nil: // zones too: netip.ParsePrefix refuses them
		return netip.Prefix{}, errors.New("not a CIDR prefix")
	case p.Masked() != p:
		return netip.Prefix{}, fmt.Errorf("host bits are set (did you mean %s?)", p.Masked())
	case p.Addr().Is4In6():
		return netip.Prefix{}, errors.New("IPv4-mapped IPv6 prefixes are not allowed")
	case p.Addr().Is4() && p.Bits() > maxBits4:
		return netip.Prefix{}, fmt.Errorf("too small: at most /%d", maxBits4)
	case p.Addr().Is6() && p.Bits() > maxBits6:
		return netip.Prefix{}, fmt.Errorf("too small: at most /%d", maxBits6)
	}
	for _, r := range reservedRanges {
		if r.Overlaps(p) {
			return netip.Prefix{}, fmt.Errorf("overlaps reserved range %s (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)", r)
		}
	}
	return p, nil
}

// ParseGateway parses the gateway of a network definition (spaces around it are
// ignored): an IP address without zone. Whether it lies in a subnet is the agent's check.
func ParseGateway(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	switch {
	case err != nil:
		return netip.Addr{}, errors.New("not an IP address")
	case a.Zone() != "":
		return netip.Addr{}, errors.New("zones are not allowed")
	}
	return a, nil
}

// CheckMTU checks the MTU of a network definition: 0 (DefaultMTU) or MinMTU to MaxMTU,
// and at least MinMTU6 when the network has an IPv6 subnet.
func CheckMTU(mtu int, ipv6 bool) error {
	switch {
	case mtu == 0:
	case mtu < MinMTU || mtu > MaxMTU:
		return fmt.Errorf("must be between %d and %d", MinMTU, MaxMTU)
	case ipv6 && mtu < MinMTU6:
		return fmt.Errorf("IPv6 needs at least %d", MinMTU6)
	}
	return nil
}

// ParseMAC parses the requested hardware address of a sandbox interface: a unicast,
// non-zero 48-bit MAC.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	switch {
	case err != nil || len(mac) != 6:
		return nil, errors.New("not a 48-bit MAC address")
	case mac[0]&1 != 0:
		return nil, errors.New("multicast MAC address")
	case bytes.Equal(mac, make(net.HardwareAddr, 6)):
		return nil, errors.New("all-zero MAC address")
	}
	return mac, nil
}

// CheckIfName checks a sandbox interface name as the kernel does (dev_valid_name): 1-15
// bytes (IFNAMSIZ-1), not "." or "..", without '/', ':', white space or NUL.
func CheckIfName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\v\f\r\x00") {
		return errors.New("must be 1-15 bytes without '/', ':' or spaces")
	}
	return nil
}

// ValidIfName reports whether name can be a sandbox interface name (CheckIfName).
func ValidIfName(name string) bool {
	return CheckIfName(name) == nil
}

// CheckPortName checks a port name as Kubernetes checks container port names (an IANA
// service name): 1-15 lowercase letters, digits and '-', with at least one letter, not
// starting or ending with '-', without "--".
func CheckPortName(name string) error {
	letter := false
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z':
			letter = true
		case '0' <= c && c <= '9', c == '-':
		default:
			return errors.New("must be lowercase letters, digits and '-' (an IANA service name)")
		}
	}
	switch {
	case name == "" || len(name) > 15:
		return errors.New("must be 1 to 15 characters")
	case !letter:
		return errors.New("must contain a letter")
	case name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--"):
		return errors.New("must not start or end with '-' nor contain \"--\"")
	}
	return nil
}
