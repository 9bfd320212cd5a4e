package xtables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Set is one ipset.
type Set struct {
	Name       string
	Type       string // hash:net, hash:ip, list:set ...
	Family     string // "ip" or "ip6" (ipset says inet, inet6), "" for a set of no family (list:set, hash:mac)
	Entries    int    // members, as listed
	References int    // iptables rules and list:set sets that refer to the set
}

// ipset over nfnetlink (linux/netfilter/nfnetlink.h, linux/netfilter/ipset/ip_set.h).
const (
	subsysIPSet = 6 // NFNL_SUBSYS_IPSET

	cmdProtocol = 1 // IPSET_CMD_PROTOCOL
	cmdList     = 7 // IPSET_CMD_LIST

	// Command level attributes.
	attrProtocol    = 1  // IPSET_ATTR_PROTOCOL, u8
	attrSetName     = 2  // IPSET_ATTR_SETNAME, string
	attrTypeName    = 3  // IPSET_ATTR_TYPENAME, string
	attrFamily      = 5  // IPSET_ATTR_FAMILY, u8
	attrData        = 7  // IPSET_ATTR_DATA, nested
	attrADT         = 8  // IPSET_ATTR_ADT, nested list of IPSET_ATTR_DATA, one per member
	attrProtocolMin = 10 // IPSET_ATTR_PROTOCOL_MIN, u8

	// In the header's IPSET_ATTR_DATA.
	attrReferences = 25 // IPSET_ATTR_REFERENCES, be32

	protocolMin = 6 // IPSET_PROTOCOL_MIN
	protocolMax = 7 // IPSET_PROTOCOL
)

// Sets lists the ipsets of the calling thread's network namespace, in the kernel's
// order (list:set sets last), through nfnetlink: IPSET_CMD_PROTOCOL to agree on the
// protocol version, then an IPSET_CMD_LIST dump. Entries counts the members the dump
// lists, so it reads every member of every set. Without ipsets it returns none and no
// error; so it does when the kernel has no ipset support.
func Sets() ([]Set, error) {
	msgs, err := listSets()
	if err != nil || msgs == nil {
		return nil, err
	}
	return parseSets(msgs)
}

// listSets dumps the ipsets and returns the kernel's messages, nil when the kernel has
// no ipset support.
func listSets() ([]netlink.Message, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("dial netfilter netlink: %w", err)
	}
	defer c.Close()

	proto, err := ipsetProtocol(c)
	if err != nil {
		if _, serr := os.Stat("/sys/module/ip_set"); errors.Is(serr, os.ErrNotExist) {
			return nil, nil // no ipset in the kernel, built in or loaded: no sets
		}
		return nil, err
	}
	msgs, err := c.Execute(ipsetRequest(cmdList, netlink.Request|netlink.Dump, proto))
	if err != nil {
		return nil, fmt.Errorf("ipset IPSET_CMD_LIST: %w", err)
	}
	return msgs, nil
}

// ipsetProtocol asks the kernel for the versions of the ipset protocol it speaks and
// returns the newest that this package speaks too.
func ipsetProtocol(c *netlink.Conn) (uint8, error) {
	msgs, err := c.Execute(ipsetRequest(cmdProtocol, netlink.Request, protocolMax))
	if err != nil {
		return 0, fmt.Errorf("ipset IPSET_CMD_PROTOCOL: %w", err)
	}
	if len(msgs) != 1 {
		return 0, fmt.Errorf("ipset IPSET_CMD_PROTOCOL: %d replies, want 1", len(msgs))
	}
	var kmax, kmin uint8
	err = decodeIPSet(msgs[0], func(ad *netlink.AttributeDecoder) error {
		switch ad.Type() {
		case attrProtocol:
			kmax = ad.Uint8()
		case attrProtocolMin:
			kmin = ad.Uint8()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ipset IPSET_CMD_PROTOCOL: %w", err)
	}
	if kmin == 0 {
		kmin = kmax // kernels before protocol 7 send no minimum
	}
	v := min(kmax, protocolMax)
	if v < protocolMin || v < kmin {
		return 0, fmt.Errorf("ipset IPSET_CMD_PROTOCOL: kernel speaks versions %d to %d, this reader %d to %d", kmin, kmax, protocolMin, protocolMax)
	}
	return v, nil
}

// ipsetRequest is an ipset command with the protocol attribute and nothing else.
func ipsetRequest(cmd int, flags netlink.HeaderFlags, proto uint8) netlink.Message {
	// struct nfgenmsg: family, version (NFNETLINK_V0), resource id (be16, 0).
	data := []byte{unix.AF_INET, 0, 0, 0}
	// struct nlattr: len, type, then the u8 value padded to 4 bytes.
	data = binary.NativeEndian.AppendUint16(data, 5)
	data = binary.NativeEndian.AppendUint16(data, attrProtocol)
	data = append(data, proto, 0, 0, 0)
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsysIPSet<<8 | cmd), Flags: flags},
		Data:   data,
	}
}

