// Package ipam hands out the addresses of a network's subnets to endpoints. It is pure
// logic over a store.Tx: the caller owns the transaction, so that an allocation and the
// record that uses it commit together, and an error from Allocate must abort it.
//
// Each subnet gives one address per owner. The network address, the subnet's gateway
// and, for IPv4, the broadcast address are never handed out (for IPv6 the network
// address is the subnet-router anycast address). Dynamic addresses go round-robin: the
// search starts after the subnet's cursor, the last address handed out, and wraps
// around, so an address just released is reused only after the whole range has been
// cycled. The search costs at most allocated+reserved+1 probes, whatever the size of
// the subnet.
package ipam

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/store"
)

// Allocate gives owner one address per subnet of nw (IPv4 and/or IPv6), inside the
// caller's transaction, and returns them with the prefix length of their subnet, in
// the order of nw.Subnets.
//
// static lists requested addresses, at most one per family; each must lie in a subnet
// of nw, not be reserved, and be free or already held by owner. Subnets without a
// requested address get the next free one.
//
// Allocate is idempotent: when owner already holds addresses in nw they are returned
// unchanged, and it is an error if static asks for others.
//
// Errors are *api.Error: CodeInvalidConfig for a bad static address (wrapping the
// *api.ValidationError that names it), CodeAddressInUse when another owner holds it,
// CodePoolExhausted when a subnet is full; store errors are wrapped. After an error the
// transaction may hold partial writes: abort it.
func Allocate(tx store.Tx, nw api.Network, owner string, static []netip.Addr) ([]netip.Prefix, error) {
	if owner == "" {
		return nil, fmt.Errorf("network %q: allocate: empty owner", nw.Name)
	}
	want, held, err := begin(tx, nw, owner, static)
	if err != nil || held != nil {
		return held, err
	}

	out := make([]netip.Prefix, 0, len(nw.Subnets))
	for i, sub := range nw.Subnets {
		a, ok := want[i]
		if ok {
			other, taken, err := tx.Allocation(nw.Name, a)
			if err != nil {
				return nil, fmt.Errorf("network %q: allocate %s for %q: %w", nw.Name, a, owner, err)
			}
			if taken {
				return nil, &api.Error{Code: api.CodeAddressInUse,
					Msg: fmt.Sprintf("network %q: ips %s is in use by %q", nw.Name, a, other)}
			}
		} else {
			a, err = next(tx, nw, sub)
			if err != nil {
				return nil, err
			}
		}
		if err := tx.PutAllocation(nw.Name, a, owner); err != nil {
			return nil, fmt.Errorf("network %q: allocate %s for %q: %w", nw.Name, a, owner, err)
		}
		out = append(out, netip.PrefixFrom(a, sub.Prefix.Bits()))
	}
	return out, nil
}

// begin checks the requested addresses of an allocation and maps them to the index of
// their subnet; when owner holds addresses in nw already (the allocation is a retry),
// it returns them instead, checked against the request.
func begin(tx store.Tx, nw api.Network, owner string, static []netip.Addr) (map[int]netip.Addr, []netip.Prefix, error) {
	want, err := staticBySubnet(nw, static)
	if err != nil {
		return nil, nil, err
	}
	held, err := tx.AllocationsOf(nw.Name, owner)
	if err != nil {
		return nil, nil, fmt.Errorf("network %q: allocate for %q: %w", nw.Name, owner, err)
	}
	if len(held) > 0 {
		ps, err := heldPrefixes(nw, owner, held, want)
		if err == nil && ps == nil {
			ps = []netip.Prefix{}
		}
		return want, ps, err
	}
	return want, nil, nil
}

// Release frees every address owner holds in network and returns them sorted;
// releasing nothing is not an error. Cursors stay where they are.
func Release(tx store.Tx, network, owner string) ([]netip.Addr, error) {
	held, err := tx.AllocationsOf(network, owner)
	if err != nil {
		return nil, fmt.Errorf("network %q: release %q: %w", network, owner, err)
	}
	for _, a := range held {
		if err := tx.DeleteAllocation(network, a); err != nil {
			return nil, fmt.Errorf("network %q: release %s of %q: %w", network, a, owner, err)
		}
	}
	return held, nil
}

