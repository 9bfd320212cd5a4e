package nft

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/nftwire"
)

// ErrClosed is returned by the methods of a closed Table.
var ErrClosed = errors.New("nftables table is closed")

var _ Applier = (*Table)(nil)

// Table is podnet's tables (inet podnet and bridge podnet) in one network namespace. Every kernel operation goes
// through a fresh netlink socket opened in that namespace (google/nftables bound to the
// namespace fd), so that a failed batch never leaves unread replies for the next one.
// Its methods are safe for concurrent use; they run one at a time.
type Table struct {
	// mu serializes kernel operations and guards fd.
	mu sync.Mutex
	fd int // our duplicate of the namespace fd; -1 once closed
}

// Open returns the tables of the network namespace nsFD refers to. Open duplicates nsFD:
// the caller keeps ownership of nsFD and may close it at once. Open changes nothing in
// the kernel.
func Open(nsFD int) (*Table, error) {
	fd, err := unix.FcntlInt(uintptr(nsFD), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("open tables %s: duplicate netns fd %d: %w", TableName, nsFD, err)
	}
	if !kernel.IsNetNS(fd) {
		unix.Close(fd)
		return nil, fmt.Errorf("open tables %s: fd %d is not a network namespace", TableName, nsFD)
	}
	return &Table{fd: fd}, nil
}

// Close releases the namespace fd. It leaves the kernel tables as they are. Calling it twice
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
		return fmt.Errorf("close tables %s: %w", TableName, err)
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

