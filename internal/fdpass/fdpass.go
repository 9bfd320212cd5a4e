// Package fdpass is the server side of descriptor passing on the agent's socket: a
// listener whose connections keep the descriptors (SCM_RIGHTS) that clients send with
// a request, for the request's handler to take. The client side is in package api.
package fdpass

import (
	"context"
	"net"
	"net/http"
	"sync"
	"syscall"
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

	mu  sync.Mutex // guards fds
	fds []int
}

func (c *recvFDConn) Read(b []byte) (int, error) {
	oob := make([]byte, syscall.CmsgSpace(4*4))
	n, oobn, _, _, err := c.UnixConn.ReadMsgUnix(b, oob)
	if oobn > 0 {
		if msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, m := range msgs {
				if fds, ferr := syscall.ParseUnixRights(&m); ferr == nil {
					c.mu.Lock()
					c.fds = append(c.fds, fds...)
					c.mu.Unlock()
				}
			}
		}
	}
	return n, err
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

func (c *recvFDConn) Close() error {
	c.mu.Lock()
	for _, fd := range c.fds {
		syscall.Close(fd)
	}
	c.fds = nil
	c.mu.Unlock()
	return c.UnixConn.Close()
}

type connKey struct{}

// ConnContext is the http.Server.ConnContext hook that makes TakeFD work.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// TakeFD returns the descriptor the client sent with r, or -1. The caller owns it.
func TakeFD(r *http.Request) int {
	c, ok := r.Context().Value(connKey{}).(*recvFDConn)
	if !ok {
		return -1
	}
	return c.take()
}
