package xtables

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
)

// TestParseRecordedTables parses the kernel's answers recorded from the privileged
// test's fixture and expects what Tables returned there.
func TestParseRecordedTables(t *testing.T) {
	if got := dumpTables(readRecordedTables(t)); got != wantTables {
		t.Errorf("parsed testdata:\n%s\nwant:\n%s", got, wantTables)
	}
}

// TestParseRecordedSets parses the recorded ipset dump, in which one set's members span
// several messages.
func TestParseRecordedSets(t *testing.T) {
	msgs := recordedSetMessages(t)
	if n := messagesNaming(msgs, "cali40all-hosts"); n < 2 {
		t.Fatalf("testdata has cali40all-hosts in %d message(s), want several", n)
	}
	sets, err := parseSets(msgs)
	if err != nil {
		t.Fatal(err)
	}
	if got := dumpSets(sets); got != wantSets {
		t.Errorf("parsed testdata:\n%s\nwant:\n%s", got, wantSets)
	}
}

func recordedSetMessages(t testing.TB) []netlink.Message {
	t.Helper()
	b, err := os.ReadFile(setsFile)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := decodeMessages(b)
	if err != nil {
		t.Fatalf("%s: %v", setsFile, err)
	}
	return msgs
}

// recordedTable is the recorded ip filter table: its getinfo and its blob, copies the
// caller may change.
func recordedTable(t *testing.T) (info, blob []byte) {
	t.Helper()
	b, err := os.ReadFile(tableFile("ip", "filter"))
	if err != nil {
		t.Fatal(err)
	}
	return b[:getinfoSize], b[getinfoSize:]
}

// TestParseTableErrors breaks the recorded filter table in the ways a wrong layout or a
// changed kernel would, and expects an error naming what is wrong, never a table.
func TestParseTableErrors(t *testing.T) {
	le := binary.NativeEndian
	// Offsets in the recorded blob: the first entry is INPUT's REJECT rule (with a tcp
	// match); the jump of FORWARD's third rule is found by its verdict.
	info, blob := recordedTable(t)
	entries, err := parseEntries(ipLayout, blob)
	if err != nil {
		t.Fatal(err)
	}
	var jump entry
	for _, e := range entries {
		if e.standard() && e.verdict >= 0 && int(e.verdict) != e.off+e.next {
			jump = e
			break
		}
	}
	if jump.next == 0 {
		t.Fatal("no jump in the recorded filter table")
	}
	last := entries[len(entries)-1]

	tests := []struct {
		name    string
		corrupt func(info, blob []byte) ([]byte, []byte)
		want    string
	}{
		{"short getinfo", func(i, b []byte) ([]byte, []byte) { return i[:80], b }, "getinfo is 80 bytes"},
		{"size mismatch", func(i, b []byte) ([]byte, []byte) { return i, b[:len(b)-8] }, "getinfo says"},
		{"entry count", func(i, b []byte) ([]byte, []byte) {
			le.PutUint32(i[76:], le.Uint32(i[76:])+1)
			return i, b
		}, "entries, getinfo says"},
		{"next_offset zero", func(i, b []byte) ([]byte, []byte) {
			le.PutUint16(b[ipLayout.nextOffset:], 0)
			return i, b
		}, "out of bounds"},
		{"next_offset past the end", func(i, b []byte) ([]byte, []byte) {
			le.PutUint16(b[ipLayout.nextOffset:], uint16(len(b)+8))
			return i, b
		}, "out of bounds"},
		{"target_offset inside the entry", func(i, b []byte) ([]byte, []byte) {
			le.PutUint16(b[ipLayout.targetOffset:], uint16(ipLayout.size-8))
			return i, b
		}, "out of bounds"},
		{"target size", func(i, b []byte) ([]byte, []byte) {
			to := int(le.Uint16(b[ipLayout.targetOffset:]))
			le.PutUint16(b[to:], 8)
			return i, b
		}, "target size 8"},
		{"jump nowhere", func(i, b []byte) ([]byte, []byte) {
			to := jump.off + int(le.Uint16(b[jump.off+ipLayout.targetOffset:]))
			le.PutUint32(b[to+targetHeader:], uint32(jump.off)) // the jumping rule itself
			return i, b
		}, "where no user chain starts"},
		{"no closing entry", func(i, b []byte) ([]byte, []byte) {
			to := last.off + int(le.Uint16(b[last.off+ipLayout.targetOffset:]))
			copy(b[to+2:], "NOPE\x00")
			return i, b
		}, "closing ERROR entry"},
		{"hook offset between entries", func(i, b []byte) ([]byte, []byte) {
			le.PutUint32(i[36+4*2:], le.Uint32(i[36+4*2:])+8) // FORWARD's start
			return i, b
		}, "chain FORWARD starts at offset"},
		{"policy offset between entries", func(i, b []byte) ([]byte, []byte) {
			le.PutUint32(i[56+4*3:], le.Uint32(i[56+4*3:])+8) // OUTPUT's policy
			return i, b
		}, "policy of chain OUTPUT at offset"},
		{"policy before start", func(i, b []byte) ([]byte, []byte) {
			le.PutUint32(i[56+4*1:], 0) // INPUT's policy before its rule
			le.PutUint32(i[36+4*1:], uint32(entries[1].off))
			return i, b
		}, "is in no chain"},
		{"policy not a verdict", func(i, b []byte) ([]byte, []byte) {
			le.PutUint32(i[56+4*1:], le.Uint32(i[36+4*1:])) // INPUT's policy at its REJECT rule
			return i, b
		}, "policy of chain INPUT is not a verdict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i, b := tt.corrupt(bytes.Clone(info), bytes.Clone(blob))
			tbl, err := parseTable(families[0], "filter", i, b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseTable = %+v, %v; want an error with %q", tbl, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "parse ip table filter: ") {
				t.Errorf("error %q does not name the table", err)
			}
		})
	}
}