// Sync replaces podnet's tables with r in one netlink batch: the kernel applies all of it
// or nothing. For each table the batch creates it (a no-op if it exists), deletes it, and
// creates it again with its chains, sets, elements and rules (chains first: elements of
// verdict maps name them), so packets see either the old tables or the new ones. Calling it
// twice with the same r is harmless. It forgets the clients' affinity entries: the next
// connection of each client picks a backend again. Besides what Validate checks, it
// refuses services that share a NodePort (validateNodePorts), as Update and InSync do.
func (t *Table) Sync(r Ruleset) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("sync tables %s: %w", TableName, err)
	}
	if err := validateNodePorts(r.Services); err != nil {
		return fmt.Errorf("sync tables %s: %w", TableName, err)
	}
	def := build(r)
	var b nftwire.Batch
	id := uint32(0) // set IDs are per batch
	for _, td := range def.tables {
		b.AddTable(td.family, TableName)
		b.DelTable(td.family, TableName)
		b.AddTable(td.family, TableName)
		for _, cd := range td.chains {
			b.AddChain(td.family, TableName, cd.wire())
		}
		ids := make(map[string]uint32, len(td.sets))
		for _, s := range td.sets {
			id++
			ids[s.name] = id
			b.AddSet(td.family, TableName, s.wire(), id)
			for _, chunk := range s.chunks(s.elems) {
				b.AddElems(td.family, TableName, s.name, id, chunk)
			}
		}
		for _, cd := range td.chains {
			for _, rd := range cd.rules {
				exprs, err := bindSets(rd.exprs, ids)
				if err != nil {
					return fmt.Errorf("sync table %s: chain %s: %w", td.name(), cd.name, err)
				}
				b.AddRule(td.family, TableName, cd.name, exprs)
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.sendLocked(&b); err != nil {
		return fmt.Errorf("sync tables %s: %w", TableName, err)
	}
	return nil
}

// Errors of Update, to be tested with errors.Is.
var (
	// ErrNoTable: a table or one of its sets is missing, a service's elements do not
	// add up (changed behind podnet's back), or a policy's sets are not those of its
	// layout (a new policy, another number of rules); Sync repairs it.
	ErrNoTable = errors.New("table, set or element missing")
	// ErrConflict: an added port mapping's host side is mapped to another target, an
	// added network's subnet overlaps one in the table, an added service's NodePort is
	// another service's, or an added range of a policy overlaps one in its set (the set
	// did not hold remove's policy).
	ErrConflict = errors.New("conflicts with an element in the table (a host port mapped to another target, an overlapping subnet, or a NodePort of another service)")
)

// Update removes the elements of remove, then adds those of add (see Applier), in one
// netlink batch that holds these elements only: its cost does not depend on the number of
// elements in the tables. A removed network, endpoint or port mapping element is first added, then
// deleted, in the batch, so that removing an absent element is not an error; adding an
// element that exists is a no-op for the kernel (no NLM_F_EXCL), unless it is a map
// element with other data: the kernel refuses it with EEXIST, reported as ErrConflict. A
// missing table or set (ENOENT) is reported as ErrNoTable. Either way the batch changes
// nothing.
//
// For a service, Update first reads the service's current elements, by key (its entry in
// the services maps, then its backends by index; its NodePort from service_nodeports4/6,
// then the NodePort's elements the same way: a few requests whose cost does not depend on
// the size of the maps either), and whether a NodePort that an added service takes from
// no service of the call is free (else ErrConflict); the batch deletes the elements that
// differ from the new ones and adds the new ones that are missing. Changing a service's
// backends or NodePort changes its elements only, never a rule or a chain (see
// services.go). After the batch, when a service with affinity lost a backend (or its
// affinity or NodePort, or went), Update dumps the affinity map of its family and deletes
// the clients' entries that name a backend the service (its VIP, its NodePort) no longer
// has (a dump of up to affinitySize entries, only then).
//
// For a policy, Update checks with a few requests that the tables have the policy's sets
// (as its layout says), compares remove's policy with add's (see Delta) and the batch
// deletes the elements only remove's has and adds those only add's has. Before deleting a
// range element it asks the kernel whether it holds it (one request per 64 elements),
// so that calling Update twice is harmless here too. Update never touches conntrack: a
// connection that a policy allowed when it started lives on.
//
// Measured on kernel 6.18: adding one element takes ~0.2 ms whether the map holds 0 or
// 1,000 elements; a batch that deletes elements takes ~8-24 ms, also whatever the table
// size (whole multiples of the 4 ms scheduler tick: the kernel seems to wait for an RCU
// grace period when it commits element deletions).
func (t *Table) Update(add, remove Delta) error {
	if err := add.Validate(); err != nil {
		return fmt.Errorf("update tables %s: add: %w", TableName, err)
	}
	if err := validateNodePorts(add.Services); err != nil {
		return fmt.Errorf("update tables %s: add: %w", TableName, err)
	}
	if err := remove.Validate(); err != nil {
		return fmt.Errorf("update tables %s: remove: %w", TableName, err)
	}
	addDef, removeDef := add.build(), remove.build()
	if addDef.empty() && removeDef.empty() && len(add.Services) == 0 && len(remove.Services) == 0 &&
		len(add.Policies) == 0 && len(remove.Policies) == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	svcRemove, svcAdd, forget, err := t.serviceChangesLocked(add.Services, remove.Services)
	if err != nil {
		return fmt.Errorf("update tables %s: %w", TableName, err)
	}
	polGone, polDel, polAdd, err := t.policyChangesLocked(add.Policies, remove.Policies)
	if err != nil {
		return fmt.Errorf("update tables %s: %w", TableName, err)
	}
	if addDef.empty() && removeDef.empty() && svcRemove.empty() && svcAdd.empty() && len(forget) == 0 &&
		polGone.empty() && polDel.empty() && polAdd.empty() {
		return nil
	}
	var b nftwire.Batch
	type op int
	const (
		opAdd          op = iota
		opDelete          // elements that exist
		opAddAndDelete    // elements that may not exist
	)
	queue := func(d rulesetDef, o op) {
		for _, td := range d.tables {
			for _, s := range td.sets {
				for _, chunk := range s.chunks(s.elems) {
					if o != opDelete {
						b.AddElems(td.family, TableName, s.name, 0, chunk)
					}
					if o != opAdd {
						b.DelElems(td.family, TableName, s.name, chunk)
					}
				}
			}
		}
	}
	queue(removeDef, opAddAndDelete)
	queue(svcRemove, opDelete)
	queue(polGone, opAddAndDelete)
	queue(polDel, opDelete)
	queue(addDef, opAdd)
	queue(svcAdd, opAdd)
	queue(polAdd, opAdd)
	if err := t.sendLocked(&b); err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return fmt.Errorf("update tables %s: %w: %w", TableName, ErrNoTable, err)
		case errors.Is(err, unix.EEXIST):
			return fmt.Errorf("update tables %s: %w: %w", TableName, ErrConflict, err)
		}
		return fmt.Errorf("update tables %s: %w", TableName, err)
	}
	if err := t.forgetAffinityLocked(forget); err != nil {
		return fmt.Errorf("update tables %s: %w", TableName, err)
	}
	return nil
}