// nfgenmsgLen is the size of struct nfgenmsg, before the attributes.
const nfgenmsgLen = 4

// decodeIPSet calls fn for each top-level attribute of an ipset message.
func decodeIPSet(m netlink.Message, fn func(ad *netlink.AttributeDecoder) error) error {
	if len(m.Data) < nfgenmsgLen {
		return fmt.Errorf("message of %d bytes", len(m.Data))
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[nfgenmsgLen:])
	if err != nil {
		return err
	}
	for ad.Next() {
		if err := fn(ad); err != nil {
			return err
		}
	}
	return ad.Err()
}

// parseSets turns the messages of an IPSET_CMD_LIST dump into Sets. The kernel sends
// one message per set, or, for a set whose members do not fit in one, a first message
// with the header (type, family, IPSET_ATTR_DATA) and members, then messages with the
// name and further members only.
func parseSets(msgs []netlink.Message) ([]Set, error) {
	var sets []Set
	index := map[string]int{} // set name -> position in sets
	for i, m := range msgs {
		if cmd := int(m.Header.Type) & 0xff; int(m.Header.Type)>>8 != subsysIPSet || cmd != cmdList {
			return nil, fmt.Errorf("ipset list: message %d has type %#x, want %#x", i, uint16(m.Header.Type), subsysIPSet<<8|cmdList)
		}
		var s Set
		var header bool
		var members int
		err := decodeIPSet(m, func(ad *netlink.AttributeDecoder) error {
			switch ad.Type() {
			case attrSetName:
				s.Name = ad.String()
			case attrTypeName:
				s.Type, header = ad.String(), true
			case attrFamily:
				s.Family = familyName(ad.Uint8())
			case attrData:
				ad.Nested(func(nad *netlink.AttributeDecoder) error {
					for nad.Next() {
						if nad.Type() == attrReferences {
							n, err := be32(nad)
							if err != nil {
								return fmt.Errorf("references: %w", err)
							}
							s.References = int(n)
						}
					}
					return nil
				})
			case attrADT:
				ad.Nested(func(nad *netlink.AttributeDecoder) error {
					for nad.Next() {
						if nad.Type() == attrData {
							members++
						}
					}
					return nil
				})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("ipset list: message %d: %w", i, err)
		}
		if s.Name == "" {
			return nil, fmt.Errorf("ipset list: message %d names no set", i)
		}
		j, seen := index[s.Name]
		switch {
		case header && seen:
			return nil, fmt.Errorf("ipset list: set %q listed twice", s.Name)
		case header:
			s.Entries = members
			index[s.Name] = len(sets)
			sets = append(sets, s)
		case seen:
			sets[j].Entries += members
		default:
			return nil, fmt.Errorf("ipset list: members of set %q before its header", s.Name)
		}
	}
	return sets, nil
}

// be32 reads a u32 attribute that the kernel sends in network byte order (with
// NLA_F_NET_BYTEORDER).
func be32(ad *netlink.AttributeDecoder) (uint32, error) {
	b := ad.Bytes()
	if len(b) != 4 {
		return 0, fmt.Errorf("%d bytes, want 4", len(b))
	}
	if ad.TypeFlags()&netlink.NetByteOrder == 0 {
		return binary.NativeEndian.Uint32(b), nil
	}
	return binary.BigEndian.Uint32(b), nil
}

// familyName names an ipset family (NFPROTO_*) as Table.Family does.
func familyName(f uint8) string {
	switch f {
	case unix.NFPROTO_UNSPEC:
		return ""
	case unix.NFPROTO_IPV4:
		return "ip"
	case unix.NFPROTO_IPV6:
		return "ip6"
	}
	return "family " + strconv.Itoa(int(f))
}
