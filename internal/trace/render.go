package trace

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// WriteText prints r for people: the probes, then each flow's packets hook by hook, with
// the chains and rules they went through in every table, and where they ended.
func WriteText(w io.Writer, r Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "trace %s", r.Flow)
	if r.Node != "" {
		fmt.Fprintf(&b, " in namespace %s", r.Node)
	}
	b.WriteString("\n")
	for i, p := range r.Probes {
		fmt.Fprintf(&b, "probe %d: %s %s -> %s: %s", i+1, p.Proto, probeLocal(p), probeRemote(p), p.Result)
		if p.OK {
			fmt.Fprintf(&b, " in %s", time.Duration(p.Time).Round(10*time.Microsecond))
		}
		b.WriteString("\n")
	}
	for _, rt := range r.Routes {
		fmt.Fprintf(&b, "route in the %s: %s\n", rt.Namespace, rt)
	}
	if r.Lost > 0 {
		fmt.Fprintf(&b, "warning: trace events were lost %d times (receive buffer full, or too many events): the path may miss steps\n", r.Lost)
	}
	for i, ft := range r.Flows {
		b.WriteString("\n")
		writeFlow(&b, i+1, ft)
	}
	fmt.Fprintf(&b, "\nresult: %s\n", r.Result)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON prints r as indented JSON, for tools.
func WriteJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func probeLocal(p Probe) string {
	if p.Proto == ICMP || !p.Local.IsValid() {
		if p.Local.Addr().IsValid() {
			return p.Local.Addr().String()
		}
		return "?"
	}
	return p.Local.String()
}

func probeRemote(p Probe) string {
	if p.Proto == ICMP {
		return p.Remote.Addr().String()
	}
	return p.Remote.String()
}

func writeFlow(b *strings.Builder, n int, ft FlowTrace) {
	fmt.Fprintf(b, "flow %d: %s", n, ft.Header)
	var attrs []string
	if ft.ConntrackID != 0 {
		attrs = append(attrs, "conntrack id "+strconv.FormatUint(uint64(ft.ConntrackID), 10))
	}
	if ft.Probe != 0 {
		attrs = append(attrs, "probe "+strconv.Itoa(ft.Probe))
	}
	if len(attrs) > 0 {
		b.WriteString(" (" + strings.Join(attrs, ", ") + ")")
	}
	b.WriteString("\n")
	if ft.Conntrack == nil && ft.ConntrackID != 0 && ft.Dropped {
		b.WriteString("  conntrack: no entry (the first packet was dropped before conntrack confirmed the connection)\n")
	}
	if c := ft.Conntrack; c != nil {
		state := ""
		if c.TCPState != "" {
			state = c.TCPState + ", "
		}
		fmt.Fprintf(b, "  conntrack: %soriginal %s, reply %s\n", state, c.Original, c.Reply)
		if len(ft.NAT) > 0 {
			fmt.Fprintf(b, "  nat: %s\n", strings.Join(ft.NAT, ", "))
		} else {
			b.WriteString("  nat: none\n")
		}
	}
	if ft.SameAs != 0 {
		fmt.Fprintf(b, "  %d %s, the same path as flow %d\n", len(ft.Packets), plural(len(ft.Packets), "packet", "packets"), ft.SameAs)
	} else {
		for i, p := range ft.Packets {
			writePacket(b, i+1, p)
		}
	}
	fmt.Fprintf(b, "  outcome: %s\n", ft.Outcome)
}

func writePacket(b *strings.Builder, n int, p Packet) {
	fmt.Fprintf(b, "  packet %d, %s", n, p.Direction)
	if p.CtState != "" {
		fmt.Fprintf(b, ", ct %s", p.CtState)
	}
	fmt.Fprintf(b, ": %s", p.Header)
	if p.SameAs != 0 {
		fmt.Fprintf(b, ": same path as packet %d\n", p.SameAs)
		return
	}
	b.WriteString("\n")
	for _, h := range p.Hooks {
		fmt.Fprintf(b, "    %s %s", h.Family, h.Hook)
		if h.In != "" {
			fmt.Fprintf(b, ", in %s", h.In)
		}
		if h.Out != "" {
			fmt.Fprintf(b, ", out %s", h.Out)
		}
		if h.Header.Src.IsValid() && !sameHeader(h.Header, p.Header) {
			fmt.Fprintf(b, ": %s", h.Header)
		}
		if len(h.Chains) == 0 {
			b.WriteString(" (no chain of another table)")
		}
		b.WriteString("\n")
		for _, cv := range h.Chains {
			writeChain(b, cv)
		}
		if h.Leaves != nil {
			fmt.Fprintf(b, "      leaves the hook as %s\n", h.Leaves)
		}
	}
	fmt.Fprintf(b, "    => %s\n", p.Fate.Detail)
}

func writeChain(b *strings.Builder, cv ChainVisit) {
	if cv.Header != nil {
		fmt.Fprintf(b, "      packet now: %s\n", cv.Header)
	}
	fmt.Fprintf(b, "      %s %s", cv.Table, cv.Chain)
	if cv.Type != "" {
		fmt.Fprintf(b, " (%s, priority %d)", cv.Type, cv.Priority)
	}
	b.WriteString("\n")
	for _, s := range cv.Steps {
		b.WriteString("        ")
		if s.Chain != cv.Chain {
			fmt.Fprintf(b, "chain %s: ", s.Chain)
		}
		switch {
		case s.Type == TypePolicy:
			fmt.Fprintf(b, "policy %s", s.Verdict)
		case s.Type == TypeReturn && s.Handle == 0:
			b.WriteString("end of chain, return")
		default:
			fmt.Fprintf(b, "rule %d: %s", s.Handle, s.Rule)
			if s.Comment != "" {
				fmt.Fprintf(b, " comment %q", s.Comment)
			}
			fmt.Fprintf(b, " => %s", s.Verdict)
		}
		b.WriteString("\n")
	}
}
