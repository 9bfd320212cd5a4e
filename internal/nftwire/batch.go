package nftwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Constants of linux/netfilter/nf_tables.h and linux/netfilter.h missing from
// golang.org/x/sys/unix.
const (
	nfDrop            = 0   // NF_DROP
	nfAccept          = 1   // NF_ACCEPT
	nftaSetDescConcat = 2   // NFTA_SET_DESC_CONCAT
	nftaSetFieldLen   = 1   // NFTA_SET_FIELD_LEN
	nftaSetElemKeyEnd = 10  // NFTA_SET_ELEM_KEY_END
	nftTableFOwner    = 0x2 // NFT_TABLE_F_OWNER (Linux 5.12)
)

// Batch is one nf_tables transaction: the kernel applies all its messages or none. Its
// methods queue messages; Send (or SendNS) runs them. The zero Batch is empty and ready.
type Batch struct {
	msgs []netlink.Message
	err  error // the first marshalling error
}

// Len is the number of messages queued.
func (b *Batch) Len() int { return len(b.msgs) }

// Err is the first error met while queueing (marshalling an expression); Send returns it
// without sending anything.
func (b *Batch) Err() error { return b.err }

// size is about the bytes of the batch on the wire.
func (b *Batch) size() int {
	n := 0
	for _, m := range b.msgs {
		n += len(m.Data) + 16
	}
	return n
}

// add queues one message of type msgType for table family f with the attributes of fn.
func (b *Batch) add(msgType int, flags netlink.HeaderFlags, f nftables.TableFamily, fn func(ae *netlink.AttributeEncoder)) {
	m, err := request(msgType, netlink.Acknowledge|flags, f, fn)
	if err != nil {
		if b.err == nil {
			b.err = fmt.Errorf("marshal nf_tables message %d: %w", msgType, err)
		}
		return
	}
	b.msgs = append(b.msgs, m)
}

// request is one nf_tables request of type msgType about table family f, with the
// attributes of fn (big-endian numbers).
func request(msgType int, flags netlink.HeaderFlags, f nftables.TableFamily, fn func(ae *netlink.AttributeEncoder)) (netlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	fn(ae)
	attrs, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, err
	}
	return netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msgType),
			Flags: netlink.Request | flags,
		},
		Data: append([]byte{byte(f), unix.NFNETLINK_V0, 0, 0}, attrs...),
	}, nil
}

// TableOption is a property of a table that AddTable creates.
type TableOption func(*tableOptions)

type tableOptions struct {
	flags uint32 // NFT_TABLE_F_*
	excl  bool
}

// Owner makes the table belong to the netlink socket that sends the batch
// (NFT_TABLE_F_OWNER, Linux 5.12): the kernel deletes it when that socket is closed,
// however the process ends, and no other socket may change it.
func Owner() TableOption { return func(o *tableOptions) { o.flags |= nftTableFOwner } }

// Exclusive makes the batch fail with EEXIST when the table exists; without it, adding a
// table that exists is a no-op.
func Exclusive() TableOption { return func(o *tableOptions) { o.excl = true } }

// AddTable creates table name of family f; a no-op if it exists (but see Exclusive).
func (b *Batch) AddTable(f nftables.TableFamily, name string, opts ...TableOption) {
	var o tableOptions
	for _, opt := range opts {
		opt(&o)
	}
	flags := netlink.Create
	if o.excl {
		flags |= netlink.Excl
	}
	b.add(unix.NFT_MSG_NEWTABLE, flags, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, name)
		ae.Uint32(unix.NFTA_TABLE_FLAGS, o.flags)
	})
}

// DelTable deletes table name of family f, which must exist (the batch fails with ENOENT
// otherwise: add it first to delete it whether or not it exists).
func (b *Batch) DelTable(f nftables.TableFamily, name string) {
	b.add(unix.NFT_MSG_DELTABLE, 0, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, name)
	})
}

// Chain is a chain of a table: a base chain, attached to a hook, when Type is set, else a
// regular chain, entered by jumps only.
type Chain struct {
	Name     string
	Type     string // "filter", "nat", "route"; "" for a regular chain
	Hook     uint32 // NF_INET_*, NF_BR_*, NF_NETDEV_*, NF_ARP_* hook number
	Priority int32
	Policy   string // a base chain's verdict for what no rule decides: "accept" ("" too) or "drop"
}

