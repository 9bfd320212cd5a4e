package bgp

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	apipb "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// received makes a path as GoBGP's RIB lists one learned from the neighbour from.
func received(r Route, from string) *apipb.Path {
	p := pathOf(r)
	p.NeighborIp = from
	p.Best = true
	return p
}

func TestPathRoundTrip(t *testing.T) {
	names := map[netip.Addr]string{addr("192.168.77.11"): "b"}
	for _, tc := range []struct {
		route Route
		from  string
		want  Route
	}{
		{
			Route{Prefix: prefix("10.244.1.0/26"), NextHop: addr("192.168.77.11")}, "192.168.77.11",
			Route{Prefix: prefix("10.244.1.0/26"), NextHop: addr("192.168.77.11"), Peer: "b"},
		},
		{
			Route{Prefix: prefix("fd00:244:1::/64"), NextHop: addr("fd00:77::11")}, "192.168.77.11",
			Route{Prefix: prefix("fd00:244:1::/64"), NextHop: addr("fd00:77::11"), Peer: "b"},
		},
		{ // a neighbour we have no name for (a route reflector's client, say)
			Route{Prefix: prefix("198.51.100.0/24"), NextHop: addr("192.168.77.12")}, "192.168.77.13",
			Route{Prefix: prefix("198.51.100.0/24"), NextHop: addr("192.168.77.12"), Peer: "192.168.77.13"},
		},
	} {
		got, ok, err := learnedRoute(received(tc.route, tc.from), names)
		if err != nil || !ok || got != tc.want {
			t.Errorf("%v from %s: got %v, %v, %v; want %v", tc.route, tc.from, got, ok, err, tc.want)
		}
	}

	// Our own paths and withdrawals are not learned routes.
	own := Route{Prefix: prefix("10.244.0.0/26"), NextHop: addr("192.168.77.10")}
	for _, from := range []string{"", "<nil>"} {
		if _, ok, err := learnedRoute(received(own, from), names); ok || err != nil {
			t.Errorf("local path (neighbour %q): got ok=%v, %v", from, ok, err)
		}
	}
	w := received(own, "192.168.77.11")
	w.IsWithdraw = true
	if _, ok, err := learnedRoute(w, names); ok || err != nil {
		t.Errorf("withdrawal: got ok=%v, %v", ok, err)
	}

	// A path without a next hop is an error, not a route to nowhere.
	broken := received(own, "192.168.77.11")
	broken.Pattrs = broken.Pattrs[:1]
	if _, _, err := learnedRoute(broken, names); err == nil || !strings.Contains(err.Error(), "10.244.0.0/26: next hop") {
		t.Errorf("no next hop: got %v", err)
	}
}

func TestPathOfAttributes(t *testing.T) {
	kinds := func(attrs []*anypb.Any) string {
		var s []string
		for _, a := range attrs {
			s = append(s, string(a.MessageName().Name()))
		}
		return strings.Join(s, " ")
	}
	p4 := pathOf(Route{Prefix: prefix("10.244.0.0/26"), NextHop: addr("192.168.77.10")})
	if got, want := kinds(p4.Pattrs), "OriginAttribute NextHopAttribute"; got != want {
		t.Errorf("IPv4 attributes: got %s, want %s", got, want)
	}
	if p4.Family.Afi != apipb.Family_AFI_IP || p4.Family.Safi != apipb.Family_SAFI_UNICAST {
		t.Errorf("IPv4 family: got %v", p4.Family)
	}
	p6 := pathOf(Route{Prefix: prefix("fd00:244::/64"), NextHop: addr("fd00:77::10")})
	if got, want := kinds(p6.Pattrs), "OriginAttribute MpReachNLRIAttribute"; got != want {
		t.Errorf("IPv6 attributes: got %s, want %s", got, want)
	}
	if p6.Family.Afi != apipb.Family_AFI_IP6 {
		t.Errorf("IPv6 family: got %v", p6.Family)
	}
}

