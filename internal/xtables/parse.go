package xtables

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// entryLayout is where the fields of struct ipt_entry (ip6t_entry) sit, on 64-bit
// Linux. Both start with the address match (struct ipt_ip, ip6t_ip6) and end in u64
// counters, so both are 8-byte aligned.
type entryLayout struct {
	size         int // sizeof(struct ipt_entry): where the matches begin
	targetOffset int // offset of target_offset (u16)
	nextOffset   int // offset of next_offset (u16)
}

var (
	// struct ipt_entry: ipt_ip (84: addresses, masks, interface names, proto, flags,
	// invflags), nfcache, target_offset, next_offset, comefrom, counters.
	ipLayout = entryLayout{size: 112, targetOffset: 88, nextOffset: 90}
	// struct ip6t_entry: ip6t_ip6 (136, with tos before flags and 3 bytes of padding),
	// nfcache, target_offset, next_offset, comefrom, 4 bytes of padding, counters.
	ip6Layout = entryLayout{size: 168, targetOffset: 140, nextOffset: 142}
)

// struct xt_entry_target: target_size (u16), name[29], revision (u8), then the target's
// data: a verdict (int) for the standard target (name ""), a chain name for ERROR.
const (
	targetHeader  = 32
	targetNameEnd = 31 // name is bytes 2..30
	errorNameLen  = 30 // XT_FUNCTION_MAXNAMELEN
	errorTarget   = "ERROR"
)

// Standard verdicts: a negative verdict v is the netfilter verdict -v-1; a verdict
// of zero or more is the offset of the entry to jump to.
const (
	verdictDrop   = -1 // NF_DROP
	verdictAccept = -2 // NF_ACCEPT
	verdictQueue  = -4 // NF_QUEUE
	verdictReturn = -5 // XT_RETURN (NF_REPEAT)
)

// hooks are the netfilter hooks in number order (NF_INET_PRE_ROUTING = 0 ...), with the
// names iptables gives their built-in chains.
var hooks = [5]struct{ chain, hook string }{
	{"PREROUTING", "prerouting"},
	{"INPUT", "input"},
	{"FORWARD", "forward"},
	{"OUTPUT", "output"},
	{"POSTROUTING", "postrouting"},
}

// entry is one struct ipt_entry of the blob, reduced to what parseTable needs.
type entry struct {
	off, next int    // offset in the blob, size
	matches   bool   // has matches: not unconditional
	target    string // target name; "" is the standard target
	verdict   int32  // the standard target's verdict
	errorName string // the ERROR target's data: a user chain's name, or "ERROR" at the end
}

func (e entry) standard() bool { return e.target == "" }

