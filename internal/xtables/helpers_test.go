package xtables

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
)

var update = flag.Bool("update", false, "rewrite testdata: the kernel's table blobs and ipset dump, recorded by the privileged test")

// dumpTables prints tables one line per chain, the form the tests compare.
func dumpTables(tables []Table) string {
	var b strings.Builder
	for _, t := range tables {
		fmt.Fprintf(&b, "%s %s\n", t.Family, t.Name)
		for _, c := range t.Chains {
			fmt.Fprintf(&b, "  %s", c.Name)
			if c.Hook != "" {
				fmt.Fprintf(&b, " hook=%s policy=%s", c.Hook, c.Policy)
			}
			fmt.Fprintf(&b, " rules=%d drops=%d", c.Rules, c.Drops)
			for _, j := range c.Jumps {
				fmt.Fprintf(&b, " jump=%s@%d", j.Target, j.Rule)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// dumpSets prints sets one line each.
func dumpSets(sets []Set) string {
	var b strings.Builder
	for _, s := range sets {
		fmt.Fprintf(&b, "%s type=%s family=%q entries=%d references=%d\n", s.Name, s.Type, s.Family, s.Entries, s.References)
	}
	return b.String()
}

// Recorded kernel answers in testdata: per table, its struct ipt_getinfo followed by
// its entry blob; for the ipsets, the netlink messages of the dump one after another.

func tableFile(fam, name string) string { return filepath.Join("testdata", fam+"-"+name+".xt") }

const setsFile = "testdata/ipset-list.nl"

// encodeMessages writes netlink messages as the kernel sends them: each a 16-byte
// header, then its data, padded to 4 bytes.
func encodeMessages(msgs []netlink.Message) []byte {
	var b []byte
	for _, m := range msgs {
		n := 16 + len(m.Data)
		b = binary.NativeEndian.AppendUint32(b, uint32(n))
		b = binary.NativeEndian.AppendUint16(b, uint16(m.Header.Type))
		b = binary.NativeEndian.AppendUint16(b, uint16(m.Header.Flags))
		b = binary.NativeEndian.AppendUint32(b, m.Header.Sequence)
		b = binary.NativeEndian.AppendUint32(b, m.Header.PID)
		b = append(b, m.Data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// decodeMessages reads what encodeMessages wrote.
func decodeMessages(b []byte) ([]netlink.Message, error) {
	var msgs []netlink.Message
	for len(b) > 0 {
		if len(b) < 16 {
			return nil, fmt.Errorf("%d bytes left, a header is 16", len(b))
		}
		n := int(binary.NativeEndian.Uint32(b))
		if n < 16 || n > len(b) {
			return nil, fmt.Errorf("message length %d out of bounds", n)
		}
		msgs = append(msgs, netlink.Message{
			Header: netlink.Header{
				Length:   uint32(n),
				Type:     netlink.HeaderType(binary.NativeEndian.Uint16(b[4:])),
				Flags:    netlink.HeaderFlags(binary.NativeEndian.Uint16(b[6:])),
				Sequence: binary.NativeEndian.Uint32(b[8:]),
				PID:      binary.NativeEndian.Uint32(b[12:]),
			},
			Data: b[16:n],
		})
		b = b[min((n+3)&^3, len(b)):]
	}
	return msgs, nil
}

// readRecordedTables parses every recorded table, in the order Tables returns them.
func readRecordedTables(t testing.TB) []Table {
	t.Helper()
	var tables []Table
	for _, fam := range families {
		files, err := filepath.Glob(tableFile(fam.name, "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files { // Glob sorts
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), fam.name+"-"), ".xt")
			tbl, err := parseTable(fam, name, b[:getinfoSize], b[getinfoSize:])
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			tables = append(tables, tbl)
		}
	}
	return tables
}
