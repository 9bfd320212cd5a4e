package bgp

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	apipb "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/config/oc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// This file turns podnet's types into GoBGP's API messages and back: pure functions.

var (
	familyIPv4 = &apipb.Family{Afi: apipb.Family_AFI_IP, Safi: apipb.Family_SAFI_UNICAST}
	familyIPv6 = &apipb.Family{Afi: apipb.Family_AFI_IP6, Safi: apipb.Family_SAFI_UNICAST}
	// families are the address families the speaker negotiates and reads.
	families = []*apipb.Family{familyIPv4, familyIPv6}
)

func familyOf(p netip.Prefix) *apipb.Family {
	if p.Addr().Is4() {
		return familyIPv4
	}
	return familyIPv6
}

// globalOf is GoBGP's global configuration for cfg (canonical).
func globalOf(cfg Config) *apipb.Global {
	return &apipb.Global{
		Asn:        cfg.ASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: int32(cfg.ListenPort),
		Families: []uint32{
			uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV4_UNICAST]),
			uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV6_UNICAST]),
		},
	}
}

// peerOf is GoBGP's configuration of peer p (canonical), with cfg's timers.
func peerOf(p Peer, cfg Config) *apipb.Peer {
	retry := uint64(cfg.ConnectRetry / time.Second)
	hold := uint64(cfg.HoldTime / time.Second)
	return &apipb.Peer{
		Conf: &apipb.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			Description:     p.Name,
		},
		Timers: &apipb.Timers{Config: &apipb.TimersConfig{
			ConnectRetry:      retry,
			HoldTime:          hold,
			KeepaliveInterval: max(hold/3, 1),
			// GoBGP waits 30 s by default before it reconnects a session that
			// went down: too slow for a pod network.
			IdleHoldTimeAfterReset: retry,
		}},
		Transport: &apipb.Transport{PassiveMode: p.Passive},
		AfiSafis: []*apipb.AfiSafi{
			{Config: &apipb.AfiSafiConfig{Family: familyIPv4, Enabled: true}},
			{Config: &apipb.AfiSafiConfig{Family: familyIPv6, Enabled: true}},
		},
	}
}

// pathOf is GoBGP's path for one of our routes (canonical): origin IGP, and the next
// hop in a NEXT_HOP attribute (IPv4) or an MP_REACH_NLRI one (IPv6).
func pathOf(r Route) *apipb.Path {
	fam := familyOf(r.Prefix)
	nlri := mustAny(&apipb.IPAddressPrefix{PrefixLen: uint32(r.Prefix.Bits()), Prefix: r.Prefix.Addr().String()})
	attrs := []*anypb.Any{mustAny(&apipb.OriginAttribute{Origin: 0})}
	if r.Prefix.Addr().Is4() {
		attrs = append(attrs, mustAny(&apipb.NextHopAttribute{NextHop: r.NextHop.String()}))
	} else {
		attrs = append(attrs, mustAny(&apipb.MpReachNLRIAttribute{Family: fam, NextHops: []string{r.NextHop.String()}, Nlris: []*anypb.Any{nlri}}))
	}
	return &apipb.Path{Family: fam, Nlri: nlri, Pattrs: attrs}
}

// mustAny wraps a GoBGP API message; it cannot fail for a message type compiled in.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("bgp: marshal %T: %v", m, err))
	}
	return a
}

// learnedRoute turns a path of GoBGP's RIB into a Route, naming the neighbour that
// sent it from names (its address when not there). ok is false for a path that was
// not learned from a peer: one of our own, or a withdrawal.
func learnedRoute(p *apipb.Path, names map[netip.Addr]string) (r Route, ok bool, err error) {
	if p.IsWithdraw || p.IsNexthopInvalid {
		return Route{}, false, nil
	}
	// GoBGP prints a local path's source as "" or "<nil>": no address, not learned.
	from, err := netip.ParseAddr(p.NeighborIp)
	if err != nil {
		return Route{}, false, nil
	}
	var nlri apipb.IPAddressPrefix
	if err := p.GetNlri().UnmarshalTo(&nlri); err != nil {
		return Route{}, false, fmt.Errorf("nlri: %w", err)
	}
	addr, err := netip.ParseAddr(nlri.Prefix)
	if err != nil {
		return Route{}, false, fmt.Errorf("nlri prefix %q: %w", nlri.Prefix, err)
	}
	pfx, err := addr.Prefix(int(nlri.PrefixLen))
	if err != nil {
		return Route{}, false, fmt.Errorf("nlri %s/%d: %w", nlri.Prefix, nlri.PrefixLen, err)
	}
	var nh string
	for _, a := range p.Pattrs {
		switch {
		case a.MessageIs(&apipb.NextHopAttribute{}):
			var v apipb.NextHopAttribute
			if err := a.UnmarshalTo(&v); err != nil {
				return Route{}, false, fmt.Errorf("%s: next hop: %w", pfx, err)
			}
			nh = v.NextHop
		case a.MessageIs(&apipb.MpReachNLRIAttribute{}):
			var v apipb.MpReachNLRIAttribute
			if err := a.UnmarshalTo(&v); err != nil {
				return Route{}, false, fmt.Errorf("%s: mp_reach_nlri: %w", pfx, err)
			}
			// The first is the global next hop; a link-local one may follow.
			if len(v.NextHops) > 0 {
				nh = v.NextHops[0]
			}
		}
	}
	hop, err := netip.ParseAddr(nh)
	if err != nil {
		return Route{}, false, fmt.Errorf("%s: next hop %q: %w", pfx, nh, err)
	}
	if pfx.Addr().Is4() {
		hop = hop.Unmap()
	}
	name, found := names[from.Unmap()]
	if !found {
		name = from.String()
	}
	return Route{Prefix: pfx, NextHop: hop, Peer: name}, true, nil
}

// sessionOf turns GoBGP's view of a peer into a Session at time now.
func sessionOf(peer Peer, p *apipb.Peer, now time.Time) Session {
	s := Session{Peer: peer, State: strings.ToLower(p.GetState().GetSessionState().String())}
	if s.State == Established {
		if up := p.GetTimers().GetState().GetUptime(); up != nil && up.GetSeconds() > 0 {
			s.Uptime = max(now.Sub(up.AsTime()), 0)
		}
	}
	for _, af := range p.GetAfiSafis() {
		s.Received += int(af.GetState().GetReceived())
		s.Advertised += int(af.GetState().GetAdvertised())
	}
	return s
}