// invalidIP is the error of a requested address a of nw: `network "blue": ips
// "10.99.0.1": outside every subnet (10.88.0.0/16)`.
func invalidIP(nw api.Network, a netip.Addr, format string, args ...any) *api.Error {
	return api.AsError(api.Invalid(fmt.Sprintf("network %q", nw.Name), "ips", a.String(), format, args...))
}

// staticBySubnet checks the requested addresses and maps each to the index of its
// subnet in nw.
func staticBySubnet(nw api.Network, static []netip.Addr) (map[int]netip.Addr, error) {
	want := make(map[int]netip.Addr, len(static))
	var seen4, seen6 netip.Addr
	for _, a := range static {
		if !a.IsValid() {
			return nil, api.AsError(&api.ValidationError{Object: fmt.Sprintf("network %q", nw.Name), Field: "ips", NoValue: true,
				Reason: "an address is invalid (empty)"})
		}
		if a.Zone() != "" {
			return nil, invalidIP(nw, a, "has a zone")
		}
		a = a.Unmap()
		seen := &seen6
		if a.Is4() {
			seen = &seen4
		}
		if *seen == a {
			return nil, invalidIP(nw, a, "given twice")
		}
		if seen.IsValid() {
			return nil, invalidIP(nw, a, "of the same family as %s (one address per family)", *seen)
		}
		*seen = a
		i := slices.IndexFunc(nw.Subnets, func(s api.Subnet) bool { return s.Prefix.Contains(a) })
		if i < 0 {
			return nil, invalidIP(nw, a, "outside every subnet (%s)", subnetList(nw))
		}
		if why := reservedAs(nw.Subnets[i], a); why != "" {
			return nil, invalidIP(nw, a, "reserved (%s of subnet %s)", why, nw.Subnets[i].Prefix)
		}
		want[i] = a
	}
	return want, nil
}

func subnetList(nw api.Network) string {
	ps := make([]string, len(nw.Subnets))
	for i, s := range nw.Subnets {
		ps[i] = s.Prefix.String()
	}
	return strings.Join(ps, ", ")
}

// heldPrefixes returns what owner already holds in nw, after checking that it agrees
// with the requested addresses.
func heldPrefixes(nw api.Network, owner string, held []netip.Addr, want map[int]netip.Addr) ([]netip.Prefix, error) {
	for i := range nw.Subnets {
		if a, ok := want[i]; ok && !slices.Contains(held, a) {
			return nil, invalidIP(nw, a, "%q already holds %s in subnet %s", owner, heldIn(held, nw.Subnets[i]), nw.Subnets[i].Prefix)
		}
	}
	var out []netip.Prefix
	for _, sub := range nw.Subnets {
		for _, a := range held {
			if sub.Prefix.Contains(a) {
				out = append(out, netip.PrefixFrom(a, sub.Prefix.Bits()))
			}
		}
	}
	if len(out) != len(held) {
		return nil, &api.Error{Code: api.CodeInternal,
			Msg: fmt.Sprintf("network %q: %q holds %v, not all inside its subnets (%s)", nw.Name, owner, held, subnetList(nw))}
	}
	return out, nil
}

func heldIn(held []netip.Addr, sub api.Subnet) string {
	var in []string
	for _, a := range held {
		if sub.Prefix.Contains(a) {
			in = append(in, a.String())
		}
	}
	if len(in) == 0 {
		return "nothing"
	}
	return strings.Join(in, ", ")
}

