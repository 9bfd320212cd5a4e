package cniplugin

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/podnet/podnet/api"
)

// result is the CNI result of an ADD, independent of the spec version it is printed in.
type result struct {
	interfaces []resultInterface
	ips        []resultIP
	routes     []resultRoute
	dns        api.DNS
}

type resultInterface struct {
	name, mac string
	mtu       int
	sandbox   string
}

type resultIP struct {
	// iface indexes result.interfaces.
	iface   int
	address netip.Prefix // not masked
	gateway netip.Addr   // invalid when none
}

type resultRoute struct {
	dst netip.Prefix // masked
	gw  netip.Addr   // invalid when none
}

// convertResult turns the agent's result into a CNI result. The interface named
// ifName carries netns as its sandbox when the agent left it empty.
func convertResult(r api.Result, netns, ifName string) (*result, error) {
	out := &result{dns: r.DNS}
	for _, i := range r.Interfaces {
		sandbox := i.Sandbox
		if sandbox == "" && i.Name == ifName {
			sandbox = netns
		}
		out.interfaces = append(out.interfaces, resultInterface{name: i.Name, mac: i.MAC, mtu: i.MTU, sandbox: sandbox})
	}
	for n, ip := range r.IPs {
		if !ip.Address.IsValid() {
			return nil, fmt.Errorf("agent result: ips[%d]: no address", n)
		}
		if ip.Interface < 0 || ip.Interface >= len(r.Interfaces) {
			return nil, fmt.Errorf("agent result: ips[%d] %s: interface index %d out of range (%d interfaces)", n, ip.Address, ip.Interface, len(r.Interfaces))
		}
		out.ips = append(out.ips, resultIP{iface: ip.Interface, address: ip.Address, gateway: ip.Gateway})
	}
	for n, rt := range r.Routes {
		if !rt.Dst.IsValid() {
			return nil, fmt.Errorf("agent result: routes[%d]: no destination", n)
		}
		out.routes = append(out.routes, resultRoute{dst: rt.Dst.Masked(), gw: rt.GW})
	}
	return out, nil
}

// canPrint reports whether results can be printed in spec version v.
func canPrint(v string) bool {
	return slices.Contains(SupportedVersions, v)
}

