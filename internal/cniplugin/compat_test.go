package cniplugin

// The plugin speaks the CNI protocol itself; these tests hold it to the CNI library
// it replaced (linked by the tests only, never by podnet-cni), so that a runtime sees
// the same bytes.

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet/api"
)

// libraryResult is the result as the plugin built it with the CNI library.
func libraryResult(r api.Result, netns, ifName string) *types100.Result {
	out := &types100.Result{CNIVersion: types100.ImplementedSpecVersion}
	for _, i := range r.Interfaces {
		sandbox := i.Sandbox
		if sandbox == "" && i.Name == ifName {
			sandbox = netns
		}
		out.Interfaces = append(out.Interfaces, &types100.Interface{Name: i.Name, Mac: i.MAC, Mtu: i.MTU, Sandbox: sandbox})
	}
	ipNet := func(p netip.Prefix) net.IPNet {
		a := p.Addr()
		return net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
	}
	ipOrNil := func(a netip.Addr) net.IP {
		if !a.IsValid() {
			return nil
		}
		return net.IP(a.Unmap().AsSlice())
	}
	for _, ip := range r.IPs {
		out.IPs = append(out.IPs, &types100.IPConfig{Interface: types100.Int(ip.Interface), Address: ipNet(ip.Address), Gateway: ipOrNil(ip.Gateway)})
	}
	for _, rt := range r.Routes {
		out.Routes = append(out.Routes, &types.Route{Dst: ipNet(rt.Dst.Masked()), GW: ipOrNil(rt.GW)})
	}
	out.DNS = types.DNS{Nameservers: r.DNS.Nameservers, Domain: r.DNS.Domain, Search: r.DNS.Search, Options: r.DNS.Options}
	return out
}

func TestResultMatchesLibrary(t *testing.T) {
	mapped := agentResult
	mapped.Interfaces = []api.Interface{{Name: "eth0", MAC: "aa:bb:cc:dd:ee:ff", MTU: 9000}}
	mapped.IPs = []api.IPConfig{
		{Address: netip.MustParsePrefix("::ffff:10.0.0.5/120"), Gateway: netip.MustParseAddr("::ffff:10.0.0.1")},
		{Address: netip.MustParsePrefix("::ffff:10.0.0.6/64")},
		{Address: netip.MustParsePrefix("fe80::5/64"), Gateway: netip.MustParseAddr("fe80::1%eth0")},
	}
	mapped.Routes = []api.Route{{Dst: netip.MustParsePrefix("::ffff:10.0.0.0/104")}, {Dst: netip.MustParsePrefix("10.1.2.3/8"), GW: netip.MustParseAddr("10.0.0.1")}}
	odd := api.Result{
		Interfaces: []api.Interface{{Name: "host<&>"}, {Name: "eth\xff0", MAC: "\xfe", Sandbox: "/run/netns/\xc3"}},
		IPs:        []api.IPConfig{{Address: netip.MustParsePrefix("10.0.0.5/32"), Interface: 0}},
		DNS:        api.DNS{Domain: "d\xffx", Options: []string{"ndots:5", "\u2028"}, Search: []string{}},
	}
	results := map[string]api.Result{
		"agent":        agentResult,
		"empty":        {},
		"no dns":       {Interfaces: agentResult.Interfaces, IPs: agentResult.IPs},
		"only options": {DNS: api.DNS{Options: []string{"rotate"}}},
		"mapped":       mapped,
		"odd strings":  odd,
	}
	for name, r := range results {
		for _, ifName := range []string{"eth0", "eth\xff0"} {
			netns := "/proc/1/ns/\xffnet"
			want := libraryResult(r, netns, ifName)
			got, err := convertResult(r, netns, ifName)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for _, v := range SupportedVersions {
				var wb, gb bytes.Buffer
				lr, err := want.GetAsVersion(v)
				if err != nil {
					t.Fatal(err)
				}
				if err := lr.PrintTo(&wb); err != nil {
					t.Fatal(err)
				}
				if err := got.print(&gb, v); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(gb.Bytes(), wb.Bytes()) {
					t.Errorf("%s, ifname %q, %s:\ngot:\n%s\nlibrary:\n%s", name, ifName, v, gb.Bytes(), wb.Bytes())
				}
			}
		}
	}
}

func TestErrorMatchesLibrary(t *testing.T) {
	for _, e := range []Error{{Code: 4, Msg: "m"}, {Code: 11, Msg: "a <b> & \"c\"", Details: "d\xff"}} {
		var got bytes.Buffer
		if err := e.print(&got); err != nil {
			t.Fatal(err)
		}
		le := types.NewError(e.Code, e.Msg, e.Details)
		want, err := json.MarshalIndent(le, "", "    ") // what (*types.Error).Print writes
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("got:\n%s\nlibrary:\n%s", got.Bytes(), want)
		}
		if e.Error() != le.Error() {
			t.Errorf("Error() = %q, library %q", e.Error(), le.Error())
		}
	}
}

func TestVersionMatchesLibrary(t *testing.T) {
	var got, want bytes.Buffer
	if err := printVersion(&got); err != nil {
		t.Fatal(err)
	}
	if err := version.PluginSupports(SupportedVersions...).Encode(&want); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("VERSION prints %q, library %q", got.String(), want.String())
	}

	vs := []string{"", "0.1.0", "0.4.0", "1.0.0", "1.1.0", "1.1", "1", "01.1.0", "+1.1.0", "-1.0.0", "1.10.0", "2.0.0",
		"1.0.0.0", "x", "1.x", "1.1.x", "1..0", ".", "1.1.0 "}
	for _, a := range vs {
		for _, b := range vs {
			got, gerr := versionAtLeast(a, b)
			want, werr := version.GreaterThanOrEqualTo(a, b)
			if got != want || (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
				t.Errorf("versionAtLeast(%q, %q) = %v, %v; library %v, %v", a, b, got, gerr, want, werr)
			}
		}
	}
}

func TestNameChecksMatchLibrary(t *testing.T) {
	names := []string{"a", "A9", "0", "podman", "c0ffee_x.y-z", "-a", "_a", ".a", "a b", "a/b", "a:b", "é", "aé",
		"a\n", "a\x00", "abcdefghijklmno", "abcdefghijklmnop", ".", "..", "a\tb", "a\u00a0b", "a\u2028", "a\u3000b", "a\xffb"}
	for _, n := range names {
		if got, want := checkContainerID(n) == nil, utils.ValidateContainerID(n) == nil; got != want {
			t.Errorf("container ID %q: valid %v, library %v", n, got, want)
		}
		if got, want := api.ValidName(n), utils.ValidateNetworkName(n) == nil; got != want {
			t.Errorf("network name %q: valid %v, library %v", n, got, want)
		}
		// The plugin checks CNI_IFNAME more strictly (api.CheckIfName, then the
		// library's white space): it accepts no name the library refuses.
		if CheckIfName(n) == nil && checkIfNameRunes(n) == nil && utils.ValidateInterfaceName(n) != nil {
			t.Errorf("interface name %q: valid, the library refuses it", n)
		}
	}
}
