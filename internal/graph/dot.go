package graph

import (
	"fmt"
	"strings"
)

// dotFill is the fill colour of each kind of node in DOT (as in the SVG drawing).
var dotFill = map[Kind]string{
	KindPort: "#efe3ff", KindService: "#ffe3e3", KindRoute: "#ffffff", KindBridge: "#ffefd1",
	KindTunnel: "#fff3c4", KindLink: "#e4e7eb", KindVeth: "#e3f9e5", KindInterface: "#d9f7f4", KindAddress: "#ffffff",
}

// dotEdge is the style of each kind of edge in DOT.
var dotEdge = map[EdgeKind]string{
	EdgeVeth:     `dir=none, penwidth=2.5, color="#2f8132"`,
	EdgeMaster:   `dir=none, penwidth=2, color="#d08a00"`,
	EdgeRoute:    `color="#616e7c"`,
	EdgeUnderlay: `style=dashed, color="#b7791f"`,
	EdgeDNAT:     `style=dashed, color="#7c3aed"`,
	EdgeProxy:    `style=dotted, color="#7c3aed"`,
	EdgeBackend:  `style=dashed, color="#d64545"`,
}

// dotQuote quotes s as a DOT string: backslashes and quotes escaped, lines joined
// with \n (centred lines).
func dotQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	return `"` + strings.ReplaceAll(s, "\n", `\n`) + `"`
}

// DOT renders g in Graphviz syntax: the node namespace and each sandbox as a cluster,
// left to right, in the graph's order (deterministic).
func (g Graph) DOT() string {
	var b strings.Builder
	b.WriteString("digraph podnet {\n")
	b.WriteString("  graph [rankdir=LR, fontname=\"monospace\", fontsize=11, nodesep=0.3];\n")
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fontname=\"monospace\", fontsize=10];\n")
	b.WriteString("  edge [fontname=\"monospace\", fontsize=9];\n")
	node := func(indent string, n Node) {
		attrs := fmt.Sprintf("label=%s, fillcolor=%s", dotQuote(strings.Join(lines(n), "\n")), dotQuote(dotFill[n.Kind]))
		switch n.State {
		case StateMissing:
			attrs += `, color="#cf1124", style="rounded,filled,dashed", penwidth=2`
		case StateUnexpected:
			attrs += `, color="#e12d39", penwidth=2.5`
		case StateOK:
			attrs += `, color="#2f8132"`
		case "":
		default:
			attrs += `, style="rounded,filled,dashed"`
		}
		fmt.Fprintf(&b, "%s%s [%s];\n", indent, dotQuote(n.ID), attrs)
	}
	i := 0
	for _, ns := range g.Nodes {
		if ns.Kind != KindNamespace {
			continue
		}
		label := ns.Label
		if ns.ID == NodeNamespace {
			label = "node namespace"
		} else if len(ns.Details) > 0 {
			label += "\n" + strings.Join(ns.Details, ", ")
		}
		fill := "#e6f0ff"
		if ns.ID == NodeNamespace {
			fill = "#f5f7fa"
		}
		fmt.Fprintf(&b, "  subgraph cluster_%d {\n    label=%s; style=\"rounded,filled\"; fillcolor=%s; color=\"#9aa5b1\";\n",
			i, dotQuote(label), dotQuote(fill))
		i++
		for _, n := range g.Nodes {
			if n.Kind != KindNamespace && n.Namespace == ns.ID {
				node("    ", n)
			}
		}
		b.WriteString("  }\n")
	}
	for _, n := range g.Nodes {
		if n.Kind != KindNamespace && n.Namespace == "" {
			node("  ", n)
		}
	}
	for _, e := range g.Edges {
		attrs := dotEdge[e.Kind]
		if e.Label != "" {
			attrs += ", label=" + dotQuote(e.Label)
		}
		fmt.Fprintf(&b, "  %s -> %s [%s];\n", dotQuote(e.From), dotQuote(e.To), attrs)
	}
	b.WriteString("}\n")
	return b.String()
}
