package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/store"
)

// Cross-node networks (api.Network.CrossNode) are cut into blocks (BlockSize4,
// BlockSize6) that nodes claim: a node hands out the addresses of its own blocks
// without asking the others, and routes to the others' blocks. A node claims a block
// when its blocks of a subnet are full (the lowest free block of the subnet); the
// claim is a read of the free block and a write in the caller's transaction, so of two
// nodes that race for one block only one commits. Inside a block, allocation is the
// single-node one: round-robin after the block's cursor.
//
// A node whose record has pod ranges (api.Node.PodCIDRs, from Kubernetes' spec.podCIDRs)
// claims the new blocks of a subnet they cover only inside them, the lowest free one
// first; a subnet they do not touch is claimed in as without them. No node claims a
// block in another node's pod ranges. Blocks a node holds already are used first,
// wherever they lie, and a requested address claims its block wherever it is.

// AllocateOnNode is Allocate for an endpoint of node: for a cross-node network, from
// node's blocks (claiming one when they are full, inside node's pod ranges where they
// cover the subnet); a requested address is handed out
// wherever its block is, and claims its block for node when nobody holds it. For a
// network of one node it is Allocate.
func AllocateOnNode(tx store.Tx, nw api.Network, node, owner string, static []netip.Addr, now time.Time) ([]netip.Prefix, error) {
	if nw.CrossNode == "" {
		return Allocate(tx, nw, owner, static)
	}
	if owner == "" || node == "" {
		return nil, fmt.Errorf("network %q: allocate: empty owner or node", nw.Name)
	}
	want, held, err := begin(tx, nw, owner, static)
	if err != nil || held != nil {
		return held, err
	}
	blocks, err := tx.Blocks(nw.Name)
	if err != nil {
		return nil, fmt.Errorf("network %q: blocks: %w", nw.Name, err)
	}
	out := make([]netip.Prefix, 0, len(nw.Subnets))
	for i, sub := range nw.Subnets {
		a, ok := want[i]
		if ok {
			if err := claimFor(tx, nw, sub, node, a, blocks, now); err != nil {
				return nil, err
			}
			other, taken, err := tx.Allocation(nw.Name, a)
			if err != nil {
				return nil, fmt.Errorf("network %q: allocate %s for %q: %w", nw.Name, a, owner, err)
			}
			if taken {
				return nil, &api.Error{Code: api.CodeAddressInUse, Msg: fmt.Sprintf("network %q: ips %s is in use by %q", nw.Name, a, other)}
			}
		} else if a, err = nextOnNode(tx, nw, sub, node, blocks, now); err != nil {
			return nil, err
		}
		if err := tx.PutAllocation(nw.Name, a, owner); err != nil {
			return nil, fmt.Errorf("network %q: allocate %s for %q: %w", nw.Name, a, owner, err)
		}
		out = append(out, netip.PrefixFrom(a, sub.Prefix.Bits()))
	}
	return out, nil
}

// BlockOf is the block of nw that holds a.
func BlockOf(nw api.Network, a netip.Addr) netip.Prefix {
	bits := nw.BlockSize4
	if a.Is6() {
		bits = nw.BlockSize6
	}
	p, _ := a.Prefix(bits)
	return p
}

// claimFor claims the block of a requested address for node when nobody holds it.
func claimFor(tx store.Tx, nw api.Network, sub api.Subnet, node string, a netip.Addr, blocks []api.Block, now time.Time) error {
	p := BlockOf(nw, a)
	if slices.ContainsFunc(blocks, func(b api.Block) bool { return b.Prefix == p }) {
		return nil
	}
	return claim(tx, nw, node, p, now)
}

// claim records that node holds block p (read first: the commit fails when another
// node claimed it meanwhile).
func claim(tx store.Tx, nw api.Network, node string, p netip.Prefix, now time.Time) error {
	b, taken, err := tx.Block(nw.Name, p)
	if err != nil {
		return fmt.Errorf("network %q: block %s: %w", nw.Name, p, err)
	}
	if taken {
		return fmt.Errorf("network %q: block %s was claimed by node %q meanwhile", nw.Name, p, b.Node)
	}
	if err := tx.PutBlock(api.Block{Network: nw.Name, Prefix: p, Node: node, Claimed: now}); err != nil {
		return fmt.Errorf("network %q: claim block %s: %w", nw.Name, p, err)
	}
	return nil
}

