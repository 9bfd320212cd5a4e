// Package fdpass is the server side of descriptor passing on the agent's socket: a
// listener whose connections keep the descriptors (SCM_RIGHTS) that clients send with
// a request, for the request's handler to take. The client side is in package api.
//
// A request carries at most one descriptor (the sandbox's network namespace), on its
// first bytes, and api.Client sends one request per connection. Received descriptors
// are close-on-exec. A message that breaks this contract fails the connection's Read
// (net/http then answers 400 Bad Request and closes the connection, the handler never
// runs) after every descriptor it brought has been closed: none is leaked.
package fdpass

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"golang.org/x/sys/unix"
)

// maxFDs is how many descriptors one connection may hold for its handler at a time.
const maxFDs = 1

// oobSize is the receive buffer for control data: room for one SCM_RIGHTS message of
// maxFDs descriptors, no more. Any message larger is truncated by the kernel
// (MSG_CTRUNC), which discards the descriptors that did not fit, so a misbehaving peer
// (up to SCM_MAX_FD = 253 descriptors a message) cannot fill the agent's descriptor
// table. Alignment padding may leave room for one descriptor more (two on 64-bit), which
// the count check in Read rejects.
var oobSize = unix.CmsgSpace(4 * maxFDs)

var (
	// ErrTruncated reports control data the kernel truncated (MSG_CTRUNC): the peer sent
	// more descriptors than the receive buffer holds, or the agent is out of descriptors.
	ErrTruncated = errors.New("control data truncated")
	// ErrTooManyFDs reports more descriptors than a connection may hold at a time.
	ErrTooManyFDs = errors.New("too many descriptors")
)

// FDListener wraps a unix listener so that the descriptors clients send are kept and
// can be taken by the request handler with TakeFD.
type FDListener struct {
	*net.UnixListener
}

// Accept returns a connection that collects received descriptors.
func (l FDListener) Accept() (net.Conn, error) {
	c, err := l.UnixListener.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return &recvFDConn{UnixConn: c}, nil
}

// recvFDConn reads with recvmsg and keeps any descriptors that arrive.
type recvFDConn struct {
	*net.UnixConn

	mu     sync.Mutex // guards fds and closed
	fds    []int
	closed bool
}

// Read reads like the UnixConn's Read and keeps the descriptors that arrive with the
// bytes. On Linux, ReadMsgUnix receives with MSG_CMSG_CLOEXEC, so no descriptor is ever
// open without close-on-exec. A message whose control data was truncated, is malformed,
// or brings more descriptors than the connection may hold fails with 0 bytes (its bytes
// are dropped, so a request never runs without the descriptor it came with) and an
// error wrapping ErrTruncated or ErrTooManyFDs; the descriptors it brought are closed.
func (c *recvFDConn) Read(b []byte) (int, error) {
	oob := make([]byte, oobSize)
	n, oobn, flags, _, err := c.UnixConn.ReadMsgUnix(b, oob)
	fds, perr := parseRights(oob[:oobn])
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		closeAll(fds)
		return 0, fmt.Errorf("receive descriptors: %w (MSG_CTRUNC): the peer sent more than %d, or the agent is out of descriptors; closed the %d that arrived", ErrTruncated, maxFDs, len(fds))
	case perr != nil:
		closeAll(fds)
		return 0, fmt.Errorf("receive descriptors: %w; closed the %d that arrived", perr, len(fds))
	}
	if len(fds) > 0 {
		if err := c.keep(fds); err != nil {
			return 0, err
		}
	}
	if errors.Is(err, io.EOF) {
		err = io.EOF // as net.Conn's Read: ReadMsgUnix wraps it in a *net.OpError
	}
	return n, err
}

// keep queues fds for take, or closes them when the connection is closed already or
// would hold more than maxFDs.
func (c *recvFDConn) keep(fds []int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		closeAll(fds)
	case len(c.fds)+len(fds) > maxFDs:
		closeAll(fds)
		return fmt.Errorf("receive descriptors: %w: got %d with %d waiting to be taken, at most %d may wait; closed the %d received", ErrTooManyFDs, len(fds), len(c.fds), maxFDs, len(fds))
	default:
		c.fds = append(c.fds, fds...)
	}
	return nil
}

// parseRights returns the descriptors of the SCM_RIGHTS messages in oob and ignores
// other control messages. On malformed control data it returns an error with the
// descriptors found before it, for the caller to close.
func parseRights(oob []byte) ([]int, error) {
	var fds []int
	for len(oob) > 0 {
		if len(oob) < unix.SizeofCmsghdr {
			return fds, fmt.Errorf("malformed control data: %d trailing bytes", len(oob))
		}
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return fds, fmt.Errorf("malformed control data: %w", err)
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			// ParseUnixRights panics on a partial descriptor: parse the whole ones.
			got, _ := unix.ParseUnixRights(&unix.SocketControlMessage{Header: h, Data: data[:len(data)&^3]})
			fds = append(fds, got...)
			if len(data)%4 != 0 {
				return fds, fmt.Errorf("malformed control data: SCM_RIGHTS of %d bytes", len(data))
			}
		}
		oob = rest
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func (c *recvFDConn) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fds) == 0 {
		return -1
	}
	fd := c.fds[0]
	c.fds = c.fds[1:]
	return fd
}

// Close closes the descriptors nobody took, then the connection.
func (c *recvFDConn) Close() error {
	c.mu.Lock()
	closeAll(c.fds)
	c.fds, c.closed = nil, true
	c.mu.Unlock()
	return c.UnixConn.Close()
}

type connKey struct{}

// ConnContext is the http.Server.ConnContext hook that makes TakeFD work.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// TakeFD returns the descriptor the client sent with r, or -1 when none came (or r was
// not served through FDListener and ConnContext). The caller owns it and must close it;
// a descriptor no handler takes is closed with the connection.
func TakeFD(r *http.Request) int {
	c, ok := r.Context().Value(connKey{}).(*recvFDConn)
	if !ok {
		return -1
	}
	return c.take()
}
