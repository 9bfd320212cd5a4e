package bgp

import (
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// canonical fills in c's defaults and validates it.
func (c Config) canonical() (Config, error) {
	if c.ASN == 0 {
		return c, fmt.Errorf("bgp config: asn: must not be 0")
	}
	if !c.RouterID.IsValid() {
		return c, fmt.Errorf("bgp config: router id: missing")
	}
	if c.RouterID = c.RouterID.Unmap(); !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		return c, fmt.Errorf("bgp config: router id %s: want a non-zero IPv4 address", c.RouterID)
	}
	switch {
	case c.ListenPort == 0:
		c.ListenPort = DefaultListenPort
	case c.ListenPort == -1:
	case c.ListenPort < 1 || c.ListenPort > 65535:
		return c, fmt.Errorf("bgp config: listen port %d: want 1 to 65535, 0 (179) or -1 (do not listen)", c.ListenPort)
	}
	if c.HoldTime == 0 {
		c.HoldTime = DefaultHoldTime
	}
	if c.HoldTime < 3*time.Second || c.HoldTime > 65535*time.Second || c.HoldTime%time.Second != 0 {
		return c, fmt.Errorf("bgp config: hold time %s: want whole seconds from 3s to 65535s", c.HoldTime)
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = DefaultConnectRetry
	}
	if c.ConnectRetry < time.Second || c.ConnectRetry%time.Second != 0 {
		return c, fmt.Errorf("bgp config: connect retry %s: want whole seconds, at least 1s", c.ConnectRetry)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// canonicalPeers validates peers and returns them by address, names defaulted.
func canonicalPeers(peers []Peer) (map[netip.Addr]Peer, error) {
	byAddr := make(map[netip.Addr]Peer, len(peers))
	byName := make(map[string]Peer, len(peers))
	for _, p := range peers {
		if !p.Address.IsValid() {
			return nil, fmt.Errorf("peer %q: address: missing", p.Name)
		}
		p.Address = p.Address.Unmap()
		if p.Name == "" {
			p.Name = p.Address.String()
		}
		if p.Address.IsUnspecified() || p.Address.IsMulticast() {
			return nil, fmt.Errorf("peer %q: address %s: want a unicast address", p.Name, p.Address)
		}
		if p.ASN == 0 {
			return nil, fmt.Errorf("peer %q: asn: must not be 0", p.Name)
		}
		if q, ok := byAddr[p.Address]; ok {
			return nil, fmt.Errorf("peers %q and %q: same address %s", q.Name, p.Name, p.Address)
		}
		if q, ok := byName[p.Name]; ok {
			return nil, fmt.Errorf("peers %s and %s: same name %q", q.Address, p.Address, p.Name)
		}
		byAddr[p.Address] = p
		byName[p.Name] = p
	}
	return byAddr, nil
}

// peerPlan is what SetPeers changes in GoBGP, each list sorted by address.
type peerPlan struct {
	Add     []Peer // new peers
	Replace []Peer // new configuration of peers whose session must restart
	Rename  []Peer // new configuration of peers that only changed name
	Remove  []Peer // peers to delete, as configured before
}

// planPeers compares the configured peers with the desired ones.
func planPeers(current, desired map[netip.Addr]Peer) peerPlan {
	var p peerPlan
	for _, addr := range sortedKeys(desired, netip.Addr.Compare) {
		want := desired[addr]
		have, ok := current[addr]
		switch {
		case !ok:
			p.Add = append(p.Add, want)
		case have.ASN != want.ASN || have.Passive != want.Passive:
			p.Replace = append(p.Replace, want)
		case have.Name != want.Name:
			p.Rename = append(p.Rename, want)
		}
	}
	for _, addr := range sortedKeys(current, netip.Addr.Compare) {
		if _, ok := desired[addr]; !ok {
			p.Remove = append(p.Remove, current[addr])
		}
	}
	return p
}

// canonicalRoutes validates routes and returns them as prefix -> next hop.
func canonicalRoutes(routes []Route) (map[netip.Prefix]netip.Addr, error) {
	out := make(map[netip.Prefix]netip.Addr, len(routes))
	for _, r := range routes {
		if !r.Prefix.IsValid() {
			return nil, fmt.Errorf("route %s: invalid prefix", r.Prefix)
		}
		if r.Prefix.Addr().Is4In6() {
			return nil, fmt.Errorf("route %s: want a plain IPv4 or IPv6 prefix", r.Prefix)
		}
		pfx := r.Prefix.Masked()
		if !r.NextHop.IsValid() {
			return nil, fmt.Errorf("route %s: next hop: missing", pfx)
		}
		nh := r.NextHop.Unmap()
		if nh.Is4() != pfx.Addr().Is4() {
			return nil, fmt.Errorf("route %s: next hop %s: want an %s address", pfx, nh, familyName(pfx))
		}
		if nh.IsUnspecified() || nh.IsMulticast() {
			return nil, fmt.Errorf("route %s: next hop %s: want a unicast address", pfx, nh)
		}
		if old, ok := out[pfx]; ok && old != nh {
			return nil, fmt.Errorf("route %s: two next hops, %s and %s", pfx, old, nh)
		}
		out[pfx] = nh
	}
	return out, nil
}

// routePlan is what Advertise changes in GoBGP, each list sorted by prefix.
type routePlan struct {
	Announce []Route // new prefixes, or a new next hop for an advertised one
	Withdraw []Route // advertised prefixes to withdraw, with their old next hop
}

// planRoutes compares the advertised routes with the desired ones.
func planRoutes(current, desired map[netip.Prefix]netip.Addr) routePlan {
	var p routePlan
	for _, pfx := range sortedKeys(desired, comparePrefix) {
		if nh, ok := current[pfx]; !ok || nh != desired[pfx] {
			p.Announce = append(p.Announce, Route{Prefix: pfx, NextHop: desired[pfx]})
		}
	}
	for _, pfx := range sortedKeys(current, comparePrefix) {
		if _, ok := desired[pfx]; !ok {
			p.Withdraw = append(p.Withdraw, Route{Prefix: pfx, NextHop: current[pfx]})
		}
	}
	return p
}

// sortRoutes sorts routes IPv4 first, then by prefix address and length.
func sortRoutes(routes []Route) {
	slices.SortFunc(routes, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sortedKeys[K comparable, V any](m map[K]V, cmp func(a, b K) int) []K {
	return slices.SortedFunc(maps.Keys(m), cmp)
}

func familyName(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}
