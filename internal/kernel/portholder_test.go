package kernel

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/testutil"
)

func TestParseProcSocket(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("lines below are as a little-endian kernel prints them")
	}
	for _, tc := range []struct {
		line  string
		local string
		state uint8
		inode uint64
	}{
		{
			line:  "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0",
			local: "127.0.0.1:8080", state: 0x0A, inode: 12345,
		},
		{
			line:  "  12: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 777 2 0000000000000000 0",
			local: "0.0.0.0:53", state: 0x07, inode: 777,
		},
		{
			line:  "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0",
			local: "[::1]:8080", state: 0x0A, inode: 4242,
		},
		{
			line:  "   1: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0",
			local: "[2001:db8::1]:443", state: 0x0A, inode: 99,
		},
		{
			line:  "   2: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0",
			local: "[::ffff:127.0.0.1]:80", state: 0x0A, inode: 5,
		},
	} {
		s, err := parseProcSocket(tc.line)
		if err != nil {
			t.Errorf("parse %q: %v", tc.line, err)
			continue
		}
		if s.local.String() != tc.local || s.state != tc.state || s.inode != tc.inode {
			t.Errorf("parse %q = %s st %#x inode %d, want %s st %#x inode %d", tc.line, s.local, s.state, s.inode, tc.local, tc.state, tc.inode)
		}
	}
	for _, bad := range []string{
		"0: 0100007F:1F90",
		"0: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
		"0: 01007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
		"0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 x",
	} {
		if _, err := parseProcSocket(bad); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
}

func TestBindConflicts(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		want, have string // "" = zero
		conflict   bool
	}{
		{"", "127.0.0.1", true},
		{"", "::1", true},
		{"::", "10.0.0.1", true},
		{"0.0.0.0", "10.0.0.1", true},
		{"0.0.0.0", "::", true},
		{"0.0.0.0", "::1", false},
		{"0.0.0.0", "::ffff:10.0.0.1", true},
		{"10.0.0.1", "0.0.0.0", true},
		{"10.0.0.1", "::", true},
		{"10.0.0.1", "10.0.0.1", true},
		{"10.0.0.1", "::ffff:10.0.0.1", true},
		{"::ffff:10.0.0.1", "10.0.0.1", true},
		{"10.0.0.1", "10.0.0.2", false},
		{"10.0.0.1", "::1", false},
		{"2001:db8::1", "::", true},
		{"2001:db8::1", "2001:db8::1", true},
		{"2001:db8::1", "2001:db8::2", false},
		{"2001:db8::1", "0.0.0.0", false},
		{"fe80::1%eth0", "fe80::1", true},
	} {
		var want netip.Addr
		if tc.want != "" {
			want = a(tc.want)
		}
		if got := bindConflicts(want, a(tc.have)); got != tc.conflict {
			t.Errorf("bindConflicts(%q, %s) = %v, want %v", tc.want, tc.have, got, tc.conflict)
		}
	}
}

