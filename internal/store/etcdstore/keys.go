package etcdstore

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// layout names the keys of one store: every key starts with the store's prefix.
type layout struct {
	prefix string
}

// span is one key, or with prefix set every key that starts with key.
type span struct {
	key    string
	prefix bool
}

// contains reports whether key lies in s.
func (s span) contains(key string) bool {
	if s.prefix {
		return strings.HasPrefix(key, s.key)
	}
	return key == s.key
}

// covers reports whether every key of o lies in s.
func (s span) covers(o span) bool {
	if !s.prefix {
		return s == o
	}
	return strings.HasPrefix(o.key, s.key)
}

// collection is a set of keys listed with one range read (every key under prefix),
// with the generation keys that each deletion of one of its keys bumps. A range
// compare on prefix sees every key that was created or changed; the generations
// make up for the keys that were deleted, which a range compare cannot see.
//
// Collections nest consistently: when the prefix of a collection lies under the
// prefix of another, the generations of the outer one cover those of the inner one
// (endpoints/ with gen/endpoints/* covers endpoints/NET/ with gen/endpoints/NET).
type collection struct {
	prefix string
	gens   []span
}

// escape makes s usable as one segment of a key: '%', '/', space, control characters
// and bytes outside ASCII become %XX. It is injective, so distinct names give
// distinct keys, but not order-preserving: listings are sorted after decoding.
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '%' || c == '/' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// unescape reverses escape.
func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("key segment %q: truncated escape", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("key segment %q: bad escape", s)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// segments splits the part of key after prefix into n unescaped segments.
func segments(key, prefix string, n int) ([]string, error) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return nil, fmt.Errorf("key %q is not under %q", key, prefix)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != n {
		return nil, fmt.Errorf("key %q: want %d segments after %q", key, n, prefix)
	}
	for i, p := range parts {
		s, err := unescape(p)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		parts[i] = s
	}
	return parts, nil
}

// Generation keys. gen/networks is bumped by every DeleteNetwork and never deleted;
// the per-network ones are deleted with their network, which bumps gen/networks, so
// every collection of a network also compares gen/networks. The ports generation is
// per node, so that a release on one node does not conflict with the port checks of
// another; it stays when the node is deleted (a key per node name ever used).
func (l layout) networksGen() span { return span{key: l.prefix + "gen/networks"} }
func (l layout) endpointsGen(nw string) span {
	return span{key: l.prefix + "gen/endpoints/" + escape(nw)}
}
func (l layout) allocationsGen(nw string) span {
	return span{key: l.prefix + "gen/allocations/" + escape(nw)}
}
func (l layout) portsGen(node string) span {
	return span{key: l.prefix + "gen/ports/" + escape(node)}
}
func (l layout) servicesGen() span { return span{key: l.prefix + "gen/services"} }
func (l layout) networkPoliciesGen() span {
	return span{key: l.prefix + "gen/networkpolicies"}
}
func (l layout) namespacesGen() span { return span{key: l.prefix + "gen/namespaces"} }
func (l layout) podsGen() span       { return span{key: l.prefix + "gen/pods"} }
func (l layout) nodesGen() span      { return span{key: l.prefix + "gen/nodes"} }
func (l layout) bgpPeersGen() span   { return span{key: l.prefix + "gen/bgppeers"} }
func (l layout) blocksGen(nw string) span {
	return span{key: l.prefix + "gen/blocks/" + escape(nw)}
}

func (l layout) networks() collection {
	return collection{prefix: l.prefix + "networks/", gens: []span{l.networksGen()}}
}

func (l layout) networkKey(name string) string { return l.prefix + "networks/" + escape(name) }

// endpoints is the collection of the endpoints of nw, of all networks when nw is "".
func (l layout) endpoints(nw string) collection {
	if nw == "" {
		return collection{prefix: l.prefix + "endpoints/",
			gens: []span{{key: l.prefix + "gen/endpoints/", prefix: true}, l.networksGen()}}
	}
	return collection{prefix: l.prefix + "endpoints/" + escape(nw) + "/",
		gens: []span{l.endpointsGen(nw), l.networksGen()}}
}

func (l layout) endpointKey(nw, containerID, ifName string) string {
	return l.endpoints(nw).prefix + escape(containerID) + "/" + escape(ifName)
}

func (l layout) allocations(nw string) collection {
	return collection{prefix: l.prefix + "allocations/" + escape(nw) + "/",
		gens: []span{l.allocationsGen(nw), l.networksGen()}}
}

func (l layout) allocationKey(nw string, a netip.Addr) string {
	return l.allocations(nw).prefix + escape(a.String())
}

// owners is the index of the allocations of nw held by owner. Its deletions bump the
// allocations generation of nw: they happen together with an allocation's.
func (l layout) owners(nw, owner string) collection {
	return collection{prefix: l.prefix + "owners/" + escape(nw) + "/" + escape(owner) + "/",
		gens: []span{l.allocationsGen(nw), l.networksGen()}}
}