// TestParseSetsErrors feeds parseSets dumps the kernel does not send.
func TestParseSetsErrors(t *testing.T) {
	msgs := recordedSetMessages(t)
	first, cont := -1, -1 // a header message, a continuation message
	for i, m := range msgs {
		header := false
		_ = decodeIPSet(m, func(ad *netlink.AttributeDecoder) error {
			header = header || ad.Type() == attrTypeName
			return nil
		})
		if header && first < 0 {
			first = i
		}
		if !header && cont < 0 {
			cont = i
		}
	}
	if first < 0 || cont < 0 {
		t.Fatal("testdata lacks a header or a continuation message")
	}
	otherType := msgs[first]
	otherType.Header.Type = subsysIPSet<<8 | cmdProtocol
	tests := []struct {
		name string
		msgs []netlink.Message
		want string
	}{
		{"members before header", []netlink.Message{msgs[cont]}, "before its header"},
		{"header twice", []netlink.Message{msgs[first], msgs[first]}, "listed twice"},
		{"other command", []netlink.Message{otherType}, "has type 0x601"},
		{"short", []netlink.Message{{Header: msgs[first].Header, Data: []byte{2}}}, "message of 1 bytes"},
		{"truncated attribute", []netlink.Message{{Header: msgs[first].Header, Data: msgs[first].Data[:nfgenmsgLen+3]}}, "ipset list: message 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sets, err := parseSets(tt.msgs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseSets = %+v, %v; want an error with %q", sets, err, tt.want)
			}
		})
	}
}

// TestIPSetRequest pins the bytes of the list request: nfgenmsg (AF_INET, v0, res 0)
// and IPSET_ATTR_PROTOCOL.
func TestIPSetRequest(t *testing.T) {
	m := ipsetRequest(cmdList, netlink.Request|netlink.Dump, 7)
	if m.Header.Type != 0x607 {
		t.Errorf("type %#x, want 0x607", m.Header.Type)
	}
	want := []byte{2, 0, 0, 0, 5, 0, 1, 0, 7, 0, 0, 0}
	if !bytes.Equal(m.Data, want) {
		t.Errorf("data % x, want % x", m.Data, want)
	}
}

// FuzzParseTable checks that no blob makes parseTable panic or loop; the seeds are
// the recorded tables.
func FuzzParseTable(f *testing.F) {
	files, err := filepath.Glob("testdata/*.xt")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.HasPrefix(filepath.Base(file), "ip6-"), b)
	}
	f.Fuzz(func(t *testing.T, ip6 bool, b []byte) {
		if len(b) < getinfoSize {
			return
		}
		fam := families[0]
		if ip6 {
			fam = families[1]
		}
		_, _ = parseTable(fam, "fuzz", b[:getinfoSize], b[getinfoSize:])
	})
}

// FuzzParseSets checks that no dump makes parseSets panic; the seed is the recorded
// dump.
func FuzzParseSets(f *testing.F) {
	b, err := os.ReadFile(setsFile)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := decodeMessages(b)
		if err != nil {
			return
		}
		_, _ = parseSets(msgs)
	})
}
