package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// podnet writes its tables with nf_tables batches it marshals itself; google/nftables
// marshals the expressions of the rules and reads the tables back (compare.go). Two things
// that nft needs to list the tables cannot be said through google/nftables v0.3.0: the
// "typeof" user data of a set whose key has an integer field (without it nft 1.0.6 prints
// a type it cannot parse back), and the direction of a ct expression that loads an IPv4
// or IPv6 address ("ct original ip daddr").

// Constants of linux/netfilter/nf_tables.h and linux/netfilter.h missing from
// golang.org/x/sys/unix.
const (
	nfAccept          = 1          // NF_ACCEPT
	nftaSetDescConcat = 2          // NFTA_SET_DESC_CONCAT
	nftaSetFieldLen   = 1          // NFTA_SET_FIELD_LEN
	nftaSetElemKeyEnd = 10         // NFTA_SET_ELEM_KEY_END
	nftGoto           = 0xfffffffc // NFT_GOTO (-4)
)

// batch is one nf_tables transaction: the kernel applies all its messages or none.
type batch struct {
	msgs []netlink.Message
	err  error // the first marshalling error
}

// add queues one message of type msgType for table family f with the attributes of fn.
func (b *batch) add(msgType int, flags netlink.HeaderFlags, f nftables.TableFamily, fn func(ae *netlink.AttributeEncoder)) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	fn(ae)
	attrs, err := ae.Encode()
	if err != nil {
		if b.err == nil {
			b.err = fmt.Errorf("marshal nf_tables message %d: %w", msgType, err)
		}
		return
	}
	b.msgs = append(b.msgs, netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msgType),
			Flags: netlink.Request | netlink.Acknowledge | flags,
		},
		Data: append([]byte{byte(f), unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
}

// addTable creates podnet's table of family f; a no-op if it exists.
func (b *batch) addTable(f nftables.TableFamily) {
	b.add(unix.NFT_MSG_NEWTABLE, netlink.Create, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, TableName)
		ae.Uint32(unix.NFTA_TABLE_FLAGS, 0)
	})
}

// delTable deletes podnet's table of family f, which must exist.
func (b *batch) delTable(f nftables.TableFamily) {
	b.add(unix.NFT_MSG_DELTABLE, 0, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, TableName)
	})
}

// addChain creates chain c in the table of family f.
func (b *batch) addChain(f nftables.TableFamily, c chainDef) {
	b.add(unix.NFT_MSG_NEWCHAIN, netlink.Create, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, TableName)
		ae.String(unix.NFTA_CHAIN_NAME, c.name)
		if !c.base() {
			return
		}
		ae.Nested(unix.NFTA_CHAIN_HOOK, func(h *netlink.AttributeEncoder) error {
			h.Uint32(unix.NFTA_HOOK_HOOKNUM, uint32(c.hook))
			h.Uint32(unix.NFTA_HOOK_PRIORITY, uint32(c.priority))
			return nil
		})
		ae.Uint32(unix.NFTA_CHAIN_POLICY, nfAccept)
		ae.String(unix.NFTA_CHAIN_TYPE, string(c.typ))
	})
}

// addSet creates set s in the table of family f, with batch ID id (rules and elements of
// the same batch name it by this ID).
func (b *batch) addSet(f nftables.TableFamily, s setDef, id uint32) {
	var flags uint32
	if s.interval {
		flags |= unix.NFT_SET_INTERVAL
	}
	if s.isMap() {
		flags |= unix.NFT_SET_MAP
	}
	if s.timeout != 0 {
		flags |= unix.NFT_SET_TIMEOUT
	}
	if s.dynamic {
		flags |= unix.NFT_SET_EVAL
	}
	if s.concat() {
		flags |= nftables.NFT_SET_CONCAT
	}
	b.add(unix.NFT_MSG_NEWSET, netlink.Create, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_TABLE, TableName)
		ae.String(unix.NFTA_SET_NAME, s.name)
		ae.Uint32(unix.NFTA_SET_FLAGS, flags)
		ae.Uint32(unix.NFTA_SET_KEY_TYPE, s.keyType.GetNFTMagic())
		ae.Uint32(unix.NFTA_SET_KEY_LEN, s.keyType.Bytes)
		ae.Uint32(unix.NFTA_SET_ID, id)
		if s.isVerdictMap() {
			ae.Uint32(unix.NFTA_SET_DATA_TYPE, unix.NFT_DATA_VERDICT)
			ae.Uint32(unix.NFTA_SET_DATA_LEN, s.dataType.Bytes)
		} else if s.isMap() {
			ae.Uint32(unix.NFTA_SET_DATA_TYPE, s.dataType.GetNFTMagic())
			ae.Uint32(unix.NFTA_SET_DATA_LEN, s.dataType.Bytes)
		}
		if s.timeout != 0 {
			ae.Uint64(unix.NFTA_SET_TIMEOUT, uint64(s.timeout.Milliseconds()))
		}
		if s.size > 0 || s.concat() {
			ae.Nested(unix.NFTA_SET_DESC, func(d *netlink.AttributeEncoder) error {
				if s.size > 0 {
					d.Uint32(unix.NFTA_SET_DESC_SIZE, s.size)
				}
				if s.concat() {
					// The length of each field: nft cannot list a concatenation without.
					d.Nested(nftaSetDescConcat, func(c *netlink.AttributeEncoder) error {
						for _, n := range s.keyFieldLens() {
							c.Nested(unix.NFTA_LIST_ELEM, func(e *netlink.AttributeEncoder) error {
								e.Uint32(nftaSetFieldLen, n)
								return nil
							})
						}
						return nil
					})
				}
				return nil
			})
		}
		ae.Bytes(unix.NFTA_SET_USERDATA, s.userdata())
	})
}