// AddChain creates chain c in table of family f.
func (b *Batch) AddChain(f nftables.TableFamily, table string, c Chain) {
	b.add(unix.NFT_MSG_NEWCHAIN, netlink.Create, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, table)
		ae.String(unix.NFTA_CHAIN_NAME, c.Name)
		if c.Type == "" {
			return
		}
		ae.Nested(unix.NFTA_CHAIN_HOOK, func(h *netlink.AttributeEncoder) error {
			h.Uint32(unix.NFTA_HOOK_HOOKNUM, c.Hook)
			h.Uint32(unix.NFTA_HOOK_PRIORITY, uint32(c.Priority))
			return nil
		})
		policy := uint32(nfAccept)
		if c.Policy == "drop" {
			policy = nfDrop
		}
		ae.Uint32(unix.NFTA_CHAIN_POLICY, policy)
		ae.String(unix.NFTA_CHAIN_TYPE, c.Type)
	})
}

// Set is a set or map of a table, as AddSet creates it and DumpSets reads it.
type Set struct {
	Name  string
	Flags uint32 // NFT_SET_*: interval, map, timeout, eval (dynamic), concat, anonymous...
	// KeyType and DataType are nft's data type numbers (the "magic" of
	// nftables.SetDatatype); DataType is unix.NFT_DATA_VERDICT in a verdict map.
	KeyType, KeyLen   uint32
	DataType, DataLen uint32
	Timeout           time.Duration // of the elements, 0 for none
	Size              uint32        // largest number of elements, 0 for no limit
	// FieldLens are the lengths of the fields of a concatenated key (without them nft
	// cannot list the set). Written only.
	FieldLens []uint32
	Userdata  []byte // what nft reads of the set: key byte order, typeof expressions. Written only.
	// Elems are the elements of an anonymous set, which a rule prints: read by DumpSets.
	Elems []Elem
}

// IsMap reports whether s is a map.
func (s Set) IsMap() bool { return s.Flags&unix.NFT_SET_MAP != 0 }

// IsVerdictMap reports whether s maps its keys to verdicts.
func (s Set) IsVerdictMap() bool { return s.IsMap() && s.DataType == unix.NFT_DATA_VERDICT }

// Interval reports whether the keys of s are ranges.
func (s Set) Interval() bool { return s.Flags&unix.NFT_SET_INTERVAL != 0 }

// Anonymous reports whether s is an anonymous set, written within a rule ("{ 22, 80 }").
func (s Set) Anonymous() bool { return s.Flags&unix.NFT_SET_ANONYMOUS != 0 }

