package trace

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Input is everything a report is made of. Build turns it into a Report without asking
// the kernel: recorded inputs give the same report.
type Input struct {
	Flow Flow `json:"flow"`
	// Node names the node namespace the trace ran in (its path), for the report.
	Node      string  `json:"node,omitempty"`
	Events    []Event `json:"events,omitempty"`
	Catalog   Catalog `json:"catalog"`
	Conntrack []Conn  `json:"conntrack,omitempty"`
	Probes    []Probe `json:"probes,omitempty"`
	Routes    []Route `json:"routes,omitempty"`
	// Lost counts the times the kernel dropped trace events for lack of buffer space.
	Lost int `json:"lost,omitempty"`
}

// Report is the path of the flow's packets through the node, as `podnet trace` prints it.
type Report struct {
	Flow   Flow         `json:"flow"`
	Node   string       `json:"node,omitempty"`
	Probes []Probe      `json:"probes,omitempty"`
	Routes []Route      `json:"routes,omitempty"` // the source's route decision
	Flows  []FlowTrace  `json:"flows"`
	Lost   int          `json:"lostEvents,omitempty"`
	Result string       `json:"result"` // one sentence for the whole trace
	wanted []routeQuery // node routes Build would have used, missing from Input.Routes
}

// FlowTrace is one connection of the flow (one conntrack entry): its packets, in both
// directions.
type FlowTrace struct {
	// ConntrackID is the kernel's id of the connection (0 when unknown: a kernel before
	// 6.16 does not say, and packets are then grouped by addresses and ports).
	ConntrackID uint32 `json:"conntrackID,omitempty"`
	Header      Header `json:"header"` // the first packet, as it came to the node
	Probe       int    `json:"probe,omitempty"`
	Conntrack   *Conn  `json:"conntrack,omitempty"`
	// NAT lists the translations conntrack made for the connection.
	NAT     []string `json:"nat,omitempty"`
	Packets []Packet `json:"packets"`
	SameAs  int      `json:"sameAs,omitempty"` // the flow (1-based) whose packets took the same path
	Outcome string   `json:"outcome"`
	Dropped bool     `json:"dropped,omitempty"`
}

// Packet is one packet's way through the hooks of the node.
type Packet struct {
	Direction string `json:"direction"` // original or reply
	CtState   string `json:"ctState,omitempty"`
	Header    Header `json:"header"`
	Hooks     []Hook `json:"hooks"`
	Fate      Fate   `json:"fate"`
	SameAs    int    `json:"sameAs,omitempty"` // the packet (1-based) of the flow that took the same path
}

// Hook is what a packet met at one netfilter hook of one family (bridge, ip, ip6).
type Hook struct {
	Family string       `json:"family"`
	Hook   string       `json:"hook"`
	In     string       `json:"in,omitempty"`
	Out    string       `json:"out,omitempty"`
	Header Header       `json:"header"`
	Chains []ChainVisit `json:"chains,omitempty"`
	// Leaves is the packet as it came out of the hook, when a chain of the hook changed
	// it (NAT).
	Leaves *Header `json:"leaves,omitempty"`
	// Passed is true when the packet came out of the hook (accepted by all its chains).
	Passed bool `json:"passed"`
}

// ChainVisit is one base chain a packet went through, with the chains it jumped to.
type ChainVisit struct {
	Table    string `json:"table"` // "inet podnet"
	Chain    string `json:"chain"`
	Type     string `json:"type,omitempty"`
	Priority int32  `json:"priority"`
	Steps    []Step `json:"steps"`
	Verdict  string `json:"verdict"`
	// Header is set when the packet differs here from how it entered the hook (an
	// earlier chain translated it).
	Header *Header `json:"header,omitempty"`
}

// Step is one trace event of a chain visit.
type Step struct {
	Chain   string `json:"chain"`
	Type    string `json:"type"` // rule, return, policy
	Handle  uint64 `json:"handle,omitempty"`
	Rule    string `json:"rule,omitempty"`
	Comment string `json:"comment,omitempty"`
	Verdict string `json:"verdict"`
}

// Fate is where a packet ended.
type Fate struct {
	// Verdict is dropped, left (through an interface), delivered (to the node itself),
	// stolen, or lost (not seen after some hook).
	Verdict string `json:"verdict"`
	Hook    string `json:"hook,omitempty"`  // "ip forward"
	Table   string `json:"table,omitempty"` // of the dropping rule or policy
	Chain   string `json:"chain,omitempty"`
	Handle  uint64 `json:"handle,omitempty"`
	Rule    string `json:"rule,omitempty"`
	Route   *Route `json:"route,omitempty"` // the node's route decision, for a packet lost after prerouting
	Detail  string `json:"detail"`
}

