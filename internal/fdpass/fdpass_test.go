package fdpass

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/podnet/podnet/api"
	"golang.org/x/sys/unix"
)

// pair returns the two ends of a connected stream socketpair: the client's, and the
// agent's as FDListener would accept it.
func pair(t *testing.T) (*net.UnixConn, *recvFDConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatalf("file conn: %v", err)
		}
		return c.(*net.UnixConn)
	}
	send, recv := conn(fds[0]), &recvFDConn{UnixConn: conn(fds[1])}
	t.Cleanup(func() {
		send.Close()
		recv.Close()
	})
	return send, recv
}

// openFile returns the descriptor of a new file and its device and inode.
func openFile(t *testing.T) (fd int, dev, ino uint64) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "passed"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fd = int(f.Fd())
	dev, ino = fileID(t, fd)
	return fd, dev, ino
}

func fileID(t *testing.T, fd int) (dev, ino uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat %d: %v", fd, err)
	}
	return st.Dev, st.Ino
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func send(t *testing.T, c *net.UnixConn, data string, fds ...int) {
	t.Helper()
	var oob []byte
	if fds != nil {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix([]byte(data), oob, nil); err != nil {
		t.Fatalf("send %d descriptors: %v", len(fds), err)
	}
}

func TestReadKeepsSameFile(t *testing.T) {
	client, agent := pair(t)
	fd, dev, ino := openFile(t)
	send(t, client, "POST", fd)

	b := make([]byte, 16)
	n, err := agent.Read(b)
	if err != nil || string(b[:n]) != "POST" {
		t.Fatalf("Read = %q, %v; want \"POST\", nil", b[:n], err)
	}
	got := agent.take()
	if got < 0 {
		t.Fatal("no descriptor kept")
	}
	defer unix.Close(got)
	if gdev, gino := fileID(t, got); gdev != dev || gino != ino {
		t.Errorf("received dev=%d ino=%d, sent dev=%d ino=%d", gdev, gino, dev, ino)
	}
	if fd := agent.take(); fd >= 0 {
		t.Errorf("second take = %d, want -1", fd)
	}
}

func TestReadSetsCloseOnExec(t *testing.T) {
	client, agent := pair(t)
	f, _, _ := openFile(t)
	fd, err := unix.Dup(f) // dup(2) clears FD_CLOEXEC: the flag must come from the receive
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	send(t, client, "x", fd)

	if _, err := agent.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	got := agent.take()
	if got < 0 {
		t.Fatal("no descriptor kept")
	}
	defer unix.Close(got)
	flags, err := unix.FcntlInt(uintptr(got), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("received descriptor flags %#x: FD_CLOEXEC not set", flags)
	}
}

func TestReadDescriptorCount(t *testing.T) {
	// The buffer fits as many descriptors as alignment leaves room for; beyond that the
	// kernel truncates.
	fit := (oobSize - unix.CmsgLen(0)) / 4
	tooMany := func(n int) error {
		if n > fit {
			return ErrTruncated
		}
		return ErrTooManyFDs
	}
	tests := []struct {
		name    string
		n       int  // descriptors sent
		rights  bool // send an SCM_RIGHTS message, even of none
		want    int  // descriptors kept
		wantErr error
	}{
		{name: "no control data"},
		{name: "empty SCM_RIGHTS", rights: true},
		{name: "one", n: 1, rights: true, want: 1},
		{name: "two", n: 2, rights: true, wantErr: tooMany(2)},
		{name: "eight", n: 8, rights: true, wantErr: tooMany(8)},
		{name: "SCM_MAX_FD", n: 253, rights: true, wantErr: tooMany(253)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, agent := pair(t)
			fd, _, _ := openFile(t)
			sent := make([]int, tt.n)
			for i := range sent {
				sent[i] = fd // each arrives as a descriptor of its own
			}
			if tt.rights && sent == nil {
				sent = []int{}
			}
			before := openFDs(t)
			send(t, client, "data", sent...)

			b := make([]byte, 16)
			n, err := agent.Read(b)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Read error = %v, want %v", err, tt.wantErr)
			}
			if err != nil && n != 0 {
				t.Errorf("Read = %d bytes with the error, want 0", n)
			}
			if err == nil && string(b[:n]) != "data" {
				t.Errorf("Read = %q, want \"data\"", b[:n])
			}
			if got := openFDs(t) - before; got != tt.want {
				t.Errorf("after Read: %d more open descriptors, want %d", got, tt.want)
			}
			for range tt.want {
				unix.Close(agent.take())
			}
			if fd := agent.take(); fd >= 0 {
				t.Errorf("take = %d after the %d kept, want -1", fd, tt.want)
			}
			if got := openFDs(t); got != before {
				t.Errorf("leaked %d descriptors", got-before)
			}
		})
	}
}

func TestReadConnectionHoldsOneDescriptor(t *testing.T) {
	tests := []struct {
		name    string
		take    bool // take the first descriptor before the second arrives
		wantErr error
	}{
		{name: "taken in between", take: true},
		{name: "still waiting", wantErr: ErrTooManyFDs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, agent := pair(t)
			fd, _, _ := openFile(t)
			before := openFDs(t)
			b := make([]byte, 16)

			send(t, client, "first", fd)
			if _, err := agent.Read(b); err != nil {
				t.Fatal(err)
			}
			if tt.take {
				unix.Close(agent.take())
			}
			send(t, client, "second", fd)
			if _, err := agent.Read(b); !errors.Is(err, tt.wantErr) {
				t.Fatalf("second Read error = %v, want %v", err, tt.wantErr)
			}
			if got := openFDs(t) - before; got != 1 {
				t.Errorf("%d more open descriptors, want the 1 waiting", got)
			}
			agent.Close()
			if got := openFDs(t) - before; got != -1 {
				t.Errorf("after Close: %d open descriptors more, want -1 (the agent's socket)", got)
			}
		})
	}
}