// keyFieldLens are the lengths of the fields of a concatenated key.
func (s setDef) keyFieldLens() []uint32 {
	if s.fieldLens != nil {
		return s.fieldLens
	}
	var out []uint32
	for _, field := range nftables.ConcatSetTypeElements(s.keyType) {
		out = append(out, field.Bytes)
	}
	return out
}

// userdata is what nft reads from a set's user data: the byte order of the key, and the
// typeof expressions when the set has them.
func (s setDef) userdata() []byte {
	if s.typeofKey != nil {
		// As nft writes it for "typeof": byte orders 0 (nft takes them from the expressions).
		ud := userdata.AppendUint32(nil, userdata.NFTNL_UDATA_SET_KEYBYTEORDER, 0)
		ud = userdata.AppendUint32(ud, userdata.NFTNL_UDATA_SET_DATABYTEORDER, 0)
		ud = userdata.Append(ud, userdata.NFTNL_UDATA_SET_KEY_TYPEOF, s.typeofKey.udata())
		if s.typeofData != nil {
			ud = userdata.Append(ud, userdata.NFTNL_UDATA_SET_DATA_TYPEOF, s.typeofData.udata())
		}
		return ud
	}
	order := uint32(2) // BYTEORDER_BIG_ENDIAN
	if s.byteOrder() == binaryutil.NativeEndian {
		order = 1 // BYTEORDER_HOST_ENDIAN
	}
	return userdata.AppendUint32(nil, userdata.NFTNL_UDATA_SET_KEYBYTEORDER, order)
}

// elems queues a NEWSETELEM or DELSETELEM message with the kernel elements els of set s,
// which is the batch's set id, or an existing set when id is 0.
func (b *batch) elems(msgType int, f nftables.TableFamily, s setDef, id uint32, els []kernelElem) {
	b.add(msgType, 0, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, s.name)
		if id != 0 {
			ae.Uint32(unix.NFTA_SET_ELEM_LIST_SET_ID, id)
		}
		ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(list *netlink.AttributeEncoder) error {
			for _, e := range els {
				list.Nested(unix.NFTA_LIST_ELEM, func(el *netlink.AttributeEncoder) error {
					e.encode(el)
					return nil
				})
			}
			return nil
		})
	})
}

// addRule appends a rule with exprs to chain of the table of family f. The lookups and
// dynsets of exprs carry the batch IDs of their sets.
func (b *batch) addRule(f nftables.TableFamily, chain string, exprs []expr.Any) {
	var list []byte
	for _, e := range exprs {
		data, err := marshalExpr(byte(f), e)
		if err != nil {
			if b.err == nil {
				b.err = fmt.Errorf("chain %s: %w", chain, err)
			}
			return
		}
		list = append(list, nlAttr(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, data)...)
	}
	b.add(unix.NFT_MSG_NEWRULE, netlink.Create|netlink.Append, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, TableName)
		ae.String(unix.NFTA_RULE_CHAIN, chain)
		ae.Bytes(unix.NFTA_RULE_EXPRESSIONS|unix.NLA_F_NESTED, list)
	})
}

// ctDirKeys are the ct keys of the tuple, which the kernel only accepts with a one-byte
// direction: google/nftables v0.3.0 leaves the direction out for addresses of one
// family, and sends it as four bytes (read as 0, "original", whatever its value) else.
var ctDirKeys = map[expr.CtKey]bool{
	expr.CtKeySRC: true, expr.CtKeyDST: true, expr.CtKeyPROTOSRC: true, expr.CtKeyPROTODST: true,
	unix.NFT_CT_SRC_IP: true, unix.NFT_CT_DST_IP: true, unix.NFT_CT_SRC_IP6: true, unix.NFT_CT_DST_IP6: true,
}