// routeQuery is a node route decision that explains a fate.
type routeQuery struct {
	dst, src netip.Addr // src zero: the node's own choice
	iif      string     // "": a packet the node sends
}

// traversal is the events of one packet in one base chain: the kernel sends the packet's
// headers, interfaces and conntrack view with the first.
type traversal struct {
	id                         uint32
	family, nfproto, table, bc string // bc: the base chain
	events                     []Event
	hdr                        Header
	hdrOK                      bool
	ct                         *CtInfo
	iif, oif                   int
	ours, marked               bool
	hook                       string
	key                        string // the flow it belongs to
	dir                        string
}

// rank orders the hooks a packet goes through: a hook of lower rank than the last one
// starts a new packet. The bridge family's input comes between the inet prerouting and
// forward hooks of a routed packet (br_netfilter runs the inet prerouting hooks from the
// bridge's prerouting), its output after the inet postrouting of a packet sent out of a
// bridge.
func (t *traversal) rank() int {
	if t.family == "bridge" {
		switch t.hook {
		case "input":
			return 1
		case "output":
			return 3
		}
	}
	switch t.hook {
	case "ingress":
		return -1
	case "prerouting", "output":
		return 0
	case "input", "forward":
		return 2
	case "postrouting":
		return 3
	case "egress":
		return 4
	}
	return 0
}

// Build makes the report of in.
func Build(in Input) Report {
	r := Report{Flow: in.Flow, Node: in.Node, Probes: in.Probes, Lost: in.Lost}
	for _, rt := range in.Routes {
		if rt.Namespace != "node" {
			r.Routes = append(r.Routes, rt)
		}
	}
	travs := traversals(in.Events, &in.Catalog)
	assignFlows(travs, in.Flow)
	var keys []string
	byKey := map[string][]*traversal{}
	for _, t := range travs {
		if _, ok := byKey[t.key]; !ok {
			keys = append(keys, t.key)
		}
		byKey[t.key] = append(byKey[t.key], t)
	}
	var sigs []string
	for _, k := range keys {
		ts := byKey[k]
		if !slices.ContainsFunc(ts, func(t *traversal) bool { return t.marked }) {
			continue // another trace's packets, which our rules did not mark
		}
		ft := buildFlow(ts, &in, &r)
		sig := flowSignature(ft)
		if i := slices.Index(sigs, sig); i >= 0 {
			ft.SameAs = i + 1
		}
		sigs = append(sigs, sig)
		r.Flows = append(r.Flows, ft)
	}
	r.Result = result(&r, in)
	return r
}

// traversals cuts events into traversals of base chains.
func traversals(events []Event, cat *Catalog) []*traversal {
	var out []*traversal
	cur := map[uint32]*traversal{}
	for _, e := range events {
		t := cur[e.ID]
		if e.HasPacket || t == nil || t.table != e.Table || t.family != e.Family {
			t = &traversal{id: e.ID, family: e.Family, nfproto: e.NFProto, table: e.Table, bc: e.Chain, iif: e.IIF, oif: e.OIF, ct: e.Ct}
			t.hdr, t.hdrOK = ParseHeader(e.Network, e.Transport)
			t.ours = e.Table == TableName && (e.Family == "inet" || e.Family == "bridge")
			if t.ours {
				t.hook = ourHook(e.Chain)
			} else if ch, ok := cat.chain(e.Family, e.Table, e.Chain); ok {
				t.hook = ch.Hook
			}
			if t.hook == "" {
				t.hook = "?"
			}
			cur[e.ID] = t
			out = append(out, t)
		}
		if t.ours && e.Type == TypeRule && e.Handle != 0 && strings.HasPrefix(e.Chain, "mark-") {
			t.marked = true
		}
		t.events = append(t.events, e)
	}
	return out
}

// ourHook is the hook of one of the marker's chains.
func ourHook(chain string) string {
	for _, h := range []string{"prerouting", "input", "forward", "output", "postrouting"} {
		if strings.HasSuffix(chain, "-"+h) {
			return h
		}
	}
	return "?"
}

