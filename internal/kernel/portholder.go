package kernel

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
)

// Holder is a socket bound to a port, and the process that holds it.
type Holder struct {
	// PID is a process that has the socket open; 0 when no process visible in
	// /proc holds it (another PID namespace, or a socket only the kernel holds).
	PID int
	// Command is the PID's /proc/PID/comm ("" when PID is 0).
	Command string
	// Inode identifies the socket (socket:[Inode] in /proc/PID/fd).
	Inode uint64
	// Local is the address the socket is bound to, as the kernel lists it (a v6
	// socket bound to an IPv4 address shows it v4-mapped).
	Local netip.AddrPort
}

// String renders h for an error message: "pid 1234 (nginx) on 0.0.0.0:80".
func (h Holder) String() string {
	if h.PID == 0 {
		return fmt.Sprintf("socket inode %d on %s (no visible process)", h.Inode, h.Local)
	}
	return fmt.Sprintf("pid %d (%s) on %s", h.PID, h.Command, h.Local)
}

// PortHolder finds a socket in ns that would make binding ip:port fail: a TCP socket in
// LISTEN state or any UDP socket with that local port, whose address conflicts with ip.
// ip zero or :: conflicts with every address; 0.0.0.0 with every IPv4 address; a
// specific address with itself and with the wildcard of its family. A socket bound
// to [::] is assumed dual-stack (the default, net.ipv6.bindv6only=0): /proc does not
// say whether it is v6-only, so it is reported for IPv4 addresses too.
//
// The socket tables are read from /proc/thread-self/net on a thread inside ns; the
// holding process is found by scanning /proc/PID/fd for socket:[inode]. When no
// socket conflicts, ok is false and err nil.
func PortHolder(ns netns.NsHandle, proto string, ip netip.Addr, port uint16) (h Holder, ok bool, err error) {
	var tables []string
	switch proto {
	case "tcp":
		tables = []string{"tcp", "tcp6"}
	case "udp":
		tables = []string{"udp", "udp6"}
	default:
		return Holder{}, false, fmt.Errorf("port holder: protocol %q: want tcp or udp", proto)
	}
	var found *procSocket
	err = Do(ns, func() error {
		for _, table := range tables {
			s, err := findProcSocket("/proc/thread-self/net/"+table, proto, ip, port)
			if err != nil {
				return err
			}
			if s != nil {
				found = s
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return Holder{}, false, fmt.Errorf("port holder %s/%d: %w", proto, port, err)
	}
	if found == nil {
		return Holder{}, false, nil
	}
	h = Holder{Inode: found.inode, Local: found.local}
	h.PID, h.Command = socketOwner(found.inode)
	return h, true, nil
}

// procSocket is one line of /proc/net/{tcp,tcp6,udp,udp6}.
type procSocket struct {
	local netip.AddrPort
	state uint8
	inode uint64
}

// tcpListen is TCP_LISTEN in the st column of /proc/net/tcp.
const tcpListen = 0x0A

// findProcSocket returns the first socket of the table at path that conflicts with a
// bind of ip:port, or nil.
func findProcSocket(path, proto string, ip netip.Addr, port uint16) (*procSocket, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(path, "6") {
			return nil, nil // kernel without IPv6
		}
		return nil, err
	}
	defer f.Close()
	return scanProcSockets(f, proto, ip, port)
}

// scanProcSockets is findProcSocket on an open table.
func scanProcSockets(r io.Reader, proto string, ip netip.Addr, port uint16) (*procSocket, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		s, err := parseProcSocket(sc.Text())
		if err != nil {
			return nil, err
		}
		if s.local.Port() != port || (proto == "tcp" && s.state != tcpListen) {
			continue
		}
		if bindConflicts(ip, s.local.Addr()) {
			return &s, nil
		}
	}
	return nil, sc.Err()
}

// parseProcSocket parses a line such as
//
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 12345 1 ...
//
// (sl, local_address, rem_address, st, tx:rx queue, tr:when, retrnsmt, uid, timeout, inode).
func parseProcSocket(line string) (procSocket, error) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return procSocket{}, fmt.Errorf("socket table line %q: too few fields", line)
	}
	local, err := parseProcAddrPort(f[1])
	if err != nil {
		return procSocket{}, fmt.Errorf("socket table line %q: %w", line, err)
	}
	st, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return procSocket{}, fmt.Errorf("socket table line %q: state: %w", line, err)
	}
	inode, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil {
		return procSocket{}, fmt.Errorf("socket table line %q: inode: %w", line, err)
	}
	return procSocket{local: local, state: uint8(st), inode: inode}, nil
}

// parseProcAddrPort parses "0100007F:1F90" (IPv4) or 32 hex digits and a port (IPv6).
// The kernel prints the address as 32-bit words in host byte order ("%08X" of each
// __be32 word), the port as a number.
func parseProcAddrPort(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: port: %w", s, err)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: bad address", s)
	}
	// Each word was printed big-endian from a host-order value: undo it word by word.
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// bindConflicts reports whether binding want (zero = any) fails because of a socket
// bound to have on the same port. have == :: is taken as dual-stack.
func bindConflicts(want, have netip.Addr) bool {
	want, have = want.Unmap().WithZone(""), have.Unmap().WithZone("")
	if !want.IsValid() || want == netip.IPv6Unspecified() || have == netip.IPv6Unspecified() {
		return true
	}
	if want.Is4() != have.Is4() {
		return false
	}
	return want == have || want.IsUnspecified() || have.IsUnspecified()
}

// socketOwner returns a process that has socket:[inode] open, or 0 and "". The test
// binary itself is checked first: it is the usual holder in tests and the cheapest.
func socketOwner(inode uint64) (int, string) {
	target := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	self := os.Getpid()
	if procHasFD(self, target) {
		return self, procComm(self)
	}
	d, err := os.Open("/proc")
	if err != nil {
		return 0, ""
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, ""
	}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == self {
			continue
		}
		if procHasFD(pid, target) {
			return pid, procComm(pid)
		}
	}
	return 0, ""
}

// procHasFD reports whether a descriptor of pid links to target. Processes that exit or
// deny access while being scanned are skipped.
func procHasFD(pid int, target string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	d, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer d.Close()
	fds, err := d.Readdirnames(-1)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if link, err := os.Readlink(dir + fd); err == nil && link == target {
			return true
		}
	}
	return false
}

// procComm returns the command name of pid, or "".
func procComm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
