package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
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
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: t.fd})
	if err != nil {
		return 0, fmt.Errorf("nftables generation: connect: %w", err)
	}
	defer c.Close()
	// nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, resource id 0.
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
		if err := ad.Err(); err != nil {
			return 0, fmt.Errorf("nftables generation: %w", err)
		}
	}
	return 0, fmt.Errorf("nftables generation: no generation id in the kernel's reply")
}