// assignFlows gives each traversal the key of its connection: its conntrack id, or for a
// traversal before conntrack (raw priority), the id of the next traversal of the same
// packet, or of a traversal of the same addresses and ports; else the addresses and
// ports themselves.
func assignFlows(travs []*traversal, f Flow) {
	for _, t := range travs {
		switch {
		case t.ct != nil && t.ct.ID != 0:
			t.key, t.dir = "ct:"+strconv.FormatUint(uint64(t.ct.ID), 10), t.ct.Direction
		case t.hdrOK && f.matches(t.hdr):
			t.dir = "original"
		case t.hdrOK && f.matches(t.hdr.Reversed()):
			t.dir = "reply"
		}
	}
	for i, t := range travs {
		if t.key != "" {
			continue
		}
		for _, u := range travs[i+1:] {
			if u.id == t.id && u.key != "" && (t.dir == "" || t.dir == u.dir) {
				t.key = u.key
				break
			}
		}
		if t.key != "" || !t.hdrOK {
			continue
		}
		for _, u := range travs {
			if u.key != "" && strings.HasPrefix(u.key, "ct:") && u.hdrOK && sameTuple(u.hdr, t.hdr) {
				t.key = u.key
				break
			}
		}
		if t.key == "" {
			h := t.hdr
			if t.dir == "reply" {
				h = h.Reversed()
			}
			t.key = fmt.Sprintf("tuple:%d %s %d %s %d %d", h.Proto, h.Src, h.SPort, h.Dst, h.DPort, h.ICMPID)
		}
	}
	for _, t := range travs {
		if t.dir == "" {
			t.dir = "original"
		}
	}
}

func sameTuple(a, b Header) bool {
	return a.Proto == b.Proto && a.Src == b.Src && a.Dst == b.Dst && a.SPort == b.SPort && a.DPort == b.DPort && a.ICMPID == b.ICMPID
}

// hookFamily is the family a hook line shows: the table's for bridge, netdev and arp;
// the packet's (ip, ip6) for inet.
func (t *traversal) hookFamily() string {
	switch t.family {
	case "inet":
		switch t.nfproto {
		case "ipv4":
			return "ip"
		case "ipv6":
			return "ip6"
		}
	}
	return t.family
}

func buildFlow(ts []*traversal, in *Input, r *Report) FlowTrace {
	var ft FlowTrace
	for _, t := range ts {
		if t.ct != nil && t.ct.ID != 0 {
			ft.ConntrackID = t.ct.ID
			break
		}
	}
	for _, t := range ts {
		if t.hdrOK && t.dir == "original" {
			ft.Header = t.hdr
			break
		}
	}
	if !ft.Header.Src.IsValid() && len(ts) > 0 && ts[0].hdrOK {
		ft.Header = ts[0].hdr.Reversed()
	}
	for i, p := range in.Probes {
		if p.Local.Port() != 0 && (p.Local.Port() == ft.Header.SPort || (ft.Header.ICMPEcho && p.Local.Port() == ft.Header.ICMPID)) &&
			(!p.Local.Addr().IsValid() || p.Local.Addr() == ft.Header.Src) {
			ft.Probe = i + 1
			break
		}
	}
	for _, c := range in.Conntrack {
		h := Header{Src: c.Original.Src, Dst: c.Original.Dst, Proto: c.Proto, SPort: c.Original.SPort, DPort: c.Original.DPort, ICMPID: ft.Header.ICMPID}
		if sameTuple(h, ft.Header) || (ft.Header.ICMPEcho && h.Src == ft.Header.Src && h.Dst == ft.Header.Dst && h.Proto == ft.Header.Proto) {
			c := c
			ft.Conntrack = &c
			ft.NAT = c.NAT()
			break
		}
	}
	// Packets: a new one starts with a change of direction, a hook of lower rank, or a
	// base chain the current packet went through already.
	var packets [][]*traversal
	for _, t := range ts {
		n := len(packets)
		if n > 0 {
			cur := packets[n-1]
			last := cur[len(cur)-1]
			if t.dir == last.dir && t.rank() >= last.rank() &&
				!slices.ContainsFunc(cur, func(u *traversal) bool { return u.family == t.family && u.table == t.table && u.bc == t.bc }) {
				packets[n-1] = append(cur, t)
				continue
			}
		}
		packets = append(packets, []*traversal{t})
	}
	var sigs []string
	for _, pts := range packets {
		p := buildPacket(pts, in, r)
		sig := packetSignature(p)
		if i := slices.Index(sigs, sig); i >= 0 {
			p.SameAs = i + 1
		}
		sigs = append(sigs, sig)
		ft.Packets = append(ft.Packets, p)
	}
	ft.Outcome, ft.Dropped = flowOutcome(&ft, in, r)
	return ft
}

