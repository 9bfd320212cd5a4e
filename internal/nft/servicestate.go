package nft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nftwire"
)

// serviceChangesLocked returns the elements to delete and to add so that the services of
// remove are gone and those of add are in the kernel (a service in both is add's), and the
// affinity entries to forget afterwards. It reads the current elements of each service,
// by key, and whether the NodePorts that add's services take are free.
func (t *Table) serviceChangesLocked(add, remove []Service) (del, put rulesetDef, forget []affinityForget, err error) {
	want := map[serviceKey]Service{}
	var keys []serviceKey
	for _, s := range normServices(remove) {
		keys = append(keys, s.key())
	}
	for _, s := range normServices(add) {
		want[s.key()] = s
		keys = append(keys, s.key())
	}
	if len(keys) == 0 {
		return rulesetDef{}, rulesetDef{}, nil, nil
	}
	slices.SortFunc(keys, func(a, b serviceKey) int { return bytes.Compare(a.sortKey(), b.sortKey()) })
	keys = slices.Compact(keys)

	r, err := t.elemReaderLocked()
	if err != nil {
		return rulesetDef{}, rulesetDef{}, nil, err
	}
	defer r.close()
	have := make(map[serviceKey]*serviceElems, len(keys))
	for _, k := range keys {
		if have[k], err = r.service(k); err != nil {
			return rulesetDef{}, rulesetDef{}, nil, fmt.Errorf("read service %s: %w", k, err)
		}
	}
	p, err := planServices(keys, have, want, func(k nodePortKey) (bool, error) {
		got, err := r.get(setNodePorts, [][]byte{k.bytes()})
		return len(got) > 0, err
	})
	if err != nil {
		return rulesetDef{}, rulesetDef{}, nil, err
	}
	return p.del, p.put, p.forget, nil
}

// servicePlan is what Update does to the services: the elements it deletes, then those it
// adds, in one batch, and the affinity entries it forgets after the batch.
type servicePlan struct {
	del, put rulesetDef
	forget   []affinityForget
}

// planServices returns the changes that take the services of keys from have (their
// elements in the kernel, nil for none) to want (none: removed). A NodePort that a wanted
// service takes from no service of keys must be free: inUse says whether map nodeports has
// it; if so, planServices fails with ErrConflict.
func planServices(keys []serviceKey, have map[serviceKey]*serviceElems, want map[serviceKey]Service,
	inUse func(nodePortKey) (bool, error)) (servicePlan, error) {
	// The sets of the services, without elements: the batch needs their names and types.
	sets := serviceSets(nil)
	delSets, putSets := slices.Clone(sets), slices.Clone(sets)
	index := map[string]int{}
	for i, s := range sets {
		delSets[i].elems, putSets[i].elems = nil, nil
		index[s.name] = i
	}
	var p servicePlan
	freed := map[nodePortKey]bool{}    // NodePorts of the services of keys in the kernel
	owner := map[nodePortKey]Service{} // NodePorts of the wanted services
	for _, k := range keys {
		if o := have[k]; o != nil && o.nodePort != nil {
			freed[*o.nodePort] = true
		}
		if s, ok := want[k]; ok && s.NodePort != 0 {
			owner[s.nodePortKey()] = s
		}
	}
	for _, k := range keys {
		var cur, next map[string][]elemDef // by set name: in the kernel, wanted
		o := have[k]
		if o != nil {
			cur = o.sets()
		}
		s, ok := want[k]
		if ok {
			if s.NodePort != 0 && !freed[s.nodePortKey()] {
				used, err := inUse(s.nodePortKey())
				if err != nil {
					return servicePlan{}, fmt.Errorf("read NodePort %s: %w", s.nodePortKey(), err)
				}
				if used {
					return servicePlan{}, fmt.Errorf("%w: service %q (%s): NodePort %s is used by another service", ErrConflict, s.Name, k, s.nodePortKey())
				}
			}
			next = s.elems().sets()
		}
		for name := range cur {
			i := index[name]
			delSets[i].elems = append(delSets[i].elems, missing(cur[name], next[name])...)
		}
		for name := range next {
			i := index[name]
			putSets[i].elems = append(putSets[i].elems, missing(next[name], cur[name])...)
		}
		if o == nil {
			continue
		}
		if o.affinity {
			var keep []netip.AddrPort
			if ok && s.Affinity {
				keep = s.Backends
			}
			if lostBackend(o.backends, keep) {
				p.forget = append(p.forget, affinityForget{family: k.family(), match: k.bytes(), keep: keep})
			}
		}
		// The entries of a NodePort name the backends of the service that holds it
		// afterwards, if any (another service of keys may take it over).
		if np := o.nodePort; np != nil && o.nodePortAffinity {
			var keep []netip.AddrPort
			if s, ok := owner[*np]; ok && s.Affinity {
				keep = s.Backends
			}
			if lostBackend(o.nodeBackends, keep) {
				p.forget = append(p.forget, affinityForget{family: np.family(), nodePort: true, match: np.portBytes(), keep: keep})
			}
		}
	}
	inet := func(sets []setDef) []tableDef {
		return []tableDef{{family: nftables.TableFamilyINet, sets: sets}}
	}
	p.del, p.put = elementsOnly(inet(delSets)), elementsOnly(inet(putSets))
	return p, nil
}

