package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// dialError is the error net.Dialer returns when connect fails with errno.
func dialError(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
}

// expiredDial returns the error of a real dial whose context is done by cause.
func expiredDial(t *testing.T, cancelled bool) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), -time.Second)
	if cancelled {
		ctx, cancel = context.WithCancel(context.Background())
		cancel()
	}
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", "127.0.0.1:9")
	if err == nil {
		c.Close()
		t.Fatal("dial with a done context succeeded")
	}
	return err
}

// refusedDial returns the error of a real dial to a loopback port nobody listens on.
func refusedDial(t *testing.T) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s after its listener closed succeeded", addr)
	}
	return err
}

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want outcome
	}{
		{"nil", nil, connected},
		{"dial timeout", expiredDial(t, false), noAnswer},
		{"dial timeout, wrapped", fmt.Errorf("connect to 10.0.0.1:80: %w", expiredDial(t, false)), noAnswer},
		{"kernel gave up its SYN retransmissions", dialError(syscall.ETIMEDOUT), noAnswer},
		{"dial deadline seen by the poller", &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, noAnswer},
		{"refused by a loopback port", refusedDial(t), refused},
		{"refused, wrapped", fmt.Errorf("connect to 10.0.0.1:80: %w", dialError(syscall.ECONNREFUSED)), refused},
		{"no route", dialError(syscall.ENETUNREACH), unreachable},
		{"no neighbour or ICMP host unreachable", dialError(syscall.EHOSTUNREACH), unreachable},
		{"dial cancelled", expiredDial(t, true), failed},
		{"dropped by the client's own output hook", dialError(syscall.EPERM), failed},
		{"ICMPv6 administratively prohibited", dialError(syscall.EACCES), failed},
		{"other", errors.New("listen on 10.0.0.1:80: bind: cannot assign requested address"), failed},
	}
	for _, c := range cases {
		if got := classify(c.err); got != c.want {
			t.Errorf("%s: classify(%v) = %s, want %s", c.name, c.err, got, c.want)
		}
	}
}