func (l layout) ownerKey(nw, owner string, a netip.Addr) string {
	return l.owners(nw, owner).prefix + escape(a.String())
}

// ownersOf is the prefix of the whole owner index of nw.
func (l layout) ownersOf(nw string) string { return l.prefix + "owners/" + escape(nw) + "/" }

// cursors is never listed; it groups the cursor keys of nw for DeleteNetwork and for
// the compares.
func (l layout) cursors(nw string) collection {
	return collection{prefix: l.prefix + "cursors/" + escape(nw) + "/", gens: []span{l.networksGen()}}
}

func (l layout) cursorKey(nw string, subnet netip.Prefix) string {
	return l.cursors(nw).prefix + escape(subnet.Masked().String())
}

// ports is the collection of the owners of proto port on node. A store written
// before ports were per node has keys ports/PROTO/PORT/HOSTIP: one segment fewer, so
// no collection lists them.
func (l layout) ports(node, proto string, port uint16) collection {
	return collection{prefix: l.prefix + "ports/" + escape(node) + "/" + escape(proto) + "/" + strconv.Itoa(int(port)) + "/",
		gens: []span{l.portsGen(node)}}
}

// portHost is the last segment of a port key: the host address, "*" for all.
func portHost(hostIP netip.Addr) string {
	if !hostIP.IsValid() {
		return "*"
	}
	return escape(hostIP.String())
}

func parsePortHost(s string) (netip.Addr, error) {
	if s == "*" {
		return netip.Addr{}, nil
	}
	return netip.ParseAddr(s)
}

func (l layout) portKey(node, proto string, port uint16, hostIP netip.Addr) string {
	return l.ports(node, proto, port).prefix + portHost(hostIP)
}

// services is the collection of the services of namespace, of all when it is "".
func (l layout) services(namespace string) collection {
	c := collection{prefix: l.prefix + "services/", gens: []span{l.servicesGen()}}
	if namespace != "" {
		c.prefix += escape(namespace) + "/"
	}
	return c
}

func (l layout) serviceKey(namespace, name string) string {
	return l.services(namespace).prefix + escape(name)
}

// validService refuses what bolt refuses: an empty namespace or name, or a NUL in one.
func validService(namespace, name string) error {
	if namespace == "" || name == "" || strings.ContainsRune(namespace, 0) || strings.ContainsRune(name, 0) {
		return errors.New("empty or NUL in namespace or name")
	}
	return nil
}

// networkPolicies is the collection of the policies of namespace, of all when it is "".
func (l layout) networkPolicies(namespace string) collection {
	c := collection{prefix: l.prefix + "networkpolicies/", gens: []span{l.networkPoliciesGen()}}
	if namespace != "" {
		c.prefix += escape(namespace) + "/"
	}
	return c
}

func (l layout) networkPolicyKey(namespace, name string) string {
	return l.networkPolicies(namespace).prefix + escape(name)
}

func (l layout) namespaces() collection {
	return collection{prefix: l.prefix + "namespaces/", gens: []span{l.namespacesGen()}}
}

func (l layout) namespaceKey(name string) string { return l.namespaces().prefix + escape(name) }

// pods is the collection of the pod records of namespace, of all when it is "".
func (l layout) pods(namespace string) collection {
	c := collection{prefix: l.prefix + "pods/", gens: []span{l.podsGen()}}
	if namespace != "" {
		c.prefix += escape(namespace) + "/"
	}
	return c
}

func (l layout) podKey(namespace, name string) string {
	return l.pods(namespace).prefix + escape(name)
}

func (l layout) nodes() collection {
	return collection{prefix: l.prefix + "nodes/", gens: []span{l.nodesGen()}}
}

func (l layout) nodeKey(name string) string { return l.nodes().prefix + escape(name) }

// blocks is the collection of the blocks of nw, of all networks when nw is "".
func (l layout) blocks(nw string) collection {
	if nw == "" {
		return collection{prefix: l.prefix + "blocks/",
			gens: []span{{key: l.prefix + "gen/blocks/", prefix: true}, l.networksGen()}}
	}
	return collection{prefix: l.prefix + "blocks/" + escape(nw) + "/",
		gens: []span{l.blocksGen(nw), l.networksGen()}}
}

func (l layout) blockKey(nw string, p netip.Prefix) string {
	return l.blocks(nw).prefix + escape(p.String())
}

// bgpConfig is the one key of the cluster's BGP settings, never deleted; a collection
// of its own, never listed.
func (l layout) bgpConfig() collection { return collection{prefix: l.prefix + "bgpconfig"} }

func (l layout) bgpConfigKey() string { return l.bgpConfig().prefix }

func (l layout) bgpPeers() collection {
	return collection{prefix: l.prefix + "bgppeers/", gens: []span{l.bgpPeersGen()}}
}

func (l layout) bgpPeerKey(name string) string { return l.bgpPeers().prefix + escape(name) }

// alive holds a key per live node, attached to the node's lease; transactions never
// read it.
func (l layout) alive() string { return l.prefix + "alive/" }

func (l layout) aliveKey(node string) string { return l.alive() + escape(node) }
