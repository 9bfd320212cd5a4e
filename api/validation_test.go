package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestValidationErrorMessage(t *testing.T) {
	for _, tt := range []struct {
		err  *ValidationError
		want string
	}{
		{Invalid(`network "blue"`, "subnet", "10.0.0.0/33", "not a CIDR prefix"), `network "blue": subnet "10.0.0.0/33": not a CIDR prefix`},
		{Invalid(`network "blue"`, "subnets", "", "at least one subnet is required"), `network "blue": subnets "": at least one subnet is required`},
		{Invalid("", "namespace", "Web", "must be a DNS label"), `namespace "Web": must be a DNS label`},
		{Invalid("gc", "valid[1].network", "red", "want the request's network %q", "blue"), `gc: valid[1].network "red": want the request's network "blue"`},
		{Invalid("", "label", "a\nb", "bad"), `label "a\nb": bad`},
		{Missing("gc", "valid[0].containerID"), "gc: valid[0].containerID: missing"},
		{Missing("", "network"), "network: missing"},
		{&ValidationError{Object: "port 0:80/tcp", Reason: "ports are numbers from 1 to 65535"}, "port 0:80/tcp: ports are numbers from 1 to 65535"},
		{&ValidationError{Object: "network config", Field: "mtu", NoValue: true, Reason: "cannot use JSON string as int"}, "network config: mtu: cannot use JSON string as int"},
		{InvalidEnv("CNI_IFNAME", "this-name-is-too-long", "must be 1-15 bytes"), `CNI_IFNAME "this-name-is-too-long": must be 1-15 bytes`},
		{MissingEnv("CNI_NETNS"), "CNI_NETNS: missing"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", *tt.err, got, tt.want)
		}
	}
}