// lostBackend reports whether a backend of the elements old is not in keep.
func lostBackend(old []elemDef, keep []netip.AddrPort) bool {
	kept := map[string]bool{}
	for _, b := range keep {
		kept[string(addrPortBytes(b))] = true
	}
	for _, e := range old {
		if !kept[string(e.data)] {
			return true
		}
	}
	return false
}

// affinityForget is the affinity entries of one service to delete, from the affinity map
// of family: those whose backend is not in keep, among the entries of its VIP (match is the
// service key, what the entries' keys hold after the client's address) or of its NodePort
// (match is l4proto . NodePort, what they hold after the client's and the node's address,
// whatever that address).
type affinityForget struct {
	family   ipFamily
	nodePort bool
	match    []byte
	keep     []netip.AddrPort
}

// forgetAttempts bounds the rounds of forgetAffinityLocked: an entry may expire between
// the dump and the deletion, which then fails whole.
const forgetAttempts = 3

// forgetAffinityLocked deletes the affinity entries of forget. It runs after the batch
// that changed the services' backends: from then on no new entry can name a backend that
// is gone, so what the dump shows is all there is to delete.
func (t *Table) forgetAffinityLocked(forget []affinityForget) error {
	for _, f := range []ipFamily{ip4, ip6} {
		var mine []affinityForget
		for _, fg := range forget {
			if fg.family == f {
				mine = append(mine, fg)
			}
		}
		if len(mine) == 0 {
			continue
		}
		set := serviceSet(mapAffinity + f.suffix)
		var err error
		for range forgetAttempts {
			var stale []nftwire.Elem
			if stale, err = t.staleAffinityLocked(set, f, mine); err != nil || len(stale) == 0 {
				break
			}
			var b nftwire.Batch
			for chunk := range slices.Chunk(stale, maxElemsPerMsg) {
				b.DelElems(nftables.TableFamilyINet, TableName, set.name, chunk)
			}
			if err = t.sendLocked(&b); !errors.Is(err, unix.ENOENT) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("forget affinity of removed backends: %w", err)
		}
	}
	return nil
}

// serviceSet is the service set or map with that name, without elements.
func serviceSet(name string) setDef {
	for _, s := range serviceSets(nil) {
		if s.name == name {
			return s
		}
	}
	panic("nft: no service set " + name)
}

// staleAffinityLocked dumps affinity map set and returns the keys of the entries of the
// services of forget whose backend is not kept.
func (t *Table) staleAffinityLocked(set setDef, f ipFamily, forget []affinityForget) ([]nftwire.Elem, error) {
	c, err := t.connLocked(minSockBuf)
	if err != nil {
		return nil, err
	}
	els, err := c.GetSetElements(&nftables.Set{Table: podnetTable(nftables.TableFamilyINet), Name: set.name,
		KeyType: set.keyType, DataType: set.dataType, IsMap: true})
	if err != nil {
		return nil, fmt.Errorf("list elements of set %s: %w", set.name, err)
	}
	a := int(f.addrLen)
	// Backends kept, by where in an entry's key a forget's match starts (after the client's
	// address for a VIP's entries, after the node's address too for a NodePort's), then by
	// the match.
	keep := map[int]map[string]map[string]bool{a: {}, 2 * a: {}}
	for _, fg := range forget {
		off := a
		if fg.nodePort {
			off = 2 * a
		}
		kept := map[string]bool{}
		for _, b := range fg.keep {
			kept[string(addrPortBytes(b))] = true
		}
		keep[off][string(fg.match)] = kept
	}
	var stale []nftwire.Elem
	for _, e := range els {
		for off, byMatch := range keep {
			if len(e.Key) <= off {
				continue
			}
			if kept, ok := byMatch[string(e.Key[off:])]; ok && !kept[string(e.Val)] {
				stale = append(stale, nftwire.Elem{Key: e.Key})
				break
			}
		}
	}
	return stale, nil
}

