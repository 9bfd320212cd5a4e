package nft

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
)

// ErrClosed is returned by the methods of a closed Table.
var ErrClosed = errors.New("nftables table is closed")

var _ Applier = (*Table)(nil)

// Table is table inet podnet in one network namespace. Every kernel operation goes
// through a fresh netlink socket opened in that namespace (google/nftables bound to the
// namespace fd), so that a failed batch never leaves unread replies for the next one.
// Its methods are safe for concurrent use; they run one at a time.
type Table struct {
	// mu serializes kernel operations and guards fd.
	mu sync.Mutex
	fd int // our duplicate of the namespace fd; -1 once closed
}

// Open returns the table of the network namespace nsFD refers to. Open duplicates nsFD:
// the caller keeps ownership of nsFD and may close it at once. Open changes nothing in
// the kernel.
func Open(nsFD int) (*Table, error) {
	fd, err := unix.FcntlInt(uintptr(nsFD), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("open table inet %s: duplicate netns fd %d: %w", TableName, nsFD, err)
	}
	if !kernel.IsNetNS(fd) {
		unix.Close(fd)
		return nil, fmt.Errorf("open table inet %s: fd %d is not a network namespace", TableName, nsFD)
	}
	return &Table{fd: fd}, nil
}

// Close releases the namespace fd. It leaves the kernel table as it is. Calling it twice
// is harmless.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return nil
	}
	err := unix.Close(t.fd)
	t.fd = -1
	if err != nil {
		return fmt.Errorf("close table inet %s: %w", TableName, err)
	}
	return nil
}

// Batch limits. A set element list is one netlink attribute, whose length is 16 bits:
// elements are sent in messages of at most maxElemsPerMsg elements and maxElemBytesPerMsg
// bytes of attributes.
const (
	maxElemsPerMsg     = 1000
	maxElemBytesPerMsg = 48 << 10
	minSockBuf         = 1 << 20
)

// Sync replaces table inet podnet with r in one netlink batch: the kernel applies all of
// it or nothing. The batch creates the table (a no-op if it exists), deletes it, and
// creates it again with its sets, elements, chains and rules, so packets see either the
// old table or the new one. Calling it twice with the same r is harmless.
func (t *Table) Sync(r Ruleset) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("sync table inet %s: %w", TableName, err)
	}
	def := build(r)
	t.mu.Lock()
	defer t.mu.Unlock()
	c, err := t.connLocked(def.batchSize())
	if err != nil {
		return fmt.Errorf("sync table inet %s: %w", TableName, err)
	}
	tbl := podnetTable()
	c.AddTable(tbl)
	c.DelTable(tbl)
	c.AddTable(tbl)
	sets := make(map[string]*nftables.Set, len(def.sets))
	for i, s := range def.sets {
		set := &nftables.Set{
			Table:         tbl,
			ID:            uint32(i + 1), // IDs are per batch; set explicitly to avoid google/nftables' global counter
			Name:          s.name,
			KeyType:       s.keyType,
			Interval:      s.interval,
			Concatenation: s.concat(),
			KeyByteOrder:  s.byteOrder(),
		}
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("sync table inet %s: add set %s: %w", TableName, s.name, err)
		}
		for _, chunk := range s.chunks() {
			if err := c.SetAddElements(set, chunk); err != nil {
				return fmt.Errorf("sync table inet %s: add elements to set %s: %w", TableName, s.name, err)
			}
		}
		sets[s.name] = set
	}
	accept := nftables.ChainPolicyAccept
	for _, cd := range def.chains {
		ch := c.AddChain(&nftables.Chain{
			Name:     cd.name,
			Table:    tbl,
			Type:     cd.typ,
			Hooknum:  nftables.ChainHookRef(cd.hook),
			Priority: nftables.ChainPriorityRef(cd.priority),
			Policy:   &accept,
		})
		for _, rd := range cd.rules {
			exprs, err := bindSets(rd.exprs, sets)
			if err != nil {
				return fmt.Errorf("sync table inet %s: chain %s: %w", TableName, cd.name, err)
			}
			c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: exprs})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("sync table inet %s: %w", TableName, err)
	}
	return nil
}

// Delete removes table inet podnet. It succeeds when the table does not exist: the batch
// creates it (a no-op if it exists) and deletes it.
func (t *Table) Delete() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, err := t.connLocked(0)
	if err != nil {
		return fmt.Errorf("delete table inet %s: %w", TableName, err)
	}
	tbl := podnetTable()
	c.AddTable(tbl)
	c.DelTable(tbl)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete table inet %s: %w", TableName, err)
	}
	return nil
}

