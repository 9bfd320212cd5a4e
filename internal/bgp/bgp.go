// Package bgp is podnet's BGP speaker for the bgp cross-node mode: each agent runs one,
// advertises its node's blocks (next hop = the node's address) and reads back the
// routes its peers advertise, which the agent then installs. By default the nodes form
// a full iBGP mesh; a route reflector or a top-of-rack router is just another peer.
//
// The speaker embeds GoBGP (github.com/osrg/gobgp/v3) as a library; nothing here
// touches the kernel's routing table. What it creates, all in the network namespace of
// the process (not of the calling goroutine: GoBGP opens its sockets from goroutines
// of its own, which may run on any OS thread):
//   - TCP listeners on port 179 (Config.ListenPort) on 0.0.0.0 and ::, unless
//     ListenPort is -1 (on a kernel booted with IPv6 disabled, Start fails
//     otherwise);
//   - one outgoing TCP connection per peer that is not Passive, retried until the
//     session is up.
//
// So a process that uses this package must itself live in the node's namespace: the
// agent does (it runs in the host namespace, which is the node); tests start a helper
// process inside a throwaway namespace instead (see the package's tests).
//
// IPv4 unicast and IPv6 unicast (MP-BGP, over any session) are negotiated with every
// peer. Routes are plain data (Route): Advertise and SetPeers take the complete desired
// set and reconcile GoBGP towards it, so calling them twice with the same input is a
// no-op.
package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	apipb "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// Defaults for Config's zero values.
const (
	DefaultListenPort   = 179
	DefaultHoldTime     = 90 * time.Second
	DefaultConnectRetry = 5 * time.Second
)

// Config is the speaker's own identity and session timers.
type Config struct {
	// ASN is the node's autonomous system number (required). A peer with the same
	// ASN is an iBGP peer, any other an eBGP peer.
	ASN uint32
	// RouterID is the BGP identifier, an IPv4 address unique among the peers
	// (required; by convention the node's IPv4 address).
	RouterID netip.Addr
	// ListenPort is the TCP port accepting sessions: 0 means 179; -1 means do not
	// listen (every session is then dialled by this speaker).
	ListenPort int
	// HoldTime is proposed to every peer (0 means DefaultHoldTime; otherwise at
	// least 3 s, whole seconds). Keepalives go out every HoldTime/3.
	HoldTime time.Duration
	// ConnectRetry bounds one connection attempt and is also how long a session
	// waits after it went down before it tries again (0 means DefaultConnectRetry;
	// whole seconds). GoBGP itself retries a refused connection every 1-2 s.
	ConnectRetry time.Duration
	// Logger receives GoBGP's warnings and errors (nil: slog.Default()).
	Logger *slog.Logger
}

// Peer is a BGP neighbour.
type Peer struct {
	// Name identifies the peer in Route.Peer and Session (default: the address).
	Name string
	// Address is the neighbour's address; sessions run between this address and
	// the local address the kernel picks for it.
	Address netip.Addr
	// ASN is the neighbour's AS: iBGP when equal to Config.ASN, eBGP otherwise.
	ASN uint32
	// Passive peers are never dialled: the speaker waits for them to connect.
	Passive bool
}

// Route is one prefix and the address to forward it to.
type Route struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// Peer is the name of the peer that advertised the route ("" for the
	// speaker's own routes, as passed to Advertise).
	Peer string
}

// Session is the state of the session with one configured peer.
type Session struct {
	Peer Peer
	// State is one of idle, connect, active, opensent, openconfirm, established.
	State string
	// Uptime is how long the session has been established (0 when it is not).
	// GoBGP stamps the start in whole seconds: it is up to a second short.
	Uptime time.Duration
	// Received counts the prefixes the peer advertised to us, Advertised those we
	// advertise to it.
	Received, Advertised int
}

// Established is the State of a session that exchanges routes.
const Established = "established"

// ErrStopped is returned by a Speaker's methods after Stop.
var ErrStopped = errors.New("bgp speaker stopped")

// Speaker is a running BGP speaker. Its methods are safe for concurrent use.
type Speaker struct {
	srv  *server.BgpServer
	cfg  Config
	done chan struct{} // closed by Stop

	mu sync.Mutex // guards peers, advertised and stopped
	// peers are the peers configured in GoBGP, by address.
	peers map[netip.Addr]Peer
	// advertised are the routes handed to GoBGP: prefix -> next hop.
	advertised map[netip.Prefix]netip.Addr
	stopped    bool
}