// sortKey orders service keys: IPv4 first, then by VIP, protocol and port.
func (k serviceKey) sortKey() []byte {
	return slices.Concat([]byte{byte(k.vip.BitLen())}, k.bytes())
}

// missing returns the elements of a that are not in b with the same key, data, verdict
// and comment.
func missing(a, b []elemDef) []elemDef {
	type content struct{ data, jump, comment string }
	in := make(map[string]content, len(b))
	for _, e := range b {
		in[string(e.key)] = content{string(e.data), e.jump, e.comment}
	}
	var out []elemDef
	for _, e := range a {
		if c, ok := in[string(e.key)]; !ok || c != (content{string(e.data), e.jump, e.comment}) {
			out = append(out, e)
		}
	}
	return out
}

// elemReader reads elements of podnet's sets by key, through one netlink socket in the
// table's namespace. (google/nftables only dumps whole sets; the kernel also answers a
// request for given keys, NFT_MSG_GETSETELEM without NLM_F_DUMP, with one reply per
// element, at a cost that does not depend on the size of the set.)
type elemReader struct {
	c *netlink.Conn
}

// getChunk is the number of keys asked for in one request, so that the replies (the
// kernel allocates a page-sized message for each) fit the socket's receive buffer,
// minSockBuf.
const getChunk = 64

func (t *Table) elemReaderLocked() (*elemReader, error) {
	if t.fd < 0 {
		return nil, ErrClosed
	}
	c, err := nftwire.Dial(t.fd)
	if err != nil {
		return nil, fmt.Errorf("connect to nftables: %w", err)
	}
	if err := nftwire.SockBuffers(minSockBuf)(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect to nftables: %w", err)
	}
	return &elemReader{c: c}, nil
}

func (r *elemReader) close() { r.c.Close() }

// service returns the elements of the service with key k in the kernel, or nil when it
// has none, in two round trips. It fails with ErrNoTable when the services sets are
// missing or what they hold for k does not add up.
func (r *elemReader) service(k serviceKey) (*serviceElems, error) {
	f := k.family()
	sfx := f.suffix
	key := [][]byte{k.bytes()}
	qs := []elemQuery{{setServices + sfx, key}, {setAffinityServices + sfx, key}, {mapServiceNodePorts + sfx, key}}
	for b := range slotCodeBits {
		qs = append(qs, elemQuery{slotBitSet(b, f), key})
	}
	// The kernel answers ENOENT for a key a set lacks and for a set the table lacks: the
	// same round trip asks whether set services4/6 exists. (The sets come and go together:
	// only Sync creates and deletes them. A set deleted behind podnet's back is a commit
	// podnet did not make, which the agent's reconcile compares; a batch that touches it
	// fails with ErrNoTable.)
	got, exists, err := r.getEach(qs, setServices+sfx)
	switch {
	case err != nil:
		return nil, err
	case !exists:
		return nil, fmt.Errorf("%w: set %s", ErrNoTable, setServices+sfx)
	case len(got[0]) == 0:
		return nil, nil
	}
	e := serviceElems{key: k, member: got[0][0], affinity: len(got[1]) > 0}
	e.member.text = k.text()
	if e.slots, err = slotsOf(got[3:], slotBitSet(0, f)); err != nil {
		return nil, err
	}
	n := e.slots

	// The backends, and the NodePort's elements with its backends (as many as the VIP's).
	qs = backendQueries(mapBackends+sfx, n, func(i int) []byte { return backendKey(k, i) })
	vipQueries := len(qs)
	var np nodePortKey
	if rec := got[2]; len(rec) > 0 {
		if len(rec[0].data) != 2 {
			return nil, fmt.Errorf("%w: element of %s with %d bytes of data", ErrNoTable, mapServiceNodePorts+sfx, len(rec[0].data))
		}
		np = nodePortKey{nfproto: f.nfproto, proto: k.proto, port: binary.BigEndian.Uint16(rec[0].data)}
		npKey := [][]byte{np.bytes()}
		qs = append(qs, elemQuery{setNodePorts, npKey}, elemQuery{setAffinityNodePorts, npKey})
		for b := range slotCodeBits {
			qs = append(qs, elemQuery{nodePortSlotBitSet(b), npKey})
		}
		qs = append(qs, backendQueries(mapNodePortBackends+sfx, n, func(i int) []byte { return nodeBackendKey(np, i) })...)
	}
	if got, _, err = r.getEach(qs, ""); err != nil {
		return nil, err
	}
	backends, err := backendsOf(got[:vipQueries], n, mapBackends+sfx, f, func(i int, b netip.AddrPort) elemDef { return backendElem(k, i, b) })
	if err != nil {
		return nil, err
	}
	e.backends = backends
	if len(got) == vipQueries {
		return &e, nil
	}
	got = got[vipQueries:]
	if len(got[0]) == 0 {
		return nil, fmt.Errorf("%w: NodePort %s of service %s not in %s", ErrNoTable, np, k, setNodePorts)
	}
	switch npSlots, err := slotsOf(got[2:2+slotCodeBits], nodePortSlotBitSet(0)); {
	case err != nil:
		return nil, err
	case npSlots != n:
		return nil, fmt.Errorf("%w: NodePort %s of service %s has %d slots, the service %d", ErrNoTable, np, k, npSlots, n)
	}
	e.nodePort, e.nodePortAffinity = &np, len(got[1]) > 0
	e.nodePortMember = nodePortMember(np, "")
	e.nodePortMember.comment = got[0][0].comment
	e.nodeBackends, err = backendsOf(got[2+slotCodeBits:], n, mapNodePortBackends+sfx, f,
		func(i int, b netip.AddrPort) elemDef { return nodeBackendElem(np, i, b) })
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// slotsOf is the slot count whose code has the bits of the sets that answered with an
// element (bits[b] the answer of the set of bit b, the first named set0). It fails with
// ErrNoTable for a code no slot count has.
func slotsOf(bits [][]elemDef, set0 string) (uint32, error) {
	var code uint8
	for b, got := range bits {
		if len(got) > 0 {
			code |= 1 << b
		}
	}
	n, ok := codeSlots(code)
	if !ok {
		return 0, fmt.Errorf("%w: slot code %d in sets %s and the next ones", ErrNoTable, code, set0)
	}
	return n, nil
}

// backendQueries asks map set for the backends of indexes 0 to n-1, whose keys key gives,
// getChunk keys a query.
func backendQueries(set string, n uint32, key func(i int) []byte) []elemQuery {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = key(i)
	}
	var qs []elemQuery
	for chunk := range slices.Chunk(keys, getChunk) {
		qs = append(qs, elemQuery{set, chunk})
	}
	return qs
}