// InSync reads table inet podnet back (table flags, chains and their hooks, the
// expressions of every rule, sets and their elements) and reports whether it equals r.
// It is false when the table is missing, dormant or differs in any of these.
func (t *Table) InSync(r Ruleset) (bool, error) {
	diff, err := t.diff(r)
	return diff == "" && err == nil, err
}

// diff returns "" when the kernel table equals r, else the first difference found.
func (t *Table) diff(r Ruleset) (string, error) {
	if err := r.Validate(); err != nil {
		return "", fmt.Errorf("read table inet %s: %w", TableName, err)
	}
	def := build(r)
	t.mu.Lock()
	defer t.mu.Unlock()
	c, err := t.connLocked(def.batchSize())
	if err != nil {
		return "", fmt.Errorf("read table inet %s: %w", TableName, err)
	}
	diff, err := compare(c, def)
	if err != nil {
		return "", fmt.Errorf("read table inet %s: %w", TableName, err)
	}
	return diff, nil
}

func podnetTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// connLocked returns a google/nftables connection bound to the namespace, whose sockets
// can hold about size bytes of batch and of replies.
func (t *Table) connLocked(size int) (*nftables.Conn, error) {
	if t.fd < 0 {
		return nil, ErrClosed
	}
	c, err := nftables.New(nftables.WithNetNSFd(t.fd), nftables.WithSockOptions(sockBuffers(max(size, minSockBuf))))
	if err != nil {
		return nil, fmt.Errorf("connect to nftables: %w", err)
	}
	return c, nil
}

// sockBuffers sets the socket's send and receive buffers to n bytes. The whole batch is
// one sendmsg, which fails with "message too long" beyond the send buffer. The *FORCE
// options (CAP_NET_ADMIN) pass net.core.{w,r}mem_max; without the capability the plain
// options are used, capped by those sysctls.
func sockBuffers(n int) nftables.SockOption {
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

// batchSize estimates the bytes of the batch that writes t (and of the dump that reads it).
func (t tableDef) batchSize() int {
	n := 64 << 10
	for _, s := range t.sets {
		for _, e := range s.elems {
			n += e.size()
		}
	}
	return 2 * n
}

// byteOrder is the key byte order nft records in the set's user data: strings (ifname)
// are host-endian for nft, addresses big-endian.
func (s setDef) byteOrder() binaryutil.ByteOrder {
	if s.keyType.GetNFTMagic() == nftables.TypeIFName.GetNFTMagic() || s.concat() {
		return binaryutil.NativeEndian
	}
	return binaryutil.BigEndian
}

// kernelElems is e as the kernel stores it: a key, and for a bounded range of an interval
// set an "interval end" element.
func (e elemDef) kernelElems() []nftables.SetElement {
	els := []nftables.SetElement{{Key: e.key, Comment: e.comment}}
	if e.keyEnd != nil {
		els = append(els, nftables.SetElement{Key: e.keyEnd, IntervalEnd: true})
	}
	return els
}

// size bounds the bytes of netlink attributes of e's kernel elements.
func (e elemDef) size() int {
	return 2*(24+len(e.key)) + 8 + len(e.comment)
}

// chunks splits the set's elements into messages that fit one netlink attribute; the two
// kernel elements of a range stay in one message.
func (s setDef) chunks() [][]nftables.SetElement {
	var (
		out   [][]nftables.SetElement
		cur   []nftables.SetElement
		bytes int
	)
	for _, e := range s.elems {
		els := e.kernelElems()
		if len(cur) > 0 && (len(cur)+len(els) > maxElemsPerMsg || bytes+e.size() > maxElemBytesPerMsg) {
			out = append(out, cur)
			cur, bytes = nil, 0
		}
		cur = append(cur, els...)
		bytes += e.size()
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// bindSets copies exprs, giving every lookup the batch ID of the set it names.
func bindSets(exprs []expr.Any, sets map[string]*nftables.Set) ([]expr.Any, error) {
	out := slices.Clone(exprs)
	for i, e := range out {
		l, ok := e.(*expr.Lookup)
		if !ok {
			continue
		}
		set, ok := sets[l.SetName]
		if !ok {
			return nil, fmt.Errorf("rule looks up unknown set %q", l.SetName)
		}
		bound := *l
		bound.SetID = set.ID
		out[i] = &bound
	}
	return out, nil
}