// Start validates cfg and starts a speaker with no peers and no routes, in the
// process's network namespace. The speaker stops when ctx is done or Stop is called.
func Start(ctx context.Context, cfg Config) (*Speaker, error) {
	cfg, err := cfg.canonical()
	if err != nil {
		return nil, err
	}
	srv := server.NewBgpServer(server.LoggerOption(newLogger(cfg.Logger)))
	// Serve runs GoBGP's event loop. GoBGP v3 offers no way to end it: after Stop
	// it stays parked (one goroutine) until the process exits.
	go srv.Serve()
	if err := srv.StartBgp(ctx, &apipb.StartBgpRequest{Global: globalOf(cfg)}); err != nil {
		// StartBgp keeps the listeners it opened before failing: close them.
		srv.StopBgp(context.Background(), &apipb.StopBgpRequest{})
		return nil, fmt.Errorf("start bgp (as %d, port %d): %w", cfg.ASN, cfg.ListenPort, err)
	}
	s := &Speaker{
		srv:        srv,
		cfg:        cfg,
		done:       make(chan struct{}),
		peers:      map[netip.Addr]Peer{},
		advertised: map[netip.Prefix]netip.Addr{},
	}
	context.AfterFunc(ctx, s.Stop)
	return s, nil
}

// Stop ends every session (with a Cease notification), closes the listeners and
// forgets all routes. It returns once the sessions are closed; calling it again does
// nothing. The speaker's other methods then return ErrStopped. One goroutine of
// GoBGP's stays parked until the process exits (GoBGP v3 cannot end its event loop).
func (s *Speaker) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	close(s.done)
	if err := s.srv.StopBgp(context.Background(), &apipb.StopBgpRequest{}); err != nil {
		s.cfg.Logger.Warn("stop bgp", "err", err)
	}
	s.peers, s.advertised = nil, nil
}

// SetPeers makes peers the exact set of configured peers: new ones are added, those
// not in the list are removed (their sessions end with a Cease notification), and a
// peer whose ASN or Passive flag changed gets a new session; a renamed peer keeps its
// session. Peers are keyed by address: two peers with the same address, or the same
// name, are an error, as is a zero ASN. Calling SetPeers again with the same peers
// does nothing. On error, the peers that could be changed are changed and the
// rest stay as they were.
func (s *Speaker) SetPeers(peers []Peer) error {
	desired, err := canonicalPeers(peers)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrStopped
	}
	plan := planPeers(s.peers, desired)
	ctx := context.Background()
	var errs []error
	for _, p := range plan.Add {
		if err := s.srv.AddPeer(ctx, &apipb.AddPeerRequest{Peer: s.peerOf(p)}); err != nil {
			errs = append(errs, fmt.Errorf("add peer %q (%s): %w", p.Name, p.Address, err))
			continue
		}
		s.peers[p.Address] = p
	}
	for _, p := range plan.Replace {
		// GoBGP's UpdatePeer ignores transport changes (passive mode): delete and add.
		if err := s.srv.DeletePeer(ctx, &apipb.DeletePeerRequest{Address: p.Address.String()}); err != nil {
			errs = append(errs, fmt.Errorf("replace peer %q (%s): %w", p.Name, p.Address, err))
			continue
		}
		delete(s.peers, p.Address)
		if err := s.srv.AddPeer(ctx, &apipb.AddPeerRequest{Peer: s.peerOf(p)}); err != nil {
			errs = append(errs, fmt.Errorf("replace peer %q (%s): %w", p.Name, p.Address, err))
			continue
		}
		s.peers[p.Address] = p
	}
	for _, p := range plan.Rename {
		s.peers[p.Address] = p
	}
	for _, p := range plan.Remove {
		if err := s.srv.DeletePeer(ctx, &apipb.DeletePeerRequest{Address: p.Address.String()}); err != nil {
			errs = append(errs, fmt.Errorf("remove peer %q (%s): %w", p.Name, p.Address, err))
			continue
		}
		delete(s.peers, p.Address)
	}
	return errors.Join(errs...)
}

