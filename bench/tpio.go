package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// The measuring ends of a path, as iperf3 and netperf do it: the sender and the
// receiver each run on an OS thread of their own, pinned to a CPU of their own, and do
// blocking reads and writes on the socket (not through Go's poller), so that a run
// costs the path's work and two threads' wake-ups, and nothing else of the benchmark's
// process. What a run costs in CPU comes from the kernel's counters: the two threads'
// own time (RUSAGE_THREAD) and every CPU's time from /proc/stat.

// CPUs of the measuring ends (the same one on a machine with a single CPU).
var (
	senderCPU   = 0
	receiverCPU = min(1, runtime.NumCPU()-1)
)

const (
	rrSize    = 64 // bytes of a request and of its response
	rrTimeout = 5 * time.Second
)

// tpRun is what one stream measured.
type tpRun struct {
	bps   float64    // goodput the receiver saw, bit/s (bytes over accept to end of stream)
	bytes int64      // bytes the receiver got
	from  netip.Addr // the client address the receiver saw
	// CPU time during the stream: the sending and the receiving thread (user and
	// system), softirq and all non-idle time of every CPU (/proc/stat).
	sender, receiver, softirq, busy time.Duration
	// pps is the rate of ppsSize-byte UDP datagrams after the stream (packetRate), and
	// ppsBusy the machine's busy time meanwhile.
	pps     float64
	ppsBusy time.Duration
	rtts    []time.Duration // request/response round trips after the stream
}

// byteCPU is the sending and the receiving thread's CPU time per byte, in ns (0
// without bytes).
func (r tpRun) byteCPU() float64 {
	if r.bytes == 0 {
		return 0
	}
	return float64(r.sender+r.receiver) / float64(r.bytes)
}

// perGB is d per gigabyte the run moved (0 without bytes).
func (r tpRun) perGB(d time.Duration) time.Duration {
	if r.bytes == 0 {
		return 0
	}
	return time.Duration(float64(d) * 1e9 / float64(r.bytes))
}

// onCPU runs fn with the calling goroutine locked to its OS thread, bound to cpu, and
// returns the CPU time the thread spent in fn. Afterwards the thread gets its affinity
// back and returns to the runtime. It must not end with the goroutine (as a thread left
// locked does): a child process that thread started, such as an agent, has Pdeathsig,
// and the kernel would kill it with the thread.
func onCPU(cpu int, fn func() error) (time.Duration, error) {
	runtime.LockOSThread()
	var orig, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("get the CPU affinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	defer func() {
		if unix.SchedSetaffinity(0, &orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	before, err := threadCPU()
	if err != nil {
		return 0, err
	}
	err = fn()
	after, err2 := threadCPU()
	return after - before, errors.Join(err, err2)
}

// threadCPU is the calling thread's user and system time.
func threadCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// blocking returns a blocking descriptor for c, a TCP or UDP socket (a duplicate:
// close both), as a file and its number. The loops use the number: File.Fd makes the
// file blocking again, a syscall on every call.
func blocking(c any) (*os.File, int, error) {
	fc, ok := c.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, 0, fmt.Errorf("%T has no descriptor", c)
	}
	f, err := fc.File()
	if err != nil {
		return nil, 0, err
	}
	fd := int(f.Fd())
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("make the socket blocking: %w", err)
	}
	return f, fd, nil
}

