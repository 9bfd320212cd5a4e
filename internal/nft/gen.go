package nft

import (
	"fmt"

	"github.com/podnet/podnet/internal/nftwire"
)

// Generation returns the namespace's nftables ruleset generation: a counter the kernel
// increments with every committed batch, of any table and any tool. While it stays the
// same, nothing changed any table, podnet's included; a caller that found the tables
// equal to its desired state at one generation knows they still are at the same one.
// It is one netlink request, whatever the size of the tables.
func (t *Table) Generation() (uint32, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return 0, ErrClosed
	}
	c, err := nftwire.Dial(t.fd)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: connect: %w", err)
	}
	defer c.Close()
	g, err := nftwire.Generation(c)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	return g, nil
}
