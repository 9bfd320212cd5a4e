package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
)

// On-disk layout of a bbolt file (go.etcd.io/bbolt v1.5.0, internal/common/page.go and
// meta.go), read here without bbolt so that a damaged file is refused before bbolt maps
// it: bbolt trusts the meta page and touches pages past the end of a truncated file,
// which kills the process with SIGBUS instead of returning an error.
//
// Every page starts with a header: id u64, flags u16, count u16, overflow u32. Pages 0
// and 1 are meta pages; the meta follows the header, little-endian:
//
//	magic u32, version u32, pageSize u32, flags u32,
//	root bucket {root pgid u64, sequence u64}, freelist pgid u64,
//	pgid u64 (high-water mark: the number of pages), txid u64,
//	checksum u64 (FNV-64a of the meta bytes before it)
const (
	pageHeaderSize = 16

	metaMagic    = 0xED0CDAED
	metaVersion  = 2
	metaChecksum = 56 // offset of the checksum in the meta
	metaSize     = 64
	headerSize   = pageHeaderSize + metaSize

	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10

	// noFreelist is the freelist page id of a file written with NoFreelistSync.
	noFreelist = ^uint64(0)

	// minPageSize is the smallest page size bbolt looks for the second meta page at.
	minPageSize = 1024
)

// DamagedError reports a store file that bbolt cannot open safely.
type DamagedError struct {
	Path    string
	Problem string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("store %s: %s; restore a backup or move it away to start empty", e.Path, e.Problem)
}

// meta is the part of a meta page the check needs.
type meta struct {
	magic    uint32
	version  uint32
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
	checksum uint64
	sum      uint64 // checksum computed over the bytes read
}

// parseMeta decodes the meta of a page whose first headerSize bytes are b.
func parseMeta(b []byte) meta {
	m := b[pageHeaderSize:headerSize]
	h := fnv.New64a()
	h.Write(m[:metaChecksum])
	le := binary.LittleEndian
	return meta{
		magic:    le.Uint32(m[0:]),
		version:  le.Uint32(m[4:]),
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pgid:     le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
		checksum: le.Uint64(m[metaChecksum:]),
		sum:      h.Sum64(),
	}
}

// valid is bbolt's Meta.Validate.
func (m meta) valid() bool {
	return m.magic == metaMagic && m.version == metaVersion && m.checksum == m.sum
}

// checkFile checks the bbolt file at path before bolt.Open maps it: a valid meta page,
// the file as long as the header says, and the root and freelist pages inside it. A
// missing or empty file passes (bbolt creates it). A damaged file gives a *DamagedError.
func checkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return nil
	}
	c := checker{f: f, path: path, size: fi.Size()}
	return c.check()
}

type checker struct {
	f    *os.File
	path string
	size int64
}

func (c *checker) damaged(format string, args ...any) error {
	return &DamagedError{Path: c.path, Problem: fmt.Sprintf(format, args...)}
}

// readMeta reads the meta of the page at off; ok is false when the file ends before it.
func (c *checker) readMeta(off int64) (m meta, ok bool, err error) {
	if off+headerSize > c.size {
		return meta{}, false, nil
	}
	var b [headerSize]byte
	if _, err := c.f.ReadAt(b[:], off); err != nil {
		if errors.Is(err, io.EOF) {
			return meta{}, false, nil
		}
		return meta{}, false, fmt.Errorf("store %s: read header: %w", c.path, err)
	}
	return parseMeta(b[:]), true, nil
}

// readPageHeader returns the flags and overflow of page id.
func (c *checker) readPageHeader(id uint64, pageSize int64) (flags uint16, overflow uint32, err error) {
	var b [pageHeaderSize]byte
	if _, err := c.f.ReadAt(b[:], int64(id)*pageSize); err != nil {
		return 0, 0, fmt.Errorf("store %s: read page %d: %w", c.path, id, err)
	}
	return binary.LittleEndian.Uint16(b[8:]), binary.LittleEndian.Uint32(b[12:]), nil
}

