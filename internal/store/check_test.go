package store_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/storetest"
)

// sampleNetworks is how many networks newStoreFile writes: enough for several pages.
const sampleNetworks = 300

// newStoreFile writes a store with sampleNetworks networks through OpenBolt, closes it
// and returns its bytes. Both meta pages describe all the networks: a last empty
// transaction follows the one that wrote them.
func newStoreFile(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "podnet.db")
	b, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx store.Tx) error {
		for i := range sampleNetworks {
			if err := tx.PutNetwork(storetest.SampleNetwork(fmt.Sprintf("net-%03d", i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(func(store.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Offsets in a bbolt file: the meta starts after the 16-byte page header.
const (
	metaOff         = 16
	metaPageSizeOff = metaOff + 8
	metaPgidOff     = metaOff + 40
	metaChecksumOff = metaOff + 56
)

func pageSizeOf(data []byte) int {
	return int(binary.LittleEndian.Uint32(data[metaPageSizeOff:]))
}

// usedSize is the size the header of page 0 says the file has (pgid pages).
func usedSize(data []byte) int {
	return int(binary.LittleEndian.Uint64(data[metaPgidOff:])) * pageSizeOf(data)
}

// openChecked opens the store at path and turns a panic or a memory fault inside
// OpenBolt or a read into a test failure instead of a dead test binary.
func openChecked(t *testing.T, path string) (networks int, err error) {
	t.Helper()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("open %s panicked: %v", path, r)
		}
	}()
	b, err := store.OpenBolt(path)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := b.Close(); cerr != nil {
			t.Errorf("close: %v", cerr)
		}
	}()
	err = b.View(func(tx store.Tx) error {
		ns, err := tx.Networks()
		networks = len(ns)
		return err
	})
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return networks, nil
}

func TestBoltDamagedFile(t *testing.T) {
	healthy := newStoreFile(t)
	ps := pageSizeOf(healthy)
	if len(healthy)/2 >= usedSize(healthy) {
		t.Fatalf("file of %d bytes uses only %d: halving it cuts no page; write more", len(healthy), usedSize(healthy))
	}
	zeroMagic := func(d []byte, page int) { clear(d[page*ps+metaOff:][:4]) }
	badChecksum := func(d []byte, page int) { d[page*ps+metaChecksumOff] ^= 0xff }

	for _, c := range []struct {
		name   string
		damage func([]byte) []byte
		want   []string // substrings of the error; none: opens with all the networks
	}{
		{"healthy", func(d []byte) []byte { return d }, nil},
		{"truncated to half", func(d []byte) []byte { return d[:len(d)/2] },
			[]string{fmt.Sprintf("file is %d bytes but its header says", len(healthy)/2), "truncated"}},
		{"truncated to two pages", func(d []byte) []byte { return d[:2*ps] }, []string{"truncated"}},
		{"truncated to 100 bytes", func(d []byte) []byte { return d[:100] }, []string{"file is 100 bytes", "truncated"}},
		{"truncated to 50 bytes", func(d []byte) []byte { return d[:50] }, []string{"shorter than a store header", "truncated"}},
		{"zeroed magic", func(d []byte) []byte { zeroMagic(d, 0); zeroMagic(d, 1); return d }, []string{"not a podnet/bbolt store (bad magic"}},
		{"zeroed magic of meta 0", func(d []byte) []byte { zeroMagic(d, 0); return d }, nil},
		{"not a store", func([]byte) []byte { return []byte(strings.Repeat("hello, world\n", 1000)) }, []string{"bad magic"}},
		{"bad checksum of meta 0", func(d []byte) []byte { badChecksum(d, 0); return d }, nil},
		{"bad checksum of meta 1", func(d []byte) []byte { badChecksum(d, 1); return d }, nil},
		{"bad checksum of both metas", func(d []byte) []byte { badChecksum(d, 0); badChecksum(d, 1); return d },
			[]string{"both meta pages invalid (checksum)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "podnet.db")
			if err := os.WriteFile(path, c.damage(append([]byte(nil), healthy...)), 0o600); err != nil {
				t.Fatal(err)
			}
			n, err := openChecked(t, path)
			if c.want == nil {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if n != sampleNetworks {
					t.Errorf("read back %d networks; want %d", n, sampleNetworks)
				}
				return
			}
			if err == nil {
				t.Fatalf("open: no error; want one saying %q", c.want)
			}
			var de *store.DamagedError
			if !errors.As(err, &de) || de.Path != path {
				t.Errorf("error %q is not a *store.DamagedError for %s", err, path)
			}
			msg := err.Error()
			for _, w := range append([]string{"store " + path + ": "}, c.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q is more than one line", msg)
			}
		})
	}
}

// TestBoltTruncatedNeverCrashes truncates a store at many lengths and opens each in
// this process: the open either fails or gives back all the data, it never faults.
func TestBoltTruncatedNeverCrashes(t *testing.T) {
	healthy := newStoreFile(t)
	ps := pageSizeOf(healthy)
	used := usedSize(healthy)
	var sizes []int
	for n := 0; n < len(healthy); n += ps / 2 {
		sizes = append(sizes, n, n+1, n+100)
	}
	sizes = append(sizes, used-1, used, len(healthy)-1)
	for _, n := range sizes {
		if n < 0 || n > len(healthy) {
			continue
		}
		path := filepath.Join(t.TempDir(), "podnet.db")
		if err := os.WriteFile(path, healthy[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := openChecked(t, path)
		switch {
		case n == 0:
			// An empty file is a new store.
			if err != nil || got != 0 {
				t.Errorf("empty file: %d networks, %v; want a new empty store", got, err)
			}
		case n < used:
			var de *store.DamagedError
			if !errors.As(err, &de) {
				t.Errorf("truncated to %d of %d used bytes: %d networks, error %v; want a *store.DamagedError", n, used, got, err)
			}
		default:
			// Only the unused tail bbolt grew the file by is gone.
			if err != nil || got != sampleNetworks {
				t.Errorf("truncated to %d of %d used bytes: %d networks, %v; want all %d", n, used, got, err, sampleNetworks)
			}
		}
	}
}