// AddSet creates set s in table of family f, with batch ID id: the rules and elements of
// the same batch name it by this ID.
func (b *Batch) AddSet(f nftables.TableFamily, table string, s Set, id uint32) {
	b.add(unix.NFT_MSG_NEWSET, netlink.Create, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_TABLE, table)
		ae.String(unix.NFTA_SET_NAME, s.Name)
		ae.Uint32(unix.NFTA_SET_FLAGS, s.Flags)
		ae.Uint32(unix.NFTA_SET_KEY_TYPE, s.KeyType)
		ae.Uint32(unix.NFTA_SET_KEY_LEN, s.KeyLen)
		ae.Uint32(unix.NFTA_SET_ID, id)
		if s.IsMap() {
			ae.Uint32(unix.NFTA_SET_DATA_TYPE, s.DataType)
			ae.Uint32(unix.NFTA_SET_DATA_LEN, s.DataLen)
		}
		if s.Timeout != 0 {
			ae.Uint64(unix.NFTA_SET_TIMEOUT, uint64(s.Timeout.Milliseconds()))
		}
		concat := s.Flags&nftables.NFT_SET_CONCAT != 0
		if s.Size > 0 || concat {
			ae.Nested(unix.NFTA_SET_DESC, func(d *netlink.AttributeEncoder) error {
				if s.Size > 0 {
					d.Uint32(unix.NFTA_SET_DESC_SIZE, s.Size)
				}
				if concat {
					d.Nested(nftaSetDescConcat, func(c *netlink.AttributeEncoder) error {
						for _, n := range s.FieldLens {
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
		if s.Userdata != nil {
			ae.Bytes(unix.NFTA_SET_USERDATA, s.Userdata)
		}
	})
}

// DelChain deletes chain name of table of family f with the rules it still holds. The
// chain must exist and no rule or verdict element may jump to it when the message comes:
// the batch fails with ENOENT, or EBUSY.
func (b *Batch) DelChain(f nftables.TableFamily, table, name string) {
	b.add(unix.NFT_MSG_DELCHAIN, 0, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, table)
		ae.String(unix.NFTA_CHAIN_NAME, name)
	})
}

// DelSet deletes set name of table of family f with its elements. The set must exist and
// no rule may use it when the message comes: the batch fails with ENOENT, or EBUSY. A
// batch that deletes the rules using it first (DelRule) may then delete it, and may
// create a set of the same name after that.
func (b *Batch) DelSet(f nftables.TableFamily, table, name string) {
	b.add(unix.NFT_MSG_DELSET, 0, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_TABLE, table)
		ae.String(unix.NFTA_SET_NAME, name)
	})
}

// Elem is one element of a set or map as the kernel stores it. In an interval set whose
// key is one field, a range is two elements: its start, and the first key after it with
// IntervalEnd; in one with a concatenated key, one element from Key to KeyEnd.
type Elem struct {
	Key, KeyEnd []byte
	Data        []byte        // a map's data
	Verdict     *expr.Verdict // a verdict map's data
	IntervalEnd bool
	Comment     string
	Timeout     time.Duration
}

// AddElems adds els to set of table of family f: the set the batch created with ID id, or
// an existing one when id is 0.
func (b *Batch) AddElems(f nftables.TableFamily, table, set string, id uint32, els []Elem) {
	b.elems(unix.NFT_MSG_NEWSETELEM, f, table, set, id, els)
}

// DelElems deletes els from the existing set of table of family f.
func (b *Batch) DelElems(f nftables.TableFamily, table, set string, els []Elem) {
	b.elems(unix.NFT_MSG_DELSETELEM, f, table, set, 0, els)
}

func (b *Batch) elems(msgType int, f nftables.TableFamily, table, set string, id uint32, els []Elem) {
	b.add(msgType, 0, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, table)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
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

func (e Elem) encode(ae *netlink.AttributeEncoder) {
	value := func(typ uint16, v []byte) {
		ae.Nested(typ, func(d *netlink.AttributeEncoder) error {
			d.Bytes(unix.NFTA_DATA_VALUE, v)
			return nil
		})
	}
	value(unix.NFTA_SET_ELEM_KEY, e.Key)
	if e.KeyEnd != nil {
		value(nftaSetElemKeyEnd, e.KeyEnd)
	}
	if e.IntervalEnd {
		ae.Uint32(unix.NFTA_SET_ELEM_FLAGS, unix.NFT_SET_ELEM_INTERVAL_END)
	}
	switch {
	case e.Verdict != nil:
		ae.Nested(unix.NFTA_SET_ELEM_DATA, func(d *netlink.AttributeEncoder) error {
			d.Nested(unix.NFTA_DATA_VERDICT, func(v *netlink.AttributeEncoder) error {
				v.Uint32(unix.NFTA_VERDICT_CODE, uint32(e.Verdict.Kind))
				if e.Verdict.Chain != "" {
					v.String(unix.NFTA_VERDICT_CHAIN, e.Verdict.Chain)
				}
				return nil
			})
			return nil
		})
	case e.Data != nil:
		value(unix.NFTA_SET_ELEM_DATA, e.Data)
	}
	if e.Timeout != 0 {
		ae.Uint64(unix.NFTA_SET_ELEM_TIMEOUT, uint64(e.Timeout.Milliseconds()))
	}
	if e.Comment != "" {
		ae.Bytes(unix.NFTA_SET_ELEM_USERDATA, userdata.AppendString(nil, userdata.NFTNL_UDATA_SET_ELEM_COMMENT, e.Comment))
	}
}

// AddRule appends a rule made of exprs to chain of table of family f. A lookup or dynset
// in exprs names its set, and carries the batch ID of a set the same batch creates.
func (b *Batch) AddRule(f nftables.TableFamily, table, chain string, exprs []expr.Any) {
	b.newRule(f, table, chain, 0, exprs)
}

// InsertRule inserts a rule made of exprs into chain of table of family f, just before
// the rule with handle before (which must exist, else the batch fails with ENOENT); rules
// inserted before the same one keep the order of their messages.
func (b *Batch) InsertRule(f nftables.TableFamily, table, chain string, before uint64, exprs []expr.Any) {
	b.newRule(f, table, chain, before, exprs)
}

// DelRule deletes the rule with handle handle of chain of table of family f (which must
// exist, else the batch fails with ENOENT).
func (b *Batch) DelRule(f nftables.TableFamily, table, chain string, handle uint64) {
	b.add(unix.NFT_MSG_DELRULE, 0, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		ae.String(unix.NFTA_RULE_CHAIN, chain)
		ae.Uint64(unix.NFTA_RULE_HANDLE, handle)
	})
}

// newRule appends (before 0) or inserts before a rule a rule made of exprs.
func (b *Batch) newRule(f nftables.TableFamily, table, chain string, before uint64, exprs []expr.Any) {
	var list []byte
	for _, e := range exprs {
		data, err := marshalExpr(f, e)
		if err != nil {
			if b.err == nil {
				b.err = fmt.Errorf("chain %s: %w", chain, err)
			}
			return
		}
		list = append(list, nlAttr(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, data)...)
	}
	flags := netlink.Create | netlink.Append // without a position: at the end
	if before != 0 {
		flags = netlink.Create // with a position and no NLM_F_APPEND: before that rule
	}
	b.add(unix.NFT_MSG_NEWRULE, flags, f, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		ae.String(unix.NFTA_RULE_CHAIN, chain)
		if before != 0 {
			ae.Uint64(unix.NFTA_RULE_POSITION, before)
		}
		ae.Bytes(unix.NFTA_RULE_EXPRESSIONS|unix.NLA_F_NESTED, list)
	})
}