func TestScanProcSocketsStateAndPort(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 10 1 0000000000000000 20 4 30 10 -1
   1: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11 1 0000000000000000 100 0 0 10 0
`
	// Port 8080 is only an established connection: not a TCP holder, but a UDP table
	// line with that port would be.
	if s, err := scanProcSockets(strings.NewReader(table), "tcp", netip.Addr{}, 8080); err != nil || s != nil {
		t.Errorf("tcp 8080 = %+v, %v; want nothing", s, err)
	}
	if s, err := scanProcSockets(strings.NewReader(table), "udp", netip.Addr{}, 8080); err != nil || s == nil || s.inode != 10 {
		t.Errorf("udp 8080 = %+v, %v; want inode 10", s, err)
	}
	if s, err := scanProcSockets(strings.NewReader(table), "tcp", netip.MustParseAddr("127.0.0.1"), 8081); err != nil || s == nil || s.inode != 11 {
		t.Errorf("tcp 127.0.0.1:8081 = %+v, %v; want inode 11", s, err)
	}
}

// phNS returns a throwaway namespace with lo up, closed when t ends.
func phNS(t *testing.T) netns.NsHandle {
	t.Helper()
	ns, err := NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return ns
}

// phInode returns the inode of a socket's descriptor.
func phInode(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

func phPort(t *testing.T, a net.Addr) uint16 {
	t.Helper()
	return netip.MustParseAddrPort(a.String()).Port()
}

func TestPrivilegedPortHolder(t *testing.T) {
	testutil.RequireRoot(t)
	ns := phNS(t)
	other := phNS(t)
	a := netip.MustParseAddr

	l, err := ListenIn(ns, "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := phPort(t, l.Addr())
	inode := phInode(t, l.(*net.TCPListener))

	u, err := ListenPacketIn(ns, "udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	uport := phPort(t, u.LocalAddr())

	l6, err := ListenIn(ns, "tcp6", "[::]:0") // v6-only wildcard
	if err != nil {
		t.Fatal(err)
	}
	defer l6.Close()
	port6 := phPort(t, l6.Addr())

	l6s, err := ListenIn(ns, "tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l6s.Close()
	port6s := phPort(t, l6s.Addr())

	// A free port: a listener opened and closed again.
	fl, err := ListenIn(ns, "tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	free := phPort(t, fl.Addr())
	fl.Close()

	for _, tc := range []struct {
		name  string
		ns    netns.NsHandle
		proto string
		ip    netip.Addr
		port  uint16
		local string // "" = not found
	}{
		{"tcp any", ns, "tcp", netip.Addr{}, port, "127.0.0.1:" + phItoa(port)},
		{"tcp same ip", ns, "tcp", a("127.0.0.1"), port, "127.0.0.1:" + phItoa(port)},
		{"tcp v4 wildcard", ns, "tcp", a("0.0.0.0"), port, "127.0.0.1:" + phItoa(port)},
		{"tcp v6 wildcard", ns, "tcp", a("::"), port, "127.0.0.1:" + phItoa(port)},
		{"tcp other ip", ns, "tcp", a("127.0.0.2"), port, ""},
		{"tcp v6 ip", ns, "tcp", a("::1"), port, ""},
		{"udp same port", ns, "udp", netip.Addr{}, port, ""},
		{"free port", ns, "tcp", netip.Addr{}, free, ""},
		{"other namespace", other, "tcp", netip.Addr{}, port, ""},
		{"udp wildcard", ns, "udp", a("127.0.0.1"), uport, "0.0.0.0:" + phItoa(uport)},
		{"udp wildcard any", ns, "udp", netip.Addr{}, uport, "0.0.0.0:" + phItoa(uport)},
		{"udp v6 ip", ns, "udp", a("::1"), uport, ""},
		{"v6 wildcard v6 ip", ns, "tcp", a("::1"), port6, "[::]:" + phItoa(port6)},
		{"v6 wildcard v4 ip (assumed dual-stack)", ns, "tcp", a("127.0.0.1"), port6, "[::]:" + phItoa(port6)},
		{"v6 specific", ns, "tcp", a("::1"), port6s, "[::1]:" + phItoa(port6s)},
		{"v6 specific other", ns, "tcp", a("::2"), port6s, ""},
		{"v6 specific v4", ns, "tcp", a("127.0.0.1"), port6s, ""},
	} {
		h, ok, err := PortHolder(tc.ns, tc.proto, tc.ip, tc.port)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if tc.local == "" {
			if ok {
				t.Errorf("%s: found %s, want nothing", tc.name, h)
			}
			continue
		}
		if !ok {
			t.Errorf("%s: not found, want %s", tc.name, tc.local)
			continue
		}
		if h.Local.String() != tc.local || h.PID != os.Getpid() || h.Command == "" || h.Inode == 0 {
			t.Errorf("%s: %+v, want %s held by pid %d", tc.name, h, tc.local, os.Getpid())
		}
	}

	h, ok, err := PortHolder(ns, "tcp", netip.Addr{}, port)
	if err != nil || !ok || h.Inode != inode {
		t.Errorf("holder of %d = %+v %v %v, want inode %d", port, h, ok, err, inode)
	}
	if want, err := os.ReadFile("/proc/self/comm"); err != nil || h.Command != strings.TrimSpace(string(want)) {
		t.Errorf("command %q, want %q (%v)", h.Command, want, err)
	}
	if !strings.Contains(h.String(), "pid ") {
		t.Errorf("String() = %q", h.String())
	}
	if _, _, err := PortHolder(ns, "sctp", netip.Addr{}, port); err == nil {
		t.Error("sctp: no error")
	}
}

func phItoa(p uint16) string { return strconv.Itoa(int(p)) }
