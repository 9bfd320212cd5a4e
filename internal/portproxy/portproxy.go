// Package portproxy publishes ports in userland: for each mapping (an api.PortMapping
// resolved to its endpoint's address) it listens on the node's HostIP:HostPort and
// relays every TCP connection or UDP session to the backend. It is the alternative to
// NAT for nodes where DNAT rules are not wanted.
//
// The price of a userland proxy: the backend sees the connection coming from the node
// (the proxy's own socket), never the client's source address. Applications that log,
// rate-limit or authorize by client address need the NAT mode instead.
//
// Kernel objects: only sockets. Listening sockets and the sockets dialed to backends are
// created inside the node namespace given to New (on a locked thread, kernel.Do);
// callers' goroutines never change namespace. Nothing else (no nftables, no sysctl) is
// touched.
//
// TCP relays with io.Copy between two *net.TCPConn, which Go turns into splice(2)
// through a pipe (zero-copy, no user-space buffer; each direction holds one pipe, so
// a connection costs two sockets and four pipe descriptors); end of stream on one side
// is passed on as a half-close (shutdown(SHUT_WR)) on the other. A backend dial runs
// on a thread locked in the node namespace until it connects or DialTimeout expires.
//
// UDP keeps one backend socket per client address (a session), expired after a
// configurable idle time and bounded in number; replies leave from the address the
// client sent to (packet info), which matters on a node with several addresses.
//
// With HostIP zero a mapping listens on one dual-stack socket ([::]:port with
// IPV6_V6ONLY off), which serves IPv4 and IPv6 clients alike: one bind that succeeds
// or fails as a whole, one accept loop. An explicit "::" is IPv6 only.
package portproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
)

// Mapping publishes Backend on HostIP:HostPort of the node.
type Mapping struct {
	Protocol string     // "tcp" or "udp"
	HostIP   netip.Addr // zero = all addresses of both families
	HostPort uint16
	Backend  netip.AddrPort
}

// String renders m as "tcp *:8080 -> 10.88.0.2:80" (* for all addresses).
func (m Mapping) String() string {
	host := "*:" + fmt.Sprint(m.HostPort)
	if m.HostIP.IsValid() {
		host = netip.AddrPortFrom(m.HostIP, m.HostPort).String()
	}
	return fmt.Sprintf("%s %s -> %s", m.Protocol, host, m.Backend)
}

// canonical returns m with a lower-case protocol and IPv4 addresses unmapped, or an
// error naming the field that is wrong.
func (m Mapping) canonical() (Mapping, error) {
	m.Protocol = strings.ToLower(m.Protocol)
	m.HostIP = m.HostIP.Unmap()
	m.Backend = netip.AddrPortFrom(m.Backend.Addr().Unmap(), m.Backend.Port())
	switch {
	case m.Protocol != "tcp" && m.Protocol != "udp":
		return m, fmt.Errorf("mapping %s: protocol %q: want tcp or udp", m, m.Protocol)
	case m.HostPort == 0:
		return m, fmt.Errorf("mapping %s: host port 0", m)
	case !m.Backend.Addr().IsValid() || m.Backend.Addr().IsUnspecified():
		return m, fmt.Errorf("mapping %s: backend address %q: want a unicast address", m, m.Backend.Addr())
	case m.Backend.Port() == 0:
		return m, fmt.Errorf("mapping %s: backend port 0", m)
	}
	return m, nil
}

// overlaps reports whether m and o cannot both be bound: same protocol and port, and
// host addresses that include each other.
func (m Mapping) overlaps(o Mapping) bool {
	if m.Protocol != o.Protocol || m.HostPort != o.HostPort {
		return false
	}
	a, b := m.HostIP, o.HostIP
	if !a.IsValid() || !b.IsValid() || a == b {
		return true
	}
	return a.Is4() == b.Is4() && (a.IsUnspecified() || b.IsUnspecified())
}

// listenAddr returns the network and address to listen on for m. HostIP zero listens
// on one dual-stack socket: Go binds "tcp"/"udp" ":port" to [::] with IPV6_V6ONLY off
// (or to 0.0.0.0 on a kernel without IPv6). An explicit address listens in its own
// family only ("tcp4"/"tcp6"), so "::" means IPv6 only.
func (m Mapping) listenAddr() (network, addr string) {
	if !m.HostIP.IsValid() {
		return m.Protocol, fmt.Sprintf(":%d", m.HostPort)
	}
	if m.HostIP.Is4() {
		return m.Protocol + "4", netip.AddrPortFrom(m.HostIP, m.HostPort).String()
	}
	return m.Protocol + "6", netip.AddrPortFrom(m.HostIP, m.HostPort).String()
}

func compareMappings(a, b Mapping) int {
	if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
		return c
	}
	if a.HostPort != b.HostPort {
		return int(a.HostPort) - int(b.HostPort)
	}
	if c := a.HostIP.Compare(b.HostIP); c != 0 {
		return c
	}
	return a.Backend.Compare(b.Backend)
}

// Config tunes a Manager. Zero fields take the defaults.
type Config struct {
	// DialTimeout bounds connecting to a TCP backend. Default 5s.
	DialTimeout time.Duration
	// UDPIdleTimeout closes a UDP session after this long without a datagram in
	// either direction. Default 30s.
	UDPIdleTimeout time.Duration
	// MaxUDPSessions bounds the sessions of one UDP mapping; datagrams from new
	// clients are dropped while it is reached (existing sessions are never evicted
	// for a newcomer). Default 1024.
	MaxUDPSessions int
	// Logf receives events worth a line (backend unreachable, sessions exhausted).
	// Nil discards them.
	Logf func(format string, args ...any)
}