func buildPacket(ts []*traversal, in *Input, r *Report) Packet {
	p := Packet{Direction: ts[0].dir}
	for _, t := range ts {
		if t.hdrOK {
			p.Header = t.hdr
			break
		}
	}
	for _, t := range ts {
		if t.ct != nil && t.ct.State != "" {
			p.CtState = t.ct.State
			break
		}
	}
	for _, t := range ts {
		p.add(t, &in.Catalog)
	}
	p.Fate = packetFate(&p, ts, in, r)
	return p
}

// add adds the traversal t to the hooks of p.
func (p *Packet) add(t *traversal, cat *Catalog) {
	fam := t.hookFamily()
	in, out := cat.link(t.iif), cat.link(t.oif)
	seen := t.ours && strings.HasPrefix(t.bc, chainSeenPrefix)
	// The marker's chain at the end of a hook joins the hook's line: the packet came
	// through it.
	if seen {
		for i := len(p.Hooks) - 1; i >= 0; i-- {
			if h := &p.Hooks[i]; h.Family == fam && h.Hook == t.hook {
				h.Passed = true
				h.In, h.Out = orElse(h.In, in), orElse(h.Out, out)
				h.leaving(t)
				return
			}
		}
	}
	if n := len(p.Hooks); n == 0 || p.Hooks[n-1].Family != fam || p.Hooks[n-1].Hook != t.hook {
		p.Hooks = append(p.Hooks, Hook{Family: fam, Hook: t.hook})
	}
	h := &p.Hooks[len(p.Hooks)-1]
	h.In, h.Out = orElse(h.In, in), orElse(h.Out, out)
	if !h.Header.Src.IsValid() && t.hdrOK {
		h.Header = t.hdr
	}
	if t.ours {
		if seen {
			h.Passed = true
			h.leaving(t)
		}
		return
	}
	cv := chainVisit(t, cat)
	if t.hdrOK && !sameHeader(t.hdr, h.Header) {
		hdr := t.hdr
		cv.Header = &hdr
	}
	h.Chains = append(h.Chains, cv)
}

// leaving notes the packet as the marker's chain at the end of the hook saw it.
func (h *Hook) leaving(t *traversal) {
	if t.hdrOK && h.Header.Src.IsValid() && !sameTuple(t.hdr, h.Header) {
		hdr := t.hdr
		h.Leaves = &hdr
	}
}