// build returns the elements of the networks, endpoints and port mappings of d, and its
// isolated addresses, in the sets and maps of the tables that hold them. Sets without
// elements are left out. (Services are compared with the kernel first:
// serviceChangesLocked; policies' elements are the differences between remove's and
// add's: policyChangesLocked.)
func (d Delta) build() rulesetDef {
	netSets := networkSets(networkRanges(d.Networks))
	routed, bridged := endpointSets(d.Endpoints)
	return elementsOnly([]tableDef{
		{family: nftables.TableFamilyINet, sets: mergeSets(slices.Concat(netSets, routed, portMaps(d.Ports), isolationSetsOf(d)))},
		{family: nftables.TableFamilyBridge, sets: bridged},
	})
}

// elementsOnly returns the tables without the sets that have no elements, and without
// the tables that have none left.
func elementsOnly(tables []tableDef) rulesetDef {
	var out rulesetDef
	for _, td := range tables {
		td.sets = slices.DeleteFunc(td.sets, func(s setDef) bool { return len(s.elems) == 0 })
		if len(td.sets) > 0 {
			out.tables = append(out.tables, td)
		}
	}
	return out
}

func (d rulesetDef) empty() bool { return len(d.tables) == 0 }

// Delete removes podnet's tables. It succeeds when they do not exist: the batch creates
// each table (a no-op if it exists) and deletes it.
func (t *Table) Delete() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b nftwire.Batch
	for _, f := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge} {
		b.AddTable(f, TableName)
		b.DelTable(f, TableName)
	}
	if err := t.sendLocked(&b); err != nil {
		return fmt.Errorf("delete tables %s: %w", TableName, err)
	}
	return nil
}

// InSync reads podnet's tables back (table flags, chains and their hooks, the expressions
// of every rule, sets and maps and their elements) and reports whether they equal r.
// It is false when a table is missing, dormant or differs in any of these. The clients'
// affinity entries, which the packet path adds, are not compared.
func (t *Table) InSync(r Ruleset) (bool, error) {
	diff, err := t.diff(r)
	return diff == "" && err == nil, err
}

// diff returns "" when the kernel tables equal r, else the first difference found.
func (t *Table) diff(r Ruleset) (string, error) {
	if err := r.Validate(); err != nil {
		return "", fmt.Errorf("read tables %s: %w", TableName, err)
	}
	if err := validateNodePorts(r.Services); err != nil {
		return "", fmt.Errorf("read tables %s: %w", TableName, err)
	}
	def := build(r)
	t.mu.Lock()
	defer t.mu.Unlock()
	c, err := t.connLocked(def.batchSize())
	if err != nil {
		return "", fmt.Errorf("read tables %s: %w", TableName, err)
	}
	nl, err := nftwire.Dial(t.fd)
	if err != nil {
		return "", fmt.Errorf("read tables %s: connect to nftables: %w", TableName, err)
	}
	defer nl.Close()
	if err := nftwire.SockBuffers(max(def.batchSize(), minSockBuf))(nl); err != nil {
		return "", fmt.Errorf("read tables %s: %w", TableName, err)
	}
	for _, td := range def.tables {
		diff, err := compare(c, nl, td)
		if err != nil {
			return "", fmt.Errorf("read table %s: %w", td.name(), err)
		}
		if diff != "" {
			return "table " + td.name() + ": " + diff, nil
		}
	}
	return "", nil
}

// name is "inet podnet" or "bridge podnet".
func (t tableDef) name() string { return familyName(t.family) + " " + TableName }