// Defaults.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultUDPIdleTimeout = 30 * time.Second
	DefaultMaxUDPSessions = 1024
)

func (c Config) withDefaults() Config {
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.UDPIdleTimeout <= 0 {
		c.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	if c.MaxUDPSessions <= 0 {
		c.MaxUDPSessions = DefaultMaxUDPSessions
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// ErrClosed is returned by Add and Sync after Close.
var ErrClosed = errors.New("portproxy: manager closed")

// Manager runs the proxies of one node namespace. Its methods are safe for
// concurrent use.
type Manager struct {
	ns  netns.NsHandle // a duplicate of the caller's handle, closed by Close
	cfg Config

	// mu serializes Add, Remove, Sync and Close (a mapping's port is released before
	// another mapping binds it) and guards proxies and closed.
	mu      sync.Mutex
	proxies map[Mapping]proxy
	closed  bool
}

// proxy is one running mapping.
type proxy interface {
	// close stops listening, closes every connection or session of the mapping and
	// returns once all its goroutines have ended.
	close()
}

// Applier runs the proxies of published ports. Manager implements it; portproxytest.Fake
// records what it is asked to do.
type Applier interface {
	Add(m Mapping) error
	Remove(m Mapping) error
	Sync(ms []Mapping) error
	Close()
}

var _ Applier = (*Manager)(nil)

// New returns a Manager that listens and dials inside ns. It keeps its own duplicate
// of the handle: the caller may close ns.
func New(ns netns.NsHandle, cfg Config) (*Manager, error) {
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("portproxy: duplicate netns handle: %w", err)
	}
	return &Manager{ns: netns.NsHandle(fd), cfg: cfg.withDefaults(), proxies: map[Mapping]proxy{}}, nil
}

// Add starts proxying m. Adding a running mapping again is a no-op. When the port
// cannot be bound the error names the mapping and, when it can be found, what holds
// the port; errors.Is(err, syscall.EADDRINUSE) tells a taken port apart.
func (mg *Manager) Add(m Mapping) error {
	m, err := m.canonical()
	if err != nil {
		return err
	}
	mg.mu.Lock()
	defer mg.mu.Unlock()
	if mg.closed {
		return ErrClosed
	}
	return mg.addLocked(m)
}

func (mg *Manager) addLocked(m Mapping) error {
	if _, ok := mg.proxies[m]; ok {
		return nil
	}
	for o := range mg.proxies {
		if m.overlaps(o) {
			return fmt.Errorf("mapping %s: port taken by mapping %s: %w", m, o, syscall.EADDRINUSE)
		}
	}
	var p proxy
	var err error
	if m.Protocol == "tcp" {
		p, err = startTCP(mg.ns, m, &mg.cfg)
	} else {
		p, err = startUDP(mg.ns, m, &mg.cfg)
	}
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			if h, ok, herr := kernel.PortHolder(mg.ns, m.Protocol, m.HostIP, m.HostPort); herr == nil && ok {
				return fmt.Errorf("mapping %s: port held by %s: %w", m, h, err)
			}
		}
		return fmt.Errorf("mapping %s: %w", m, err)
	}
	mg.proxies[m] = p
	return nil
}

// Remove stops proxying m: it closes the listening socket and every connection or
// session of m, and returns once they are gone. Removing a mapping that is not
// running is not an error.
func (mg *Manager) Remove(m Mapping) error {
	m, err := m.canonical()
	if err != nil {
		return err
	}
	mg.mu.Lock()
	defer mg.mu.Unlock()
	mg.removeLocked(m)
	return nil
}

func (mg *Manager) removeLocked(m Mapping) {
	if p, ok := mg.proxies[m]; ok {
		p.close()
		delete(mg.proxies, m)
	}
}

// Sync makes the running set of mappings equal to ms: mappings not in ms are removed
// (first, so that their ports are free), the missing ones are added, running ones are
// left alone with their connections. Used to restore the proxies after an agent
// restart, and safe to call repeatedly with the same list. It goes on past a mapping
// that fails and returns all the errors joined.
func (mg *Manager) Sync(ms []Mapping) error {
	var errs []error
	want := make(map[Mapping]bool, len(ms))
	for _, m := range ms {
		c, err := m.canonical()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want[c] = true
	}
	mg.mu.Lock()
	defer mg.mu.Unlock()
	if mg.closed {
		return ErrClosed
	}
	for m := range mg.proxies {
		if !want[m] {
			mg.removeLocked(m)
		}
	}
	add := make([]Mapping, 0, len(want))
	for m := range want {
		add = append(add, m)
	}
	slices.SortFunc(add, compareMappings)
	for _, m := range add {
		if err := mg.addLocked(m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Mappings returns the running mappings, sorted, in canonical form (lower-case
// protocol, IPv4 addresses unmapped).
func (mg *Manager) Mappings() []Mapping {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	out := make([]Mapping, 0, len(mg.proxies))
	for m := range mg.proxies {
		out = append(out, m)
	}
	slices.SortFunc(out, compareMappings)
	return out
}

// Close removes every mapping and releases the namespace handle. Calling it again
// does nothing.
func (mg *Manager) Close() {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	if mg.closed {
		return
	}
	for m := range mg.proxies {
		mg.removeLocked(m)
	}
	mg.closed = true
	mg.ns.Close()
}