// CtDirNone is the Direction of a ct expression without one, for the keys where the
// direction is optional (bytes, packets, avgpkt, zone): the kernel's IP_CT_DIR_MAX.
const CtDirNone = 2

// ctDirKeys are the ct keys that load a field of a connection's tuple, which the kernel
// takes with a one-byte direction: google/nftables v0.3.0 leaves the direction out for
// addresses of one family and the protocols, and sends it as four bytes (read as 0,
// "original", whatever its value) else. The kernel does not list the direction of the
// protocols.
var ctDirKeys = map[expr.CtKey]bool{
	expr.CtKeySRC: true, expr.CtKeyDST: true, expr.CtKeyPROTOSRC: true, expr.CtKeyPROTODST: true,
	unix.NFT_CT_SRC_IP: true, unix.NFT_CT_DST_IP: true, unix.NFT_CT_SRC_IP6: true, unix.NFT_CT_DST_IP6: true,
	unix.NFT_CT_L3PROTOCOL: true, unix.NFT_CT_PROTOCOL: true,
}

// ctOptDirKeys are the ct keys whose direction is optional: a direction of CtDirNone
// loads the sum of both.
var ctOptDirKeys = map[expr.CtKey]bool{
	expr.CtKeyBYTES: true, expr.CtKeyPKTS: true, expr.CtKeyAVGPKT: true, expr.CtKeyZONE: true,
}

// marshalExpr is one expression's attributes (name and data), as google/nftables marshals
// them but for the direction of ct loads, which the kernel wants as one byte.
func marshalExpr(f nftables.TableFamily, e expr.Any) ([]byte, error) {
	ct, ok := e.(*expr.Ct)
	if !ok || ct.SourceRegister || !ctDirKeys[ct.Key] && !ctOptDirKeys[ct.Key] {
		return expr.Marshal(byte(f), e)
	}
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Uint32(unix.NFTA_CT_KEY, uint32(ct.Key))
	ae.Uint32(unix.NFTA_CT_DREG, ct.Register)
	if ctDirKeys[ct.Key] || ct.Direction < CtDirNone {
		ae.Uint8(unix.NFTA_CT_DIRECTION, uint8(ct.Direction))
	}
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

// Dial opens a netfilter netlink socket in the network namespace nsFD (bound to the fd:
// the calling goroutine does not change namespace).
func Dial(nsFD int) (*netlink.Conn, error) {
	return netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: nsFD})
}

// SockBuffers sets a socket's send and receive buffers to n bytes; it is also a
// google/nftables SockOption. A batch is one sendmsg, which fails with "message too long"
// beyond the send buffer. The *FORCE options (CAP_NET_ADMIN) pass net.core.{w,r}mem_max;
// without the capability the plain options are used, capped by those sysctls.
func SockBuffers(n int) func(*netlink.Conn) error {
	return func(c *netlink.Conn) error {
		raw, err := c.SyscallConn()
		if err != nil {
			return fmt.Errorf("set socket buffers: %w", err)
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
			}
		}); err != nil {
			return fmt.Errorf("set socket buffers: %w", err)
		}
		if serr == nil {
			return nil
		}
		if err := c.SetWriteBuffer(n); err != nil {
			return fmt.Errorf("set socket send buffer: %w", err)
		}
		if err := c.SetReadBuffer(n); err != nil {
			return fmt.Errorf("set socket receive buffer: %w", err)
		}
		return nil
	}
}

// minSendBuf is the least buffer SendNS sets: a smaller one would lose acknowledgements.
const minSendBuf = 256 << 10

// SendNS runs b on a netlink socket of its own in the network namespace nsFD, whose
// buffers hold twice the batch and at least minBuf bytes, closed when done. An empty batch
// sends nothing.
func (b *Batch) SendNS(nsFD, minBuf int) error {
	if b.err != nil || len(b.msgs) == 0 {
		return b.err
	}
	c, err := Dial(nsFD)
	if err != nil {
		return fmt.Errorf("connect to nftables: %w", err)
	}
	defer c.Close()
	if err := SockBuffers(max(2*b.size(), minBuf, minSendBuf))(c); err != nil {
		return fmt.Errorf("connect to nftables: %w", err)
	}
	return b.Send(c)
}

// Send runs b on c: one sendmsg of the whole batch, then one acknowledgement or error per
// message. The kernel applies all of b or nothing; the error joins those of the messages
// it refused (errors.Is finds their errno). An empty batch sends nothing.
func (b *Batch) Send(c *netlink.Conn) error {
	if b.err != nil || len(b.msgs) == 0 {
		return b.err
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