// marshalExpr is one expression's attributes (name and data), as google/nftables marshals
// them but for the direction of ct tuple loads.
func marshalExpr(fam byte, e expr.Any) ([]byte, error) {
	ct, ok := e.(*expr.Ct)
	if !ok || !ctDirKeys[ct.Key] {
		return expr.Marshal(fam, e)
	}
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Uint32(unix.NFTA_CT_KEY, uint32(ct.Key))
	ae.Uint32(unix.NFTA_CT_DREG, ct.Register)
	ae.Uint8(unix.NFTA_CT_DIRECTION, uint8(ct.Direction))
	data, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(nlAttr(unix.NFTA_EXPR_NAME, []byte("ct\x00")), nlAttr(unix.NFTA_EXPR_DATA|unix.NLA_F_NESTED, data)...), nil
}

// nlAttr is one netlink attribute, padded to 4 bytes.
func nlAttr(typ uint16, data []byte) []byte {
	b, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: typ, Data: data}})
	return b
}

// kernelElem is one element as the kernel receives it.
type kernelElem struct {
	key, keyEnd []byte
	data        []byte
	jump        string // verdict maps: goto this chain
	intervalEnd bool
	comment     string
	timeout     time.Duration
}

func (e kernelElem) encode(ae *netlink.AttributeEncoder) {
	value := func(typ uint16, v []byte) {
		ae.Nested(typ, func(d *netlink.AttributeEncoder) error {
			d.Bytes(unix.NFTA_DATA_VALUE, v)
			return nil
		})
	}
	value(unix.NFTA_SET_ELEM_KEY, e.key)
	if e.keyEnd != nil {
		value(nftaSetElemKeyEnd, e.keyEnd)
	}
	if e.intervalEnd {
		ae.Uint32(unix.NFTA_SET_ELEM_FLAGS, unix.NFT_SET_ELEM_INTERVAL_END)
	}
	switch {
	case e.jump != "":
		ae.Nested(unix.NFTA_SET_ELEM_DATA, func(d *netlink.AttributeEncoder) error {
			d.Nested(unix.NFTA_DATA_VERDICT, func(v *netlink.AttributeEncoder) error {
				v.Uint32(unix.NFTA_VERDICT_CODE, nftGoto)
				v.String(unix.NFTA_VERDICT_CHAIN, e.jump)
				return nil
			})
			return nil
		})
	case e.data != nil:
		value(unix.NFTA_SET_ELEM_DATA, e.data)
	}
	if e.timeout != 0 {
		ae.Uint64(unix.NFTA_SET_ELEM_TIMEOUT, uint64(e.timeout.Milliseconds()))
	}
	if e.comment != "" {
		ae.Bytes(unix.NFTA_SET_ELEM_USERDATA, userdata.AppendString(nil, userdata.NFTNL_UDATA_SET_ELEM_COMMENT, e.comment))
	}
}

// sendLocked runs b in the table's namespace: one sendmsg of the whole batch, then one
// acknowledgement or error per message. The kernel applies all of b or nothing.
func (t *Table) sendLocked(b *batch) error {
	if b.err != nil {
		return b.err
	}
	if len(b.msgs) == 0 {
		return nil
	}
	if t.fd < 0 {
		return ErrClosed
	}
	size := 0
	for _, m := range b.msgs {
		size += len(m.Data) + 16
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: t.fd})
	if err != nil {
		return fmt.Errorf("connect to nftables: %w", err)
	}
	defer c.Close()
	if err := sockBuffers(max(2*size, minSockBuf))(c); err != nil {
		return fmt.Errorf("connect to nftables: %w", err)
	}
	res := make([]byte, 4)
	binary.BigEndian.PutUint16(res[2:], unix.NFNL_SUBSYS_NFTABLES)
	framed := make([]netlink.Message, 0, len(b.msgs)+2)
	framed = append(framed, netlink.Message{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: netlink.Request}, Data: res})
	framed = append(framed, b.msgs...)
	framed = append(framed, netlink.Message{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: netlink.Request}, Data: res})
	if _, err := c.SendMessages(framed); err != nil {
		return fmt.Errorf("send nf_tables batch: %w", err)
	}
	// Every message asked for an acknowledgement; the kernel answers each, an error for
	// those it refused, before sendmsg returns.
	var errs []error
	for acked := 0; acked < len(b.msgs); {
		msgs, err := c.Receive()
		if err != nil {
			errs = append(errs, err)
			acked++ // the netlink package turns an error reply into err
			continue
		}
		acked += len(msgs)
	}
	return errors.Join(errs...)
}