func orElse(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func sameHeader(a, b Header) bool {
	return sameTuple(a, b) && a.TCPFlags == b.TCPFlags && a.ICMPType == b.ICMPType
}

func chainVisit(t *traversal, cat *Catalog) ChainVisit {
	cv := ChainVisit{Table: t.family + " " + t.table, Chain: t.bc}
	if ch, ok := cat.chain(t.family, t.table, t.bc); ok {
		cv.Type, cv.Priority = ch.Type, ch.Priority
	}
	for _, e := range t.events {
		if e.Type == TypeRule && e.Handle == 0 && e.Verdict == "continue" {
			continue // the end of the rules of a chain: the return or policy event follows
		}
		s := Step{Chain: e.Chain, Type: e.Type, Handle: e.Handle, Verdict: e.Verdict}
		if e.Type == TypePolicy {
			s.Verdict = e.Policy
		}
		if e.Handle != 0 {
			if ru, ok := cat.rule(t.family, t.table, e.Handle); ok {
				s.Rule, s.Comment = ru.Text, ru.Comment
			} else {
				s.Rule = "(rule no longer in the table)"
			}
		}
		cv.Steps = append(cv.Steps, s)
		cv.Verdict = s.Verdict
	}
	if cv.Verdict == "return" || cv.Verdict == "" {
		cv.Verdict = "continue"
	}
	return cv
}

// packetFate says where a packet ended: dropped by a rule or a policy, out of the
// node, delivered to it, or not seen after some hook.
func packetFate(p *Packet, ts []*traversal, in *Input, r *Report) Fate {
	for _, h := range p.Hooks {
		for _, cv := range h.Chains {
			for _, s := range cv.Steps {
				switch s.Verdict {
				case "drop":
					f := Fate{Verdict: "dropped", Hook: h.Family + " " + h.Hook, Table: cv.Table, Chain: s.Chain, Handle: s.Handle, Rule: s.Rule}
					by := "the policy of chain " + cv.Table + " " + s.Chain
					if s.Type != TypePolicy {
						by = fmt.Sprintf("rule %d of %s %s: %s", s.Handle, cv.Table, s.Chain, s.Rule)
						if strings.Contains(s.Rule, "reject") {
							f.Verdict = "rejected"
						}
					}
					f.Detail = fmt.Sprintf("%s in %s by %s", f.Verdict, f.Hook, by)
					return f
				case "stolen", "queue":
					return Fate{Verdict: s.Verdict, Hook: h.Family + " " + h.Hook, Table: cv.Table, Chain: s.Chain, Handle: s.Handle, Rule: s.Rule,
						Detail: fmt.Sprintf("%s by %s %s in %s (rule %d: %s)", map[string]string{"stolen": "taken", "queue": "queued to user space"}[s.Verdict], cv.Table, s.Chain, h.Family+" "+h.Hook, s.Handle, s.Rule)}
				}
			}
		}
	}
	if len(p.Hooks) == 0 {
		return Fate{Verdict: "lost", Detail: "no hook seen"}
	}
	// The last hook the packet came out of, of a family: "" for any but the bridge's.
	passed := func(hook, family string) *Hook {
		for i := len(p.Hooks) - 1; i >= 0; i-- {
			h := &p.Hooks[i]
			if h.Hook == hook && h.Passed && (h.Family == family || family == "" && h.Family != "bridge") {
				return h
			}
		}
		return nil
	}
	h := passed("postrouting", "")
	if h == nil {
		h = passed("postrouting", "bridge") // bridged without br_netfilter
	}
	if h != nil {
		f := Fate{Verdict: "left", Hook: h.Family + " postrouting", Detail: "left the node through " + h.Out}
		for _, b := range p.Hooks {
			if b.Family == "bridge" && b.Hook == "postrouting" && b.Out != "" && b.Out != h.Out {
				f.Detail += " (bridge port " + b.Out + ")"
				break
			}
		}
		return f
	}
	// The bridge family's input only hands the frame to the IP stack of the node.
	if h := passed("input", ""); h != nil {
		return Fate{Verdict: "delivered", Hook: h.Family + " input", Detail: "delivered to the node itself (input, in " + h.In + ")"}
	}
	last := &p.Hooks[len(p.Hooks)-1]
	if last.Family == "bridge" && last.Hook == "input" && last.Passed {
		if h := passed("prerouting", ""); h != nil {
			last = h // handed to the IP stack, which routes it
		}
	}
	f := Fate{Verdict: "lost", Hook: last.Family + " " + last.Hook}
	if !last.Passed {
		after := "its first chain"
		if n := len(last.Chains); n > 0 {
			after = last.Chains[n-1].Table + " " + last.Chains[n-1].Chain
		}
		f.Detail = fmt.Sprintf("last seen in %s after %s; no nftables rule dropped it (something outside nftables did: legacy iptables or ebtables, conntrack, the stack)", f.Hook, after)
		return f
	}
	switch {
	case last.Hook == "prerouting" && last.Family == "bridge":
		f.Detail = fmt.Sprintf("not seen after %s (in %s): the bridge did not forward it (no forwarding database entry, port state)", f.Hook, last.In)
	case last.Hook == "prerouting":
		f.Detail = fmt.Sprintf("not seen after %s (in %s): the node's routing decision dropped it", f.Hook, last.In)
		hdr := last.Header
		if last.Leaves != nil {
			hdr = *last.Leaves // as DNAT left it
		}
		q := routeQuery{dst: hdr.Dst, src: hdr.Src, iif: last.In}
		if rt, ok := findRoute(in.Routes, q); ok {
			f.Route = &rt
			if rt.Err != "" {
				f.Detail += ": " + rt.Err
			} else {
				f.Detail += " (route " + rt.Result + "; the reverse path filter, a martian source or forwarding off?)"
			}
		} else {
			r.wanted = append(r.wanted, q)
		}
	default:
		f.Detail = fmt.Sprintf("not seen after %s (in %s, out %s)", f.Hook, last.In, last.Out)
	}
	return f
}

func findRoute(routes []Route, q routeQuery) (Route, bool) {
	for _, rt := range routes {
		if rt.Namespace == "node" && rt.Dst == q.dst && rt.Src == q.src && rt.Iif == q.iif {
			return rt, true
		}
	}
	return Route{}, false
}

// flowOutcome sums a flow up in one sentence, and says whether a packet was dropped.
func flowOutcome(ft *FlowTrace, in *Input, r *Report) (string, bool) {
	var orig, reply []*Packet
	for i := range ft.Packets {
		p := &ft.Packets[i]
		if p.Direction == "reply" {
			reply = append(reply, p)
		} else {
			orig = append(orig, p)
		}
	}
	// An ICMP error about the flow (related, in the reply direction) says who gave up.
	icmpNote := ""
	for _, p := range reply {
		if h := p.Header; (h.Proto == unix.IPPROTO_ICMP || h.Proto == unix.IPPROTO_ICMPV6) && isICMPError(h.Proto == unix.IPPROTO_ICMPV6, h.ICMPType) {
			icmpNote = fmt.Sprintf("; %s answered %s code %d", h.Src, icmpTypeName(h.Proto, h.ICMPType), h.ICMPCode)
			break
		}
	}
	for _, p := range orig {
		if p.Fate.Verdict == "dropped" || p.Fate.Verdict == "rejected" || p.Fate.Verdict == "lost" {
			return p.Fate.Detail + icmpNote, p.Fate.Verdict != "lost"
		}
	}
	for _, p := range reply {
		if p.Fate.Verdict == "dropped" || p.Fate.Verdict == "rejected" {
			return "the reply was " + p.Fate.Detail, true
		}
	}
	if len(orig) == 0 {
		return "only replies seen", false
	}
	last := orig[len(orig)-1].Fate
	if icmpNote != "" {
		return last.Detail + icmpNote, false
	}
	if len(reply) > 0 {
		return fmt.Sprintf("%s; %d %s came back", last.Detail, len(reply), plural(len(reply), "reply", "replies")), false
	}
	if ft.Conntrack != nil && ft.Conntrack.TCPState == "ESTABLISHED" {
		return last.Detail + "; answered (conntrack: established)", false
	}
	if ft.Probe > 0 && in.Probes[ft.Probe-1].OK {
		return last.Detail + "; answered (probe: " + in.Probes[ft.Probe-1].Result + ")", false
	}
	s := last.Detail + "; no reply seen"
	if last.Verdict == "left" && ft.Probe > 0 {
		s += " (probe: " + in.Probes[ft.Probe-1].Result + ")"
	}
	if last.Verdict == "left" {
		// Where the node sent it: the next hop, and whether it answers ARP/NDP.
		if h := lastHook(orig[len(orig)-1], "postrouting"); h != nil && h.Header.Dst.IsValid() {
			q := routeQuery{dst: h.Header.Dst}
			if rt, ok := findRoute(in.Routes, q); ok {
				s += "; the node's route: " + rt.String()
			} else {
				r.wanted = append(r.wanted, q)
			}
		}
	}
	return s, false
}

// lastHook returns the last hook of p of that name outside the bridge family.
func lastHook(p *Packet, hook string) *Hook {
	for i := len(p.Hooks) - 1; i >= 0; i-- {
		if h := &p.Hooks[i]; h.Hook == hook && h.Family != "bridge" {
			return h
		}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// result sums the whole trace up.
func result(r *Report, in Input) string {
	if len(r.Flows) == 0 {
		s := "no packet of the flow was seen in the node namespace"
		for _, rt := range r.Routes {
			if rt.Namespace == "source" && rt.Err != "" {
				s += "; the source has " + rt.Err
			}
		}
		if len(in.Probes) == 0 {
			s += " (nothing sent: use --send, or make the traffic while the trace runs)"
		}
		return s
	}
	f := r.Flows[0]
	for _, ft := range r.Flows {
		if ft.Dropped {
			return ft.Outcome
		}
	}
	return f.Outcome
}

// packetSignature is what two packets that took the same path have in common.
func packetSignature(p Packet) string {
	var b strings.Builder
	b.WriteString(p.Direction)
	for _, h := range p.Hooks {
		fmt.Fprintf(&b, "|%s %s %s %s %v", h.Family, h.Hook, h.In, h.Out, h.Passed)
		for _, cv := range h.Chains {
			fmt.Fprintf(&b, "|%s %s", cv.Table, cv.Chain)
			for _, s := range cv.Steps {
				fmt.Fprintf(&b, ",%s %s %d %s", s.Chain, s.Type, s.Handle, s.Verdict)
			}
		}
	}
	b.WriteString("|" + p.Fate.Detail)
	return b.String()
}

func flowSignature(ft FlowTrace) string {
	var b strings.Builder
	for _, p := range ft.Packets {
		b.WriteString(packetSignature(p) + "\n")
	}
	b.WriteString(ft.Outcome)
	return b.String()
}