// nextOnNode is the next free address of node's blocks in sub, in block order, each
// round-robin after its own cursor; when they are full, the lowest free block of sub
// (of node's pod ranges in sub, when it has some there) is claimed for node.
func nextOnNode(tx store.Tx, nw api.Network, sub api.Subnet, node string, blocks []api.Block, now time.Time) (netip.Addr, error) {
	bits := nw.BlockBits(sub.Prefix)
	claimed := map[netip.Prefix]bool{}
	for _, b := range blocks {
		claimed[b.Prefix] = true
		if b.Node != node || !sub.Prefix.Contains(b.Prefix.Addr()) {
			continue
		}
		if a, ok, err := nextIn(tx, nw, sub, b.Prefix); err != nil || ok {
			return a, err
		}
	}
	ranges, own, others, err := claimRanges(tx, nw, sub, node)
	if err != nil {
		return netip.Addr{}, err
	}
	// The lowest free block: the blocks of the ranges in order, skipping the claimed
	// ones and those of other nodes' pod ranges.
	for _, r := range ranges {
		for p := (netip.PrefixFrom(r.Masked().Addr(), bits)); r.Contains(p.Addr()); p = nextBlock(p) {
			if claimed[p] || slices.ContainsFunc(others, p.Overlaps) {
				continue
			}
			if err := claim(tx, nw, node, p, now); err != nil {
				return netip.Addr{}, err
			}
			a, ok, err := nextIn(tx, nw, sub, p)
			if err != nil {
				return netip.Addr{}, err
			}
			if ok {
				return a, nil
			}
			// A block holding only reserved addresses (the subnet's first, with its
			// gateway): keep it claimed, it is this node's, and go on.
			claimed[p] = true
		}
	}
	if len(own) > 0 {
		return netip.Addr{}, &api.Error{Code: api.CodePoolExhausted,
			Msg: fmt.Sprintf("network %q: subnet %s: node %q's blocks are full and no block of /%d is free in its podCIDRs %s",
				nw.Name, sub.Prefix, node, bits, prefixList(own))}
	}
	return netip.Addr{}, &api.Error{Code: api.CodePoolExhausted,
		Msg: fmt.Sprintf("network %q: subnet %s: node %q's blocks are full and no block of /%d is free", nw.Name, sub.Prefix, node, bits)}
}

// claimRanges says where node may claim a new block of sub: ranges, in order, are the
// parts of sub that node's pod ranges cover (own: those pod ranges), or the whole of sub
// when they cover none of it; others are the other nodes' pod ranges that overlap sub.
// A pod range of sub smaller than a block is an error.
func claimRanges(tx store.Tx, nw api.Network, sub api.Subnet, node string) (ranges, own, others []netip.Prefix, err error) {
	nodes, err := tx.Nodes()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("network %q: nodes: %w", nw.Name, err)
	}
	bits := nw.BlockBits(sub.Prefix)
	for _, n := range nodes {
		for _, p := range n.PodCIDRs {
			if !p.Overlaps(sub.Prefix) {
				continue
			}
			if n.Name != node {
				others = append(others, p)
				continue
			}
			if p.Bits() > bits {
				return nil, nil, nil, api.Errorf(api.CodeInvalidConfig,
					"network %q: node %q: podCIDR %s is smaller than the network's blocks of /%d (subnet %s): give the node a podCIDR of /%d or larger, or the network a smaller block size",
					nw.Name, node, p, bits, sub.Prefix, bits)
			}
			own = append(own, p)
			// Of two overlapping prefixes, the longer lies inside the other.
			if p.Bits() >= sub.Prefix.Bits() {
				ranges = append(ranges, p)
			} else {
				ranges = append(ranges, sub.Prefix.Masked())
			}
		}
	}
	if len(own) == 0 {
		ranges = []netip.Prefix{sub.Prefix.Masked()}
	}
	slices.SortFunc(ranges, netip.Prefix.Compare)
	ranges = slices.Compact(ranges)
	return ranges, own, others, nil
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// nextIn picks the next free address of block after its cursor and moves the cursor;
// false when the block is full.
func nextIn(tx store.Tx, nw api.Network, sub api.Subnet, block netip.Prefix) (netip.Addr, bool, error) {
	cursor, _, err := tx.Cursor(nw.Name, block)
	if err != nil {
		return netip.Addr{}, false, fmt.Errorf("network %q: cursor of block %s: %w", nw.Name, block, err)
	}
	var lookupErr error
	a, _, ok := pickIn(sub, block, cursor, func(a netip.Addr) bool {
		_, taken, err := tx.Allocation(nw.Name, a)
		if err != nil && lookupErr == nil {
			lookupErr = err
		}
		return taken || err != nil
	})
	if lookupErr != nil {
		return netip.Addr{}, false, fmt.Errorf("network %q: block %s: %w", nw.Name, block, lookupErr)
	}
	if !ok {
		return netip.Addr{}, false, nil
	}
	if err := tx.PutCursor(nw.Name, block, a); err != nil {
		return netip.Addr{}, false, fmt.Errorf("network %q: %w", nw.Name, err)
	}
	return a, true, nil
}

// nextBlock is the block after p, of the same size (invalid past the end of the
// address family).
func nextBlock(p netip.Prefix) netip.Prefix {
	a := broadcast(p).Next()
	if !a.IsValid() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, p.Bits())
}