// backendsOf turns the answers to backendQueries into the backends' elements (elem of
// index and backend). The kernel answers a query up to the first key it lacks: the
// backends must be those of indexes 0 to N-1 with n slots for N, else it fails with
// ErrNoTable.
func backendsOf(answers [][]elemDef, n uint32, set string, f ipFamily, elem func(int, netip.AddrPort) elemDef) ([]elemDef, error) {
	var out []elemDef
	short := false
	a := int(f.addrLen)
	for _, got := range answers {
		if short && len(got) > 0 {
			return nil, fmt.Errorf("%w: backends of one service missing in the middle of %s", ErrNoTable, set)
		}
		for _, b := range got {
			if len(b.data) != a+4 {
				return nil, fmt.Errorf("%w: element of %s with %d bytes of data", ErrNoTable, set, len(b.data))
			}
			addr, _ := netip.AddrFromSlice(b.data[:a])
			out = append(out, elem(len(out), netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b.data[a:]))))
		}
		short = short || len(got) < getChunk
	}
	if slots(len(out)) != n {
		return nil, fmt.Errorf("%w: %d slots but %d backends in %s", ErrNoTable, n, len(out), set)
	}
	return out, nil
}

// keysRequest is the body of a GETSETELEM request for the elements of set (in table inet
// podnet) with the given keys.
func keysRequest(set string, keys [][]byte) *netlink.AttributeEncoder {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(list *netlink.AttributeEncoder) error {
		for _, k := range keys {
			list.Nested(unix.NFTA_LIST_ELEM, func(el *netlink.AttributeEncoder) error {
				el.Nested(unix.NFTA_SET_ELEM_KEY, func(v *netlink.AttributeEncoder) error {
					v.Bytes(unix.NFTA_DATA_VALUE, k)
					return nil
				})
				return nil
			})
		}
		return nil
	})
	return ae
}

// get returns the elements of set in table inet podnet with the given keys, in order, up
// to the first key that is not in the set. A missing set or table has no element.
func (r *elemReader) get(set string, keys [][]byte) ([]elemDef, error) {
	var out []elemDef
	for chunk := range slices.Chunk(keys, getChunk) {
		got, _, err := r.getEach([]elemQuery{{set, chunk}}, "")
		if err != nil {
			return nil, err
		}
		out = append(out, got[0]...)
		if len(got[0]) < len(chunk) {
			break // the kernel stops at the first key it does not have
		}
	}
	return out, nil
}