// Advertise makes routes the exact set of prefixes the speaker advertises to its
// peers, each with its next hop (Route.Peer is ignored): new prefixes are announced,
// a prefix whose next hop changed is announced again (replacing the old path), and
// prefixes not in the list are withdrawn. An IPv4 prefix needs an IPv4 next hop and
// an IPv6 prefix an IPv6 one; prefixes are masked to their length; the same prefix
// twice with different next hops is an error. Calling Advertise again with the same
// routes does nothing. eBGP peers receive the next hop as given, not their session's
// local address.
func (s *Speaker) Advertise(routes []Route) error {
	desired, err := canonicalRoutes(routes)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrStopped
	}
	plan := planRoutes(s.advertised, desired)
	ctx := context.Background()
	var errs []error
	for _, r := range plan.Announce {
		if _, err := s.srv.AddPath(ctx, &apipb.AddPathRequest{TableType: apipb.TableType_GLOBAL, Path: pathOf(r)}); err != nil {
			errs = append(errs, fmt.Errorf("announce %s via %s: %w", r.Prefix, r.NextHop, err))
			continue
		}
		s.advertised[r.Prefix] = r.NextHop
	}
	for _, r := range plan.Withdraw {
		if err := s.srv.DeletePath(ctx, &apipb.DeletePathRequest{TableType: apipb.TableType_GLOBAL, Family: familyOf(r.Prefix), Path: pathOf(r)}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", r.Prefix, err))
			continue
		}
		delete(s.advertised, r.Prefix)
	}
	return errors.Join(errs...)
}

// Learned returns the best path to every prefix that peers advertise, IPv4 then IPv6,
// each sorted by prefix. A prefix for which the speaker's own route (Advertise) is
// the best path is not included. It returns an empty list when nothing is learned.
func (s *Speaker) Learned() ([]Route, error) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil, ErrStopped
	}
	names := make(map[netip.Addr]string, len(s.peers))
	for a, p := range s.peers {
		names[a] = p.Name
	}
	s.mu.Unlock()

	var routes []Route
	var errs []error
	for _, fam := range families {
		err := s.srv.ListPath(context.Background(), &apipb.ListPathRequest{TableType: apipb.TableType_GLOBAL, Family: fam}, func(d *apipb.Destination) {
			for _, p := range d.Paths {
				if !p.Best {
					continue
				}
				r, ok, err := learnedRoute(p, names)
				if err != nil {
					errs = append(errs, fmt.Errorf("destination %s: %w", d.Prefix, err))
				} else if ok {
					routes = append(routes, r)
				}
			}
		})
		if err != nil {
			return nil, fmt.Errorf("list paths: %w", err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sortRoutes(routes)
	return routes, nil
}

// Watch calls fn with the full result of Learned, once at the start and then each
// time it changes, until ctx is done (Watch then returns ctx.Err()) or the speaker
// stops (ErrStopped). Calls are sequential, on Watch's goroutine, and coalesced: a
// burst of updates yields one call with the set after the burst, and a change that
// is undone before fn could see it yields none. While fn runs, changes queue up.
func (s *Speaker) Watch(ctx context.Context, fn func([]Route)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	// Best-path changes and session state changes both mean "look again": the
	// event's content does not matter, the RIB is read afresh.
	req := &apipb.WatchEventRequest{
		Peer:  &apipb.WatchEventRequest_Peer{},
		Table: &apipb.WatchEventRequest_Table{Filters: []*apipb.WatchEventRequest_Table_Filter{{Type: apipb.WatchEventRequest_Table_Filter_BEST}}},
	}
	if err := s.srv.WatchEvent(ctx, req, func(*apipb.WatchEventResponse) { poke() }); err != nil {
		return fmt.Errorf("watch bgp events: %w", err)
	}
	poke()
	var last []Route
	first := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return ErrStopped
		case <-kick:
		}
		routes, err := s.Learned()
		if err != nil {
			return err
		}
		if !first && slices.Equal(routes, last) {
			continue
		}
		first, last = false, routes
		fn(slices.Clone(routes))
	}
}

// Sessions returns the state of the session with every configured peer, sorted by
// peer name (an empty list without peers).
func (s *Speaker) Sessions() ([]Session, error) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil, ErrStopped
	}
	peers := make(map[netip.Addr]Peer, len(s.peers))
	for a, p := range s.peers {
		peers[a] = p
	}
	s.mu.Unlock()

	var out []Session
	now := time.Now()
	err := s.srv.ListPeer(context.Background(), &apipb.ListPeerRequest{EnableAdvertised: true}, func(p *apipb.Peer) {
		addr, err := netip.ParseAddr(p.GetState().GetNeighborAddress())
		if err != nil {
			return
		}
		if peer, ok := peers[addr]; ok {
			out = append(out, sessionOf(peer, p, now))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	slices.SortFunc(out, func(a, b Session) int { return cmp.Compare(a.Peer.Name, b.Peer.Name) })
	return out, nil
}

// peerOf is GoBGP's configuration of peer p, with the speaker's timers.
func (s *Speaker) peerOf(p Peer) *apipb.Peer {
	return peerOf(p, s.cfg)
}