// parseTable turns the table's struct ipt_getinfo and entry blob, as the kernel returns
// them, into a Table. It checks the blob against info (entry count, hook offsets) and
// every offset against the blob, so that a layout error shows as an error, not as a
// wrong table.
func parseTable(fam family, name string, info, blob []byte) (Table, error) {
	t := Table{Family: fam.name, Name: name}
	fail := func(format string, args ...any) (Table, error) {
		return Table{}, fmt.Errorf("parse %s table %s: %s", fam.name, name, fmt.Sprintf(format, args...))
	}
	if len(info) != getinfoSize {
		return fail("getinfo is %d bytes, want %d", len(info), getinfoSize)
	}
	u32 := func(off int) uint32 { return binary.NativeEndian.Uint32(info[off : off+4]) }
	validHooks := u32(32)
	numEntries := u32(76)
	if size := u32(80); int(size) != len(blob) {
		return fail("blob is %d bytes, getinfo says %d", len(blob), size)
	}

	entries, err := parseEntries(fam.layout, blob)
	if err != nil {
		return fail("%v", err)
	}
	if len(entries) != int(numEntries) {
		return fail("%d entries, getinfo says %d", len(entries), numEntries)
	}
	if len(entries) == 0 {
		return fail("no entries")
	}
	if last := entries[len(entries)-1]; last.target != errorTarget || last.errorName != errorTarget {
		return fail("last entry is not the closing ERROR entry")
	}
	entries = entries[:len(entries)-1]

	// User chains, by the offset of their first entry, where jumps land.
	userAt := map[int]string{}
	entryAt := map[int]bool{}
	for _, e := range entries {
		entryAt[e.off] = true
		if e.target == errorTarget {
			userAt[e.off+e.next] = e.errorName
		}
	}
	// Where each built-in chain starts; its policy sits at underflow[h].
	hookAt := map[int]int{} // entry offset -> hook starting there
	for h := range hooks {
		if validHooks&(1<<h) == 0 {
			continue
		}
		start, policy := int(u32(36+4*h)), int(u32(56+4*h))
		if !entryAt[start] {
			return fail("chain %s starts at offset %d, where no entry starts", hooks[h].chain, start)
		}
		if !entryAt[policy] {
			return fail("policy of chain %s at offset %d, where no entry starts", hooks[h].chain, policy)
		}
		if prev, ok := hookAt[start]; ok {
			return fail("hooks %s and %s start at the same offset %d", hooks[prev].hook, hooks[h].hook, start)
		}
		hookAt[start] = h
	}

	var builtin [len(hooks)]*Chain
	var user []*Chain
	var cur *Chain
	curHook := -1 // the hook of cur, -1 for a user chain
	closed := true
	for i, e := range entries {
		if h, ok := hookAt[e.off]; ok {
			if !closed && curHook >= 0 {
				return fail("chain %s has no policy before %s starts", cur.Name, hooks[h].chain)
			}
			cur = &Chain{Name: hooks[h].chain, Hook: hooks[h].hook}
			curHook, closed, builtin[h] = h, false, cur
		}
		if e.target == errorTarget {
			if !closed && curHook >= 0 {
				return fail("chain %s has no policy before user chain %s starts", cur.Name, e.errorName)
			}
			cur = &Chain{Name: e.errorName}
			curHook, closed = -1, false
			user = append(user, cur)
			continue // the chain's head, not a rule
		}
		if cur == nil || closed {
			return fail("entry at offset %d is in no chain", e.off)
		}
		if curHook >= 0 && e.off == int(u32(56+4*curHook)) { // underflow[curHook]
			if !e.standard() || e.verdict >= 0 {
				return fail("policy of chain %s is not a verdict", cur.Name)
			}
			cur.Policy = verdictName(e.verdict)
			closed = true
			continue
		}
		if curHook < 0 && closesUserChain(entries, i) {
			closed = true // the return libiptc ends every user chain with
			continue
		}
		cur.Rules++
		switch {
		case e.target == "REJECT", e.standard() && e.verdict == verdictDrop:
			cur.Drops++
		case e.standard() && e.verdict >= 0 && int(e.verdict) != e.off+e.next:
			// (A verdict naming the next entry is a rule without a target.)
			target, ok := userAt[int(e.verdict)]
			if !ok {
				return fail("rule %d of chain %s jumps to offset %d, where no user chain starts", cur.Rules, cur.Name, e.verdict)
			}
			cur.Jumps = append(cur.Jumps, Jump{Target: target, Rule: cur.Rules})
		}
	}
	if !closed && curHook >= 0 {
		return fail("chain %s has no policy", cur.Name)
	}
	for _, c := range builtin {
		if c != nil {
			t.Chains = append(t.Chains, *c)
		}
	}
	for _, c := range user {
		t.Chains = append(t.Chains, *c)
	}
	return t, nil
}

// closesUserChain reports whether entries[i] is the unconditional return that ends a
// user chain: the last entry before the next chain (or the table's end).
func closesUserChain(entries []entry, i int) bool {
	e := entries[i]
	if e.matches || !e.standard() || e.verdict != verdictReturn {
		return false
	}
	return i+1 == len(entries) || entries[i+1].target == errorTarget
}

// parseEntries splits the blob into its entries, checking each one's offsets.
func parseEntries(l entryLayout, blob []byte) ([]entry, error) {
	var entries []entry
	for off := 0; off < len(blob); {
		if len(blob)-off < l.size {
			return nil, fmt.Errorf("entry at offset %d: %d bytes left, an entry is %d", off, len(blob)-off, l.size)
		}
		b := blob[off:]
		targetOff := int(binary.NativeEndian.Uint16(b[l.targetOffset:]))
		next := int(binary.NativeEndian.Uint16(b[l.nextOffset:]))
		if next > len(b) || targetOff < l.size || targetOff+targetHeader > next {
			return nil, fmt.Errorf("entry at offset %d: target_offset %d, next_offset %d out of bounds", off, targetOff, next)
		}
		tb := b[targetOff:next]
		targetSize := int(binary.NativeEndian.Uint16(tb))
		if targetSize < targetHeader || targetSize > len(tb) {
			return nil, fmt.Errorf("entry at offset %d: target size %d out of bounds", off, targetSize)
		}
		tb = tb[:targetSize]
		e := entry{
			off:     off,
			next:    next,
			matches: targetOff > l.size,
			target:  cString(tb[2:targetNameEnd]),
		}
		switch e.target {
		case "":
			if len(tb) < targetHeader+4 {
				return nil, fmt.Errorf("entry at offset %d: standard target of %d bytes", off, len(tb))
			}
			e.verdict = int32(binary.NativeEndian.Uint32(tb[targetHeader:]))
		case errorTarget:
			if len(tb) < targetHeader+errorNameLen {
				return nil, fmt.Errorf("entry at offset %d: error target of %d bytes", off, len(tb))
			}
			e.errorName = cString(tb[targetHeader : targetHeader+errorNameLen])
		}
		entries = append(entries, e)
		off += next
	}
	return entries, nil
}

// verdictName names a negative standard verdict in iptables' words, lower case.
func verdictName(v int32) string {
	switch v {
	case verdictDrop:
		return "drop"
	case verdictAccept:
		return "accept"
	case verdictQueue:
		return "queue"
	case verdictReturn:
		return "return"
	}
	return fmt.Sprintf("verdict %d", -v-1)
}

// cString is b up to its first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