func podnetTable(f nftables.TableFamily) *nftables.Table {
	return &nftables.Table{Name: TableName, Family: f}
}

// connLocked returns a google/nftables connection bound to the namespace, whose sockets
// can hold about size bytes of batch and of replies.
func (t *Table) connLocked(size int) (*nftables.Conn, error) {
	if t.fd < 0 {
		return nil, ErrClosed
	}
	c, err := nftables.New(nftables.WithNetNSFd(t.fd), nftables.WithSockOptions(nftwire.SockBuffers(max(size, minSockBuf))))
	if err != nil {
		return nil, fmt.Errorf("connect to nftables: %w", err)
	}
	return c, nil
}

// sendLocked runs b in the table's namespace, on a socket of its own: the kernel applies
// all of b or nothing.
func (t *Table) sendLocked(b *nftwire.Batch) error {
	if err := b.Err(); err != nil || b.Len() == 0 {
		return err
	}
	if t.fd < 0 {
		return ErrClosed
	}
	return b.SendNS(t.fd, minSockBuf)
}

// batchSize estimates the bytes of the batch that writes d (and of the dump that reads it).
func (d rulesetDef) batchSize() int {
	n := 64 << 10
	for _, t := range d.tables {
		for _, s := range t.sets {
			for _, e := range s.elems {
				n += e.size()
			}
		}
		for _, c := range t.chains {
			n += 512 * len(c.rules)
		}
	}
	return 2 * n
}

// byteOrder is the key byte order nft records in the set's user data: strings (ifname),
// integers and concatenations are host-endian for nft, addresses big-endian.
func (s setDef) byteOrder() binaryutil.ByteOrder {
	switch s.keyType.GetNFTMagic() {
	case nftables.TypeIFName.GetNFTMagic(), nftables.TypeInteger.GetNFTMagic():
		return binaryutil.NativeEndian
	}
	if s.concat() {
		return binaryutil.NativeEndian
	}
	return binaryutil.BigEndian
}

// kernelElems is e as the kernel stores it in s: a key (and data, in a map); in an interval
// set with a concatenated key, the key end in the same element; in another interval set,
// an "interval end" element for a bounded range.
func (s setDef) kernelElems(e elemDef) []nftwire.Elem {
	el := nftwire.Elem{Key: e.key, Data: e.data, Comment: e.comment}
	if e.jump != "" {
		el.Verdict = &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.jump}
	}
	switch {
	case s.interval && s.concat():
		el.KeyEnd = e.keyEnd
	case s.interval && e.keyEnd != nil:
		return []nftwire.Elem{el, {Key: e.keyEnd, IntervalEnd: true}}
	}
	return []nftwire.Elem{el}
}

// size bounds the bytes of netlink attributes of e's kernel elements.
func (e elemDef) size() int {
	return 2*(24+len(e.key)) + 8 + len(e.comment) + 12 + len(e.keyEnd) + 12 + len(e.data) + 24 + len(e.jump)
}

// chunks splits elements of s into messages that fit one netlink attribute; the two kernel
// elements of a range stay in one message.
func (s setDef) chunks(elems []elemDef) [][]nftwire.Elem {
	var (
		out   [][]nftwire.Elem
		cur   []nftwire.Elem
		bytes int
	)
	for _, e := range elems {
		els := s.kernelElems(e)
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

// bindSets copies exprs, giving every lookup and dynset the batch ID of the set it names.
func bindSets(exprs []expr.Any, ids map[string]uint32) ([]expr.Any, error) {
	out := slices.Clone(exprs)
	for i, e := range out {
		switch e := e.(type) {
		case *expr.Lookup:
			bound := *e
			var ok bool
			if bound.SetID, ok = ids[e.SetName]; !ok {
				return nil, fmt.Errorf("rule uses unknown set %q", e.SetName)
			}
			out[i] = &bound
		case *expr.Dynset:
			bound := *e
			var ok bool
			if bound.SetID, ok = ids[e.SetName]; !ok {
				return nil, fmt.Errorf("rule uses unknown set %q", e.SetName)
			}
			out[i] = &bound
		}
	}
	return out, nil
}
