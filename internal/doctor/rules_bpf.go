package doctor

import (
	"fmt"
	"strings"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/fastpath"
)

// bpfRule looks at the eBPF programs on the pods' host veths (tcx ingress):
//
//   - another tool's program (a CNI replaced without its cleanup, Cilium's
//     cil_from_container say, or a tool under test) runs on every packet the pod sends,
//     before the bridge, netfilter and podnet's rules: it can drop or redirect them, and
//     neither nftables nor `podnet trace` shows it;
//   - with the agent's records: podnet's fast path attached to some pods' host veths
//     and not to others. Traffic of those still flows (through the bridge or the node's
//     forwarding, and netfilter), only slower; an attach the agent could not make is in
//     its log.
func bpfRule(v *view) []Finding {
	var out []Finding
	withFastPath := 0
	for i := range v.s.Links {
		l := &v.s.Links[i]
		if !v.sandboxVeth(l) {
			continue
		}
		for _, p := range l.TCX {
			if p.Name == fastpath.ProgName {
				withFastPath++
				continue
			}
			fix := v.fix("bpftool net show dev " + l.Name)
			detach := fmt.Sprintf("# a program held by a pinned link: bpftool link detach id %d", p.LinkID)
			if p.LinkID == 0 {
				detach = "# attached without a link (tcx opts): the tool that attached it detaches it"
			}
			out = append(out, Finding{
				Class: ClassForeignBPF, Severity: SeverityWarning,
				Culprit:   fmt.Sprintf("tcx ingress program %s (id %d) on veth %s", programName(p), p.ID, l.Name),
				RootCause: fmt.Sprintf("An eBPF program that podnet did not attach runs on every packet the pod behind %s sends, before the bridge and netfilter: it can drop or redirect them, and neither the nftables rules nor a trace shows what it does. Often the leftover of another CNI's datapath.", l.Name),
				Fix:       fix + "\n" + detach,
				Evidence:  []string{fmt.Sprintf("%s: tcx ingress %s", l.Name, tcxList(l.TCX))},
			})
		}
	}
	if in := v.s.Intended; in != nil && withFastPath > 0 {
		var missing []*Link
		for _, ep := range in.Endpoints {
			l := v.links[ep.HostIf]
			if ep.State != api.StateAttached || l == nil || !l.Up {
				continue // in flight, or drift (driftRule)
			}
			if !hasProgram(l, fastpath.ProgName) {
				missing = append(missing, l)
			}
		}
		for _, l := range missing {
			out = append(out, Finding{
				Class: ClassFastPathDetached, Severity: SeverityInfo,
				Culprit:   "veth " + l.Name + " (no tcx ingress program " + fastpath.ProgName + ")",
				RootCause: fmt.Sprintf("The agent's fast path is attached to the host veths of %s, not to %s: the traffic of that pod with the other pods of its network crosses the bridge or the node's forwarding, and netfilter, instead, which works, at the cost of the hooks (README, throughput).", plural(withFastPath, "pod"), l.Name),
				Fix:       "# the agent's log says why the attach failed (component=fastpath); the agent attaches it again when the veth changes or the agent restarts",
				Evidence:  []string{fmt.Sprintf("%s: master %s, tcx ingress %s", l.Name, l.Master, tcxList(l.TCX))},
			})
		}
	}
	return out
}

func hasProgram(l *Link, name string) bool {
	for _, p := range l.TCX {
		if p.Name == name {
			return true
		}
	}
	return false
}

func programName(p TCXProgram) string {
	if p.Name == "" {
		return "(unnamed)"
	}
	return p.Name
}

func tcxList(ps []TCXProgram) string {
	if len(ps) == 0 {
		return "none"
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = fmt.Sprintf("%s (id %d)", programName(p), p.ID)
	}
	return strings.Join(names, ", ")
}
