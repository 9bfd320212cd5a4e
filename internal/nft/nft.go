// Package nft keeps podnet's own nftables table, "inet podnet", in the node network
// namespace, and never touches any other table.
//
// The desired state is data (Ruleset). Render turns it into nft-syntax text, Table.Sync
// writes it to the kernel in one atomic netlink batch, and Table.InSync reads the table
// back and says whether the kernel still matches it.
//
// Kernel objects, all in table inet podnet:
//
//	set bridges        ifname           bridge of every network
//	set bridge_pairs   ifname . ifname  (bridge, bridge) of every network
//	set masq4          ipv4_addr        interval set: IPv4 subnets of masquerading networks
//	set masq6          ipv6_addr        interval set: IPv6 subnets of masquerading networks
//	chain forward      filter, hook forward, priority filter, policy accept:
//	                   drops traffic forwarded from one network's bridge to another's
//	chain postrouting  nat, hook postrouting, priority srcnat, policy accept:
//	                   masquerades traffic of masquerading networks leaving podnet's bridges
//
// Per-packet cost does not grow with the number of networks: every lookup is a set lookup.
// Everything goes through github.com/google/nftables bound to a namespace fd; nothing
// execs nft and no goroutine of the caller changes namespace.
package nft

import (
	"fmt"
	"net/netip"
	"strings"
)

// TableName is the name of podnet's table, in family inet.
const TableName = "podnet"

// Network is what the ruleset needs to know of one podnet network.
type Network struct {
	Name       string         // podnet network name (for comments/debug only)
	Bridge     string         // host interface name of the network (<=15 bytes)
	Subnets    []netip.Prefix // IPv4 and/or IPv6
	Masquerade bool           // egress masquerade for traffic leaving the network
}

// Ruleset is the desired content of table inet podnet. The order of Networks and of
// their Subnets does not matter.
type Ruleset struct {
	Networks []Network
}

// Applier makes table inet podnet of one namespace equal to a Ruleset.
// Table implements it on the kernel; nfttest.Fake in memory.
type Applier interface {
	// Sync replaces the whole table with r, atomically. Calling it twice with the same r
	// is harmless. It fails, changing nothing, when r does not Validate.
	Sync(r Ruleset) error
	// InSync reports whether the table equals r. It is false, with no error, when the
	// table is missing or was changed (flushed rules, chains or set elements).
	InSync(r Ruleset) (bool, error)
	// Delete removes the table. It succeeds when the table is already gone.
	Delete() error
}

// maxIfName is the longest interface name the kernel accepts (IFNAMSIZ-1).
const maxIfName = 15

// Validate checks that r can be written to the kernel: every network has a valid bridge
// name used by no other network, and valid subnets.
func (r Ruleset) Validate() error {
	bridges := make(map[string]string, len(r.Networks))
	for _, n := range r.Networks {
		if err := validIfName(n.Bridge); err != nil {
			return fmt.Errorf("network %q: bridge %q: %w", n.Name, n.Bridge, err)
		}
		if other, ok := bridges[n.Bridge]; ok {
			return fmt.Errorf("network %q: bridge %q: already used by network %q", n.Name, n.Bridge, other)
		}
		bridges[n.Bridge] = n.Name
		for _, p := range n.Subnets {
			if !p.IsValid() {
				return fmt.Errorf("network %q: subnet %v: invalid prefix", n.Name, p)
			}
		}
	}
	return nil
}

// validIfName applies the kernel's rules for interface names (dev_valid_name).
func validIfName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty interface name")
	case len(name) > maxIfName:
		return fmt.Errorf("interface name longer than %d bytes", maxIfName)
	case name == "." || name == "..":
		return fmt.Errorf("invalid interface name")
	case strings.ContainsAny(name, "/: \t\n\r\v\f\x00"):
		return fmt.Errorf("interface name contains '/', ':', NUL or white space")
	}
	return nil
}