// next picks the next free address of sub after its cursor, records it as the new
// cursor and returns it. Each probe is one lookup of the store: the cost depends on the
// run of taken addresses after the cursor, not on the size of the network.
func next(tx store.Tx, nw api.Network, sub api.Subnet) (netip.Addr, error) {
	cursor, _, err := tx.Cursor(nw.Name, sub.Prefix)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("network %q: cursor of subnet %s: %w", nw.Name, sub.Prefix, err)
	}
	var lookupErr error
	a, _, ok := pick(sub, cursor, func(a netip.Addr) bool {
		_, taken, err := tx.Allocation(nw.Name, a)
		if err != nil && lookupErr == nil {
			lookupErr = err
		}
		return taken || err != nil
	})
	if lookupErr != nil {
		return netip.Addr{}, fmt.Errorf("network %q: subnet %s: %w", nw.Name, sub.Prefix, lookupErr)
	}
	if !ok {
		return netip.Addr{}, &api.Error{Code: api.CodePoolExhausted,
			Msg: fmt.Sprintf("network %q: subnet %s has no free address", nw.Name, sub.Prefix)}
	}
	if err := tx.PutCursor(nw.Name, sub.Prefix, a); err != nil {
		return netip.Addr{}, fmt.Errorf("network %q: %w", nw.Name, err)
	}
	return a, nil
}

// pick searches sub for a free address, starting after cursor (or at the start of the
// subnet when cursor is not in it) and wrapping around. A run of unavailable addresses
// is at most as long as the taken and reserved addresses of sub together, so pick
// probes no more than allocated+reserved+1 addresses when one is free, and the whole
// subnet when it is full. It returns the address, the number of probes, and false when
// the subnet is full.
func pick(sub api.Subnet, cursor netip.Addr, taken func(netip.Addr) bool) (netip.Addr, uint64, bool) {
	return pickIn(sub, sub.Prefix, cursor, taken)
}

// pickIn is pick over the addresses of within, a part of sub (a block), with sub's
// reserved addresses.
func pickIn(sub api.Subnet, within netip.Prefix, cursor netip.Addr, taken func(netip.Addr) bool) (netip.Addr, uint64, bool) {
	p := within.Masked()
	reserved := reservedAddrs(sub)
	limit := size(p)
	c := cursor
	if !p.Contains(c) {
		c = p.Addr()
	}
	for probes := uint64(1); probes <= limit; probes++ {
		c = c.Next()
		if !c.IsValid() || !p.Contains(c) {
			c = p.Addr()
		}
		if !slices.Contains(reserved, c) && !taken(c) {
			return c, probes, true
		}
	}
	return netip.Addr{}, limit, false
}

// size is the number of addresses of p, saturated at MaxUint64.
func size(p netip.Prefix) uint64 {
	host := p.Addr().BitLen() - p.Bits()
	if host >= 64 {
		return math.MaxUint64
	}
	return 1 << host
}

// Capacity is how many addresses sub can hand out: its size less the reserved ones
// (network, gateway inside the subnet, IPv4 broadcast), saturated at MaxUint64.
func Capacity(sub api.Subnet) uint64 {
	n := size(sub.Prefix.Masked())
	if n == math.MaxUint64 {
		return n
	}
	return n - min(n, uint64(len(reservedAddrs(sub))))
}

// reservedAddrs lists the distinct addresses of sub that are never handed out.
func reservedAddrs(sub api.Subnet) []netip.Addr {
	p := sub.Prefix.Masked()
	r := []netip.Addr{p.Addr()}
	if p.Addr().Is4() {
		if b := broadcast(p); b != p.Addr() {
			r = append(r, b)
		}
	}
	if g := sub.Gateway; g.IsValid() && p.Contains(g) && !slices.Contains(r, g) {
		r = append(r, g)
	}
	return r
}

// reservedAs says why a is reserved in sub ("" when it is not).
func reservedAs(sub api.Subnet, a netip.Addr) string {
	p := sub.Prefix.Masked()
	switch {
	case a == sub.Gateway:
		return "gateway"
	case a == p.Addr() && a.Is4():
		return "network address"
	case a == p.Addr():
		return "subnet-router anycast address"
	case a.Is4() && a == broadcast(p):
		return "broadcast address"
	}
	return ""
}

// broadcast returns the last address of p.
func broadcast(p netip.Prefix) netip.Addr {
	setHostBits := func(b []byte) {
		for i := p.Bits(); i < len(b)*8; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	if p.Addr().Is4() {
		b := p.Masked().Addr().As4()
		setHostBits(b[:])
		return netip.AddrFrom4(b)
	}
	b := p.Masked().Addr().As16()
	setHostBits(b[:])
	return netip.AddrFrom16(b)
}