// print writes r in spec version v as JSON indented by four spaces, without a final
// newline, byte for byte as the CNI library printed it: 1.0.0 and 1.1.0 (whose result
// types are the same) with the keys of every object in sorted order, no "dns" when it
// is empty and no "version" in the IP configs; 0.4.0 with the keys in the spec's order,
// "dns" always (as {} when empty), "version" ("4" or "6") in each IP config and no "mtu"
// in the interfaces.
func (r *result) print(w io.Writer, v string) error {
	var doc any
	switch v {
	case "1.0.0", "1.1.0":
		doc = r.v1(v)
	case "0.4.0":
		doc = r.v040()
	default:
		return fmt.Errorf("cannot print a result in cniVersion %q", v)
	}
	b, err := json.MarshalIndent(doc, "", "    ")
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// result100 and its parts are a 1.x result with its fields in key order.
type result100 struct {
	CNIVersion string         `json:"cniVersion,omitempty"`
	DNS        *dns100        `json:"dns,omitempty"`
	Interfaces []interface100 `json:"interfaces,omitempty"`
	IPs        []ip100        `json:"ips,omitempty"`
	Routes     []route        `json:"routes,omitempty"`
}

type dns100 struct {
	Domain      string   `json:"domain,omitempty"`
	Nameservers []string `json:"nameservers,omitempty"`
	Options     []string `json:"options,omitempty"`
	Search      []string `json:"search,omitempty"`
}

type interface100 struct {
	Mac     string `json:"mac,omitempty"`
	Mtu     int    `json:"mtu,omitempty"`
	Name    string `json:"name"`
	Sandbox string `json:"sandbox,omitempty"`
}

type ip100 struct {
	Address   string `json:"address"`
	Gateway   string `json:"gateway,omitempty"`
	Interface int    `json:"interface"`
}

// route is a route of either version.
type route struct {
	Dst string `json:"dst"`
	GW  string `json:"gw,omitempty"`
}

// v1 returns r as a 1.x result. Its strings carry U+FFFD for each byte of invalid
// UTF-8, as after the library's round trip through a map (which sorted the keys).
func (r *result) v1(v string) result100 {
	out := result100{CNIVersion: v}
	if d := r.dns; len(d.Nameservers) > 0 || d.Domain != "" || len(d.Search) > 0 || len(d.Options) > 0 {
		out.DNS = &dns100{Domain: utf8Fixed(d.Domain), Nameservers: utf8FixedAll(d.Nameservers),
			Options: utf8FixedAll(d.Options), Search: utf8FixedAll(d.Search)}
	}
	for _, i := range r.interfaces {
		out.Interfaces = append(out.Interfaces, interface100{Mac: utf8Fixed(i.mac), Mtu: i.mtu, Name: utf8Fixed(i.name), Sandbox: utf8Fixed(i.sandbox)})
	}
	for _, ip := range r.ips {
		out.IPs = append(out.IPs, ip100{Address: prefixString(ip.address), Gateway: addrString(ip.gateway), Interface: ip.iface})
	}
	out.Routes = r.v1Routes()
	return out
}

func (r *result) v1Routes() []route {
	var out []route
	for _, rt := range r.routes {
		out = append(out, route{Dst: prefixString(rt.dst), GW: addrString(rt.gw)})
	}
	return out
}

// result040 and its parts are a 0.4.0 result.
type result040 struct {
	CNIVersion string         `json:"cniVersion,omitempty"`
	Interfaces []interface040 `json:"interfaces,omitempty"`
	IPs        []ip040        `json:"ips,omitempty"`
	Routes     []route        `json:"routes,omitempty"`
	DNS        api.DNS        `json:"dns"`
}

type interface040 struct {
	Name    string `json:"name"`
	Mac     string `json:"mac,omitempty"`
	Sandbox string `json:"sandbox,omitempty"`
}

type ip040 struct {
	Version   string `json:"version"`
	Interface int    `json:"interface"`
	Address   string `json:"address"`
	Gateway   string `json:"gateway,omitempty"`
}

func (r *result) v040() result040 {
	out := result040{CNIVersion: "0.4.0", DNS: r.dns, Routes: r.v1Routes()}
	for _, i := range r.interfaces {
		out.Interfaces = append(out.Interfaces, interface040{Name: i.name, Mac: i.mac, Sandbox: i.sandbox})
	}
	for _, ip := range r.ips {
		family := "6"
		if ip.address.Addr().Unmap().Is4() {
			family = "4"
		}
		out.IPs = append(out.IPs, ip040{Version: family, Interface: ip.iface, Address: prefixString(ip.address), Gateway: addrString(ip.gateway)})
	}
	return out
}

// prefixString prints p as the library did (net.IPNet's String): an IPv4-mapped
// address as IPv4, with the length of the last 32 bits of its 128-bit mask.
func prefixString(p netip.Prefix) string {
	if a := p.Addr(); a.Is4In6() {
		return a.Unmap().String() + "/" + strconv.Itoa(max(p.Bits()-96, 0))
	}
	return p.String()
}

// addrString prints a gateway as the library did (net.IP's String): an IPv4-mapped
// address as IPv4, without a zone; "" when a is invalid.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().WithZone("").String()
}

// utf8Fixed replaces each byte of invalid UTF-8 in s with U+FFFD.
func utf8Fixed(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, c := range s { // utf8.RuneError (U+FFFD) for each invalid byte
		b.WriteRune(c)
	}
	return b.String()
}

func utf8FixedAll(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = utf8Fixed(s)
	}
	return out
}