func TestReadPeerClosesEarly(t *testing.T) {
	tests := []struct {
		name string
		send bool // send "data" with a descriptor before closing
	}{
		{name: "before sending"},
		{name: "after sending a descriptor", send: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, agent := pair(t)
			fd, _, _ := openFile(t)
			if tt.send {
				send(t, client, "data", fd)
			}
			client.Close()
			before := openFDs(t)

			b := make([]byte, 16)
			if tt.send {
				if n, err := agent.Read(b); err != nil || string(b[:n]) != "data" {
					t.Fatalf("Read = %q, %v; want \"data\", nil", b[:n], err)
				}
			}
			if n, err := agent.Read(b); n != 0 || err != io.EOF {
				t.Fatalf("Read at end = %d, %v; want 0, EOF", n, err)
			}
			// Nobody takes the descriptor: Close closes it with the socket.
			agent.Close()
			if got := openFDs(t) - before; got != -1 {
				t.Errorf("after Close: %d open descriptors more, want -1 (the agent's socket)", got)
			}
		})
	}
}

// cmsg encodes one control message with a header claiming length bytes of data.
func cmsg(level, typ int32, length int, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(length))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// TestParseRights feeds the parser control data the kernel would never write (it
// refuses malformed control data at sendmsg): it must not panic and must return every
// descriptor found before the damage, for Read to close.
func TestParseRights(t *testing.T) {
	creds := unix.UnixCredentials(&unix.Ucred{Pid: 1})
	tests := []struct {
		name    string
		oob     []byte
		want    []int
		wantErr bool
	}{
		{name: "empty"},
		{name: "rights", oob: unix.UnixRights(3, 4), want: []int{3, 4}},
		{name: "two rights messages", oob: slices.Concat(unix.UnixRights(3), unix.UnixRights(4, 5)), want: []int{3, 4, 5}},
		{name: "credentials ignored", oob: slices.Concat(creds, unix.UnixRights(6)), want: []int{6}},
		{name: "short header", oob: make([]byte, unix.SizeofCmsghdr-1), wantErr: true},
		{name: "length below header", oob: cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, -4, nil), wantErr: true},
		{name: "length beyond buffer", oob: cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, 64, []byte{1, 0, 0, 0}), wantErr: true},
		{name: "rights then garbage", oob: slices.Concat(unix.UnixRights(7), []byte{1, 2, 3}), want: []int{7}, wantErr: true},
		{name: "rights then bad header", oob: slices.Concat(unix.UnixRights(7), cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, 64, nil)), want: []int{7}, wantErr: true},
		{name: "partial descriptor", oob: cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, 6, []byte{8, 0, 0, 0, 9, 0}), want: []int{8}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRights(tt.oob)
			if (err != nil) != tt.wantErr {
				t.Errorf("error = %v, want error %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("descriptors = %v, want %v", got, tt.want)
			}
		})
	}
}

// serve runs an HTTP server on FDListener the way the agent does; its handler records
// the identity of the descriptor each request brought.
func serve(t *testing.T) (socket string, got chan [2]uint64) {
	t.Helper()
	dir, err := os.MkdirTemp("", "fdpass") // t.TempDir may exceed sun_path's 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket = filepath.Join(dir, "agent.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	got = make(chan [2]uint64, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var id [2]uint64
		if fd := TakeFD(r); fd >= 0 {
			id[0], id[1] = fileID(t, fd)
			unix.Close(fd)
		}
		got <- id
	})
	srv := &http.Server{Handler: h, ConnContext: ConnContext}
	go srv.Serve(FDListener{UnixListener: l})
	t.Cleanup(func() { srv.Close() })
	return socket, got
}

// waitFDs waits for this process's open descriptors to return to want: the server
// closes a connection after the client has seen the answer.
func waitFDs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) != want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := openFDs(t); got != want {
		t.Errorf("%d open descriptors, want %d: leaked %d", got, want, got-want)
	}
}

func TestServeClientDescriptor(t *testing.T) {
	socket, got := serve(t)
	fd, dev, ino := openFile(t)
	before := openFDs(t)

	if err := api.NewClient(socket).Check(context.Background(), api.CheckRequest{}, fd); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if id := <-got; id != [2]uint64{dev, ino} {
		t.Errorf("handler saw dev=%d ino=%d, client sent dev=%d ino=%d", id[0], id[1], dev, ino)
	}
	waitFDs(t, before)
}

func TestServeRefusesTooManyDescriptors(t *testing.T) {
	socket, got := serve(t)
	fd, _, _ := openFile(t)
	before := openFDs(t)

	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	req := "POST /v1/endpoints/check HTTP/1.1\r\nHost: podnet\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
	send(t, c, req, fd, fd, fd)
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(line, "HTTP/1.1 400 ") {
		t.Errorf("answer %q, %v; want 400 Bad Request", line, err)
	}
	select {
	case id := <-got:
		t.Errorf("handler ran (descriptor dev=%d ino=%d), want the request refused", id[0], id[1])
	default:
	}
	waitFDs(t, before)
}