// ErrorCode is the one place where validation errors get their code: 4 for the
// environment, 7 for the rest, found through any wrapping.
func TestErrorCode(t *testing.T) {
	config := Invalid(`network "blue"`, "mtu", "70000", "must be between 576 and 65535")
	env := InvalidEnv("CNI_IFNAME", "a/b", "must be 1-15 bytes without '/', ':' or spaces")
	for _, tt := range []struct {
		name string
		err  error
		want int
	}{
		{"validation", config, CodeInvalidConfig},
		{"validation of the environment", env, CodeInvalidEnv},
		{"missing variable", MissingEnv("CNI_NETNS"), CodeInvalidEnv},
		{"wrapped validation", fmt.Errorf("create network: %w", config), CodeInvalidConfig},
		{"wrapped twice", fmt.Errorf("a: %w", fmt.Errorf("b: %w", env)), CodeInvalidEnv},
		{"joined", errors.Join(errors.New("other"), env), CodeInvalidEnv},
		{"api error", Errorf(CodePoolExhausted, "no free address"), CodePoolExhausted},
		{"wrapped api error", fmt.Errorf("attach: %w", Errorf(CodeNotFound, "gone")), CodeNotFound},
		{"api error made from a validation error", AsError(env), CodeInvalidEnv},
		{"plain error", errors.New("disk on fire"), CodeInternal},
		{"nil", nil, CodeInternal},
	} {
		if got := ErrorCode(tt.err); got != tt.want {
			t.Errorf("%s: ErrorCode(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestValidationErrorAs(t *testing.T) {
	ve := Invalid(`network "blue"`, "subnet", "10.0.0.0/33", "not a CIDR prefix")
	for _, err := range []error{
		ve,
		fmt.Errorf("create: %w", ve),
		AsError(ve),
		fmt.Errorf("attach: %w", AsError(fmt.Errorf("define: %w", ve))),
	} {
		var got *ValidationError
		if !errors.As(err, &got) || got != ve {
			t.Errorf("errors.As(%v) = %v, want the validation error", err, got)
		}
	}
}

func TestAsError(t *testing.T) {
	if AsError(nil) != nil {
		t.Error("AsError(nil) != nil")
	}
	ae := Errorf(CodeBusy, "network %q has endpoints", "blue")
	if got := AsError(fmt.Errorf("delete: %w", ae)); got != ae {
		t.Errorf("AsError of a wrapped *Error = %v, want that *Error", got)
	}
	ve := Missing("gc", "network")
	got := AsError(fmt.Errorf("gc: %w", ve))
	if got.Code != CodeInvalidConfig || got.Msg != "gc: gc: network: missing" || got.Details != "" {
		t.Errorf("AsError = %+v", got)
	}
	// The wrapped error stays in the process: the API sends code and message only.
	data, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"code":7,"msg":"gc: gc: network: missing"}`; string(data) != want {
		t.Errorf("JSON %s, want %s", data, want)
	}
	plain := AsError(errors.New("disk on fire"))
	if plain.Code != CodeInternal || plain.Msg != "disk on fire" {
		t.Errorf("AsError(plain) = %+v", plain)
	}
}

func TestParseSubnet(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "10.88.0.0/16", want: "10.88.0.0/16"},
		{in: " fd00::/64\t", want: "fd00::/64"},
		{in: "10.0.0.4/30", want: "10.0.0.4/30"},
		{in: "fd00::4/126", want: "fd00::4/126"},
		{in: "", err: "not a CIDR prefix"},
		{in: "10.88.0.0", err: "not a CIDR prefix"},
		{in: "10.88.0.0/33", err: "not a CIDR prefix"},
		{in: "fd00::%eth0/64", err: "not a CIDR prefix"},
		{in: "10.88.0.1/16", err: "host bits are set (did you mean 10.88.0.0/16?)"},
		{in: "::ffff:10.88.0.0/120", err: "IPv4-mapped IPv6 prefixes are not allowed"},
		{in: "10.0.0.0/31", err: "too small: at most /30"},
		{in: "fd00::/127", err: "too small: at most /126"},
		{in: "127.1.0.0/16", err: "overlaps reserved range 127.0.0.0/8 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)"},
		{in: "0.0.0.0/0", err: "overlaps reserved range 0.0.0.0/8 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)"},
		{in: "fe80::/64", err: "overlaps reserved range fe80::/10 (loopback, multicast, link-local, unspecified and reserved ranges cannot be pod subnets)"},
	} {
		p, err := ParseSubnet(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("ParseSubnet(%q) = %v, %v; want error %q", tt.in, p, err, tt.err)
		case tt.err == "" && (err != nil || p.String() != tt.want):
			t.Errorf("ParseSubnet(%q) = %v, %v; want %s", tt.in, p, err, tt.want)
		}
	}
}

func TestParseGateway(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "10.88.0.1", want: "10.88.0.1"},
		{in: " fd00::1 ", want: "fd00::1"},
		{in: "router", err: "not an IP address"},
		{in: "10.88.0.1/24", err: "not an IP address"},
		{in: "fd00::1%eth0", err: "zones are not allowed"},
	} {
		a, err := ParseGateway(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("ParseGateway(%q) = %v, %v; want error %q", tt.in, a, err, tt.err)
		case tt.err == "" && (err != nil || a.String() != tt.want):
			t.Errorf("ParseGateway(%q) = %v, %v; want %s", tt.in, a, err, tt.want)
		}
	}
}

func TestCheckMTU(t *testing.T) {
	for _, tt := range []struct {
		mtu  int
		ipv6 bool
		err  string
	}{
		{mtu: 0}, {mtu: 0, ipv6: true}, {mtu: MinMTU}, {mtu: MaxMTU}, {mtu: MinMTU6, ipv6: true},
		{mtu: MinMTU - 1, err: "must be between 576 and 65535"},
		{mtu: MaxMTU + 1, err: "must be between 576 and 65535"},
		{mtu: -1, err: "must be between 576 and 65535"},
		{mtu: MinMTU6 - 1, ipv6: true, err: "IPv6 needs at least 1280"},
	} {
		err := CheckMTU(tt.mtu, tt.ipv6)
		if (err == nil) != (tt.err == "") || err != nil && err.Error() != tt.err {
			t.Errorf("CheckMTU(%d, %v) = %v, want %q", tt.mtu, tt.ipv6, err, tt.err)
		}
	}
}

func TestCheckNetworkName(t *testing.T) {
	for _, name := range []string{"a", "blue", "Blue-2", "k8s.pod-net_1", "0", strings.Repeat("x", 63)} {
		if err := CheckNetworkName(name); err != nil {
			t.Errorf("CheckNetworkName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", "_a", ".a", "-a", "a b", "a/b", " a", "ä", "a\x00", strings.Repeat("x", 64)} {
		if err := CheckNetworkName(name); err == nil {
			t.Errorf("CheckNetworkName(%q) = nil, want an error", name)
		}
	}
}

func TestParseMAC(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "AA:BB:CC:DD:EE:01", want: "aa:bb:cc:dd:ee:01"},
		{in: "02-42-ac-11-00-02", want: "02:42:ac:11:00:02"},
		{in: "zz:00", err: "not a 48-bit MAC address"},
		{in: "", err: "not a 48-bit MAC address"},
		{in: "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", err: "not a 48-bit MAC address"},
		{in: "01:00:5e:00:00:01", err: "multicast MAC address"},
		{in: "ff:ff:ff:ff:ff:ff", err: "multicast MAC address"},
		{in: "00:00:00:00:00:00", err: "all-zero MAC address"},
	} {
		mac, err := ParseMAC(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("ParseMAC(%q) = %v, %v; want error %q", tt.in, mac, err, tt.err)
		case tt.err == "" && (err != nil || mac.String() != tt.want):
			t.Errorf("ParseMAC(%q) = %v, %v; want %s", tt.in, mac, err, tt.want)
		}
	}
}

func TestCheckIfName(t *testing.T) {
	for _, name := range []string{"eth0", "e", "net1.100", "x-y_z@a", strings.Repeat("n", 15)} {
		if err := CheckIfName(name); err != nil || !ValidIfName(name) {
			t.Errorf("CheckIfName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", "eth0:1", "a b", "a\tb", "a\nb", "a\rb", "a\vb", "a\fb", "a\x00", strings.Repeat("n", 16)} {
		if err := CheckIfName(name); err == nil || ValidIfName(name) {
			t.Errorf("CheckIfName(%q) = nil, want an error", name)
		}
	}
}