// elemQuery asks for the elements of keys (at most getChunk) of set.
type elemQuery struct {
	set  string
	keys [][]byte
}

// getEach returns the elements of set each query asks for, as get does, and whether
// table inet podnet has set exists (when not ""), in one round trip.
func (r *elemReader) getEach(qs []elemQuery, exists string) (elems [][]elemDef, found bool, err error) {
	reqs := make([]nlRequest, len(qs), len(qs)+1)
	for i, q := range qs {
		reqs[i] = nlRequest{unix.NFT_MSG_GETSETELEM, keysRequest(q.set, q.keys)}
	}
	if exists != "" {
		reqs = append(reqs, nlRequest{unix.NFT_MSG_GETSET, setRequest(exists)})
	}
	res, err := r.requests(reqs)
	if err != nil {
		return nil, false, fmt.Errorf("get elements of sets: %w", err)
	}
	elems = make([][]elemDef, len(qs))
	for i, q := range qs {
		for _, m := range res[i].replies {
			els, err := parseElems(m)
			if err != nil {
				return nil, false, fmt.Errorf("get elements of set %s: %w", q.set, err)
			}
			elems[i] = append(elems[i], els...)
		}
	}
	return elems, exists != "" && res[len(qs)].found, nil
}

// setExists reports whether table inet podnet has the set.
func (r *elemReader) setExists(set string) (bool, error) {
	_, found, err := r.request(unix.NFT_MSG_GETSET, setRequest(set))
	if err != nil {
		return false, fmt.Errorf("get set %s: %w", set, err)
	}
	return found, nil
}

// setRequest asks for set of table inet podnet (NFT_MSG_GETSET).
func setRequest(set string) *netlink.AttributeEncoder {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_TABLE, TableName)
	ae.String(unix.NFTA_SET_NAME, set)
	return ae
}

// request sends one nf_tables request about table inet podnet and returns the replies
// that come before the acknowledgement. found is false when the kernel answered ENOENT
// (after the replies for what it found).
func (r *elemReader) request(msgType int, ae *netlink.AttributeEncoder) (replies []netlink.Message, found bool, err error) {
	res, err := r.requests([]nlRequest{{msgType, ae}})
	if err != nil {
		return nil, false, err
	}
	return res[0].replies, res[0].found, nil
}

// nlRequest is one nf_tables request: its message type and attributes.
type nlRequest struct {
	msgType int
	ae      *netlink.AttributeEncoder
}

// answer is what the kernel answered one request: its replies, and found false when it
// ended with ENOENT.
type answer struct {
	replies []netlink.Message
	found   bool
}

// requests sends the requests in one message and returns the kernel's answer to each.
// The kernel handles them in order and answers each with its replies, then an
// acknowledgement or an error, each a datagram of its own: one round trip however many
// there are (each round trip costs tens of microseconds).
func (r *elemReader) requests(reqs []nlRequest) ([]answer, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	msgs := make([]netlink.Message, len(reqs))
	for i, req := range reqs {
		attrs, err := req.ae.Encode()
		if err != nil {
			return nil, err
		}
		msgs[i] = netlink.Message{
			Header: netlink.Header{
				Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | req.msgType),
				Flags: netlink.Request | netlink.Acknowledge,
			},
			Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
		}
	}
	if _, err := r.c.SendMessages(msgs); err != nil {
		return nil, err
	}
	out := make([]answer, 0, len(reqs))
	var cur answer
	for len(out) < len(reqs) {
		got, err := r.c.Receive()
		switch {
		case errors.Is(err, unix.ENOENT):
			out, cur = append(out, answer{replies: cur.replies}), answer{}
			continue
		case err != nil:
			return nil, err
		}
		for _, m := range got {
			if m.Header.Type == netlink.Error {
				cur.found = true
				out, cur = append(out, cur), answer{}
				continue
			}
			cur.replies = append(cur.replies, m)
		}
	}
	return out, nil
}

// parseElems returns the elements (key, data or verdict chain, comment) of a
// NFT_MSG_NEWSETELEM message.
func parseElems(m netlink.Message) ([]elemDef, error) {
	els, err := nftwire.ParseElems(m)
	if err != nil {
		return nil, err
	}
	out := make([]elemDef, len(els))
	for i, e := range els {
		out[i] = elemDef{key: e.Key, data: e.Data, comment: e.Comment}
		if e.Verdict != nil {
			out[i].jump = e.Verdict.Chain
		}
	}
	return out, nil
}