func TestPeerOf(t *testing.T) {
	cfg, err := Config{ASN: 64512, RouterID: addr("192.168.77.10"), HoldTime: 9 * time.Second, ConnectRetry: time.Second}.canonical()
	if err != nil {
		t.Fatal(err)
	}
	p := peerOf(Peer{Name: "tor", Address: addr("192.168.77.1"), ASN: 65001, Passive: true}, cfg)
	if p.Conf.NeighborAddress != "192.168.77.1" || p.Conf.PeerAsn != 65001 || p.Conf.Description != "tor" || !p.Transport.PassiveMode {
		t.Errorf("conf: got %v, transport %v", p.Conf, p.Transport)
	}
	tm := p.Timers.Config
	if tm.HoldTime != 9 || tm.KeepaliveInterval != 3 || tm.ConnectRetry != 1 || tm.IdleHoldTimeAfterReset != 1 {
		t.Errorf("timers: got %v", tm)
	}
	if len(p.AfiSafis) != 2 || p.AfiSafis[0].Config.Family.Afi != apipb.Family_AFI_IP || p.AfiSafis[1].Config.Family.Afi != apipb.Family_AFI_IP6 {
		t.Errorf("families: got %v", p.AfiSafis)
	}
}

func TestSessionOf(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	peer := Peer{Name: "b", Address: addr("192.168.77.11"), ASN: 64512}
	gobgpPeer := func(state apipb.PeerState_SessionState, uptime *timestamppb.Timestamp) *apipb.Peer {
		return &apipb.Peer{
			State:  &apipb.PeerState{SessionState: state, NeighborAddress: "192.168.77.11"},
			Timers: &apipb.Timers{State: &apipb.TimersState{Uptime: uptime}},
			AfiSafis: []*apipb.AfiSafi{
				{State: &apipb.AfiSafiState{Received: 2, Advertised: 1}},
				{State: &apipb.AfiSafiState{Received: 1, Advertised: 3}},
			},
		}
	}
	got := sessionOf(peer, gobgpPeer(apipb.PeerState_ESTABLISHED, timestamppb.New(now.Add(-42*time.Second))), now)
	want := Session{Peer: peer, State: "established", Uptime: 42 * time.Second, Received: 3, Advertised: 4}
	if got != want {
		t.Errorf("established: got %+v, want %+v", got, want)
	}
	// A session that went down keeps GoBGP's last uptime stamp: not ours to report.
	got = sessionOf(peer, gobgpPeer(apipb.PeerState_ACTIVE, timestamppb.New(now.Add(-42*time.Second))), now)
	if got.State != "active" || got.Uptime != 0 {
		t.Errorf("active: got %+v", got)
	}
	for state, name := range map[apipb.PeerState_SessionState]string{
		apipb.PeerState_IDLE: "idle", apipb.PeerState_CONNECT: "connect", apipb.PeerState_OPENSENT: "opensent", apipb.PeerState_OPENCONFIRM: "openconfirm",
	} {
		if got := sessionOf(peer, gobgpPeer(state, nil), now).State; got != name {
			t.Errorf("state %v: got %q, want %q", state, got, name)
		}
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l := newLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Info("peer up", gobgplog.Fields{"Key": "192.168.77.11"})
	l.Debug("try to connect", nil)
	l.Warn("cannot set TTL (255) for TCPListener", gobgplog.Fields{"Key": "0.0.0.0:179"})
	if buf.Len() != 0 {
		t.Errorf("info, debug and demoted warnings at GoBGP's default level: got %q", buf.String())
	}
	l.Warn("cannot set TTL", gobgplog.Fields{"Topic": "Peer", "Key": "192.168.77.11", "Err": "boom"})
	want := `level=WARN msg="cannot set TTL" lib=gobgp Err=boom Key=192.168.77.11 Topic=Peer`
	if got := strings.TrimSpace(buf.String()); !strings.HasSuffix(got, want) {
		t.Errorf("warn: got %q, want suffix %q", got, want)
	}
	buf.Reset()
	l.SetLevel(gobgplog.DebugLevel)
	if l.GetLevel() != gobgplog.DebugLevel {
		t.Errorf("level: got %v", l.GetLevel())
	}
	l.Debug("try to connect", nil)
	if !strings.Contains(buf.String(), `level=DEBUG msg="try to connect"`) {
		t.Errorf("debug after SetLevel: got %q", buf.String())
	}
	defer func() {
		if recover() == nil {
			t.Error("Fatal did not panic")
		}
	}()
	l.Fatal("code logic bug", nil)
}