// listenIn listens on f.listen inside f's server namespace.
func listenIn(f flow) (net.Listener, error) {
	var l net.Listener
	err := inNetns(f.server, func() (err error) {
		l, err = net.Listen("tcp4", f.listen.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	return l, nil
}

// dialIn connects to f.dial ("tcp4" or "udp4") from inside f's client namespace.
func dialIn(f flow, network string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(f.client, func() (err error) {
		c, err = net.DialTimeout(network, f.dial.String(), tpDialTimeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s %s: %w", network, f.dial, err)
	}
	return c, nil
}

// stream sends one TCP stream along f for d and returns what it measured.
func stream(ctx context.Context, f flow, d time.Duration) (tpRun, error) {
	l, err := listenIn(f)
	if err != nil {
		return tpRun{}, err
	}
	defer l.Close()
	type received struct {
		run tpRun
		err error
	}
	recv := make(chan received, 1)
	go func() {
		r, err := receive(l)
		recv <- received{r, err}
	}()
	c, err := dialIn(f, "tcp4")
	if err != nil {
		return tpRun{}, err
	}
	defer c.Close()
	fd, sock, err := blocking(c)
	if err != nil {
		return tpRun{}, err
	}
	defer fd.Close()
	before, err := readCPUStat()
	if err != nil {
		return tpRun{}, err
	}
	sendCPU, err := onCPU(senderCPU, func() error { return send(ctx, sock, d) })
	if err != nil {
		return tpRun{}, fmt.Errorf("send to %s: %w", f.dial, err)
	}
	select {
	case r := <-recv:
		if r.err != nil {
			return tpRun{}, fmt.Errorf("receive on %s: %w", f.listen, r.err)
		}
		after, err := readCPUStat()
		if err != nil {
			return tpRun{}, err
		}
		r.run.sender = sendCPU
		r.run.softirq = after.softirq - before.softirq
		r.run.busy = after.busy - before.busy
		return r.run, nil
	case <-time.After(tpDialTimeout):
		return tpRun{}, fmt.Errorf("receive on %s: no end of stream %v after the sender stopped", f.listen, tpDialTimeout)
	}
}

// send writes tpWrite-byte buffers to the blocking socket fd for d (or until ctx ends)
// and then shuts its sending side.
func send(ctx context.Context, fd int, d time.Duration) error {
	buf := make([]byte, tpWrite)
	end := time.Now().Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		for off := 0; off < len(buf); {
			n, err := unix.Write(fd, buf[off:])
			if err != nil {
				return err
			}
			off += n
		}
	}
	return unix.Shutdown(fd, unix.SHUT_WR)
}

// receive accepts one connection on l and reads it to its end on a pinned thread.
func receive(l net.Listener) (tpRun, error) {
	c, err := l.Accept()
	if err != nil {
		return tpRun{}, err
	}
	defer c.Close()
	r := tpRun{from: netip.MustParseAddrPort(c.RemoteAddr().String()).Addr()}
	fd, sock, err := blocking(c)
	if err != nil {
		return tpRun{}, err
	}
	defer fd.Close()
	var took time.Duration
	r.receiver, err = onCPU(receiverCPU, func() error {
		start := time.Now()
		defer func() { took = time.Since(start) }()
		buf := make([]byte, tpWrite)
		for {
			n, err := read(sock, buf)
			switch {
			case err != nil:
				return err
			case n == 0:
				return nil
			}
			r.bytes += int64(n)
		}
	})
	if err != nil {
		return tpRun{}, err
	}
	if took <= 0 || r.bytes == 0 {
		return tpRun{}, errors.New("nothing arrived")
	}
	r.bps = float64(r.bytes) * 8 / took.Seconds()
	return r, nil
}

// requestResponse sends rrSize-byte requests along f, one at a time, each answered with
// rrSize bytes, for d, and returns every round trip's time (netperf's TCP_RR).
func requestResponse(ctx context.Context, f flow, d time.Duration) ([]time.Duration, error) {
	l, err := listenIn(f)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() { served <- echo(l) }()
	c, err := dialIn(f, "tcp4")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	fd, sock, err := blocking(c)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	var rtts []time.Duration
	_, err = onCPU(senderCPU, func() error {
		// A peer that stops answering fails the run instead of hanging it.
		tv := unix.NsecToTimeval(rrTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		buf := make([]byte, rrSize)
		end := time.Now().Add(d)
		for ctx.Err() == nil {
			start := time.Now()
			if !start.Before(end) {
				break
			}
			if err := writeFull(sock, buf); err != nil {
				return err
			}
			if err := readFull(sock, buf); err != nil {
				return err
			}
			rtts = append(rtts, time.Since(start))
		}
		return unix.Shutdown(sock, unix.SHUT_WR)
	})
	if err != nil {
		return nil, fmt.Errorf("request/response to %s: %w", f.dial, err)
	}
	select {
	case err := <-served:
		if err != nil {
			return nil, fmt.Errorf("answering on %s: %w", f.listen, err)
		}
	case <-time.After(rrTimeout):
		return nil, fmt.Errorf("answering on %s: no end %v after the client stopped", f.listen, rrTimeout)
	}
	if len(rtts) == 0 {
		return nil, fmt.Errorf("request/response to %s: no round trip in %v", f.dial, d)
	}
	return rtts, nil
}

// echo accepts one connection on l and answers each rrSize-byte request with as many
// bytes, on a pinned thread, until the client shuts its side.
func echo(l net.Listener) error {
	c, err := l.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	fd, sock, err := blocking(c)
	if err != nil {
		return err
	}
	defer fd.Close()
	_, err = onCPU(receiverCPU, func() error {
		buf := make([]byte, rrSize)
		for {
			err := readFull(sock, buf)
			if errors.Is(err, errEOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := writeFull(sock, buf); err != nil {
				return err
			}
		}
	})
	return err
}

// errEOF: the peer shut its side before a whole message.
var errEOF = errors.New("end of stream")

// read is unix.Read, tried again after EINTR.
func read(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Read(fd, buf)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func readFull(fd int, buf []byte) error {
	for off := 0; off < len(buf); {
		n, err := read(fd, buf[off:])
		switch {
		case err != nil:
			return err
		case n == 0:
			return errEOF
		}
		off += n
	}
	return nil
}

func writeFull(fd int, buf []byte) error {
	for off := 0; off < len(buf); {
		n, err := unix.Write(fd, buf[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		off += n
	}
	return nil
}

// ppsSize is the payload of one datagram of the packet-rate test: small enough that the
// per-packet work (hooks, rules, conntrack) is what the sender's CPU spends its time on,
// which a TCP stream hides in 64 KB GSO packets.
const ppsSize = 64

// ppsRun is what one flood of datagrams measured: datagrams per second the receiver
// got, the machine's busy CPU time meanwhile and the sending thread's CPU time.
type ppsRun struct {
	pps          float64
	n            int64 // datagrams received
	busy, sender time.Duration
}

// packetCPU is the sending thread's CPU time per datagram received, in ns (0 without
// any).
func (r ppsRun) packetCPU() float64 {
	if r.n == 0 {
		return 0
	}
	return float64(r.sender) / float64(r.n)
}

// packetRate sends ppsSize-byte UDP datagrams along f as fast as one pinned thread can
// for d, and returns what it measured. The sender's CPU does the whole path of each
// datagram (veth transmit and the node's forwarding run in its softirq), so the rate is
// the inverse of a packet's cost there.
func packetRate(ctx context.Context, f flow, d time.Duration) (ppsRun, error) {
	var pc net.PacketConn
	err := inNetns(f.server, func() (err error) {
		pc, err = net.ListenPacket("udp4", f.listen.String())
		return err
	})
	if err != nil {
		return ppsRun{}, fmt.Errorf("listen on udp %s: %w", f.listen, err)
	}
	defer pc.Close()
	c, err := dialIn(f, "udp4")
	if err != nil {
		return ppsRun{}, err
	}
	defer c.Close()
	rfd, rsock, err := blocking(pc)
	if err != nil {
		return ppsRun{}, err
	}
	defer rfd.Close()
	sfd, ssock, err := blocking(c)
	if err != nil {
		return ppsRun{}, err
	}
	defer sfd.Close()
	// The receiver stops when nothing came for a while after the sender stopped.
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(rsock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return ppsRun{}, err
	}
	got := make(chan int64, 1)
	go func() {
		var n int64
		onCPU(receiverCPU, func() error {
			buf := make([]byte, 2048)
			// One answer to the first datagram makes the flow established for
			// conntrack: the rest measure the path of an established flow, as the
			// stream does (an unanswered flow stays new, and every datagram would take
			// the path of a connection's first packet).
			for {
				_, from, err := unix.Recvfrom(rsock, buf, 0)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return nil
				}
				n++
				unix.Sendto(rsock, buf[:1], 0, from)
				break
			}
			for {
				if _, err := read(rsock, buf); err != nil {
					return nil // the timeout: the sender is done
				}
				n++
			}
		})
		got <- n
	}()
	before, err := readCPUStat()
	if err != nil {
		return ppsRun{}, err
	}
	sendCPU, err := onCPU(senderCPU, func() error {
		buf := make([]byte, ppsSize)
		end := time.Now().Add(d)
		for i := 0; ctx.Err() == nil; i++ {
			if i%64 == 0 && !time.Now().Before(end) {
				return nil
			}
			// ECONNREFUSED (an ICMP error of an earlier datagram) and ENOBUFS are
			// losses, counted by the receiver.
			if _, err := unix.Write(ssock, buf); err != nil && err != unix.ECONNREFUSED && err != unix.ENOBUFS && err != unix.EINTR {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return ppsRun{}, fmt.Errorf("send to udp %s: %w", f.dial, err)
	}
	after, err := readCPUStat()
	if err != nil {
		return ppsRun{}, err
	}
	n := <-got
	if n == 0 {
		return ppsRun{}, fmt.Errorf("udp %s: no datagram arrived", f.dial)
	}
	return ppsRun{pps: float64(n) / d.Seconds(), n: n, busy: after.busy - before.busy, sender: sendCPU}, nil
}