func (c *checker) check() error {
	if c.size < headerSize {
		return c.damaged("file is %d bytes, shorter than a store header (%d bytes): truncated or damaged", c.size, headerSize)
	}
	pageSize, err := c.pageSize()
	if err != nil {
		return err
	}

	// The metas bbolt will use: page 0 and page 1 at the page size found above; of
	// the valid ones, the one with the highest txid (page 0 on a tie).
	m0, _, err := c.readMeta(0)
	if err != nil {
		return err
	}
	m1, _, err := c.readMeta(pageSize)
	if err != nil {
		return err
	}
	var m meta
	switch {
	case m0.valid() && m1.valid():
		m = m0
		if m1.txid > m0.txid {
			m = m1
		}
	case m0.valid():
		m = m0
	case m1.valid():
		m = m1
	default:
		return c.invalidMetas(m0, m1)
	}

	size := uint64(c.size)
	ps := uint64(pageSize)
	if m.pgid > size/ps {
		if m.pgid > (1<<63)/ps {
			return c.damaged("file is %d bytes but its header says %d pages of %d bytes: truncated or damaged", size, m.pgid, ps)
		}
		return c.damaged("file is %d bytes but its header says %d pages of %d bytes (%d): truncated or damaged", size, m.pgid, ps, m.pgid*ps)
	}
	if m.root < 2 || m.root >= m.pgid {
		return c.damaged("header says the root page is %d but the file has pages 2 to %d only: damaged", m.root, m.pgid-1)
	}
	if m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid) {
		return c.damaged("header says the freelist page is %d but the file has pages 2 to %d only: damaged", m.freelist, m.pgid-1)
	}

	// bbolt reads the freelist page when it opens the file, and panics on one that is not.
	if m.freelist != noFreelist {
		flags, overflow, err := c.readPageHeader(m.freelist, pageSize)
		if err != nil {
			return err
		}
		if flags != freelistPageFlag {
			return c.damaged("freelist page %d has flags %#x, not a freelist page: damaged", m.freelist, flags)
		}
		if m.freelist+uint64(overflow) >= m.pgid {
			return c.damaged("freelist page %d runs over %d more pages, past the last page %d: damaged", m.freelist, overflow, m.pgid-1)
		}
	}
	flags, _, err := c.readPageHeader(m.root, pageSize)
	if err != nil {
		return err
	}
	if flags != branchPageFlag && flags != leafPageFlag {
		return c.damaged("root page %d has flags %#x, not a branch or leaf page: damaged", m.root, flags)
	}
	return nil
}

// pageSize finds the page size as bbolt does (db.getPageSize): from a valid meta on
// page 0; else from a valid meta on page 1, looked for at 1 KiB, 2 KiB, ... 16 MiB; else
// the OS page size.
func (c *checker) pageSize() (int64, error) {
	ps, err := c.pageSizeOf(0)
	if ps != 0 || err != nil {
		return ps, err
	}
	for i := 0; i <= 14; i++ {
		off := int64(minPageSize) << i
		if off >= c.size-minPageSize {
			break
		}
		if ps, err := c.pageSizeOf(off); ps != 0 || err != nil {
			return ps, err
		}
	}
	return int64(os.Getpagesize()), nil
}

// pageSizeOf returns the page size in a valid meta at off, 0 when there is none there.
func (c *checker) pageSizeOf(off int64) (int64, error) {
	m, ok, err := c.readMeta(off)
	if err != nil || !ok || !m.valid() {
		return 0, err
	}
	if m.pageSize < minPageSize {
		return 0, c.damaged("header says pages of %d bytes, fewer than %d: damaged", m.pageSize, minPageSize)
	}
	return int64(m.pageSize), nil
}

// invalidMetas says why neither meta page is valid.
func (c *checker) invalidMetas(metas ...meta) error {
	magic := false
	for _, m := range metas {
		if m.magic != metaMagic {
			continue
		}
		magic = true
		if m.version != metaVersion {
			return c.damaged("store format version %d, want %d", m.version, metaVersion)
		}
	}
	if !magic {
		return c.damaged("not a podnet/bbolt store (bad magic %#x, want %#x)", metas[0].magic, uint32(metaMagic))
	}
	return c.damaged("both meta pages invalid (checksum): truncated or damaged")
}
