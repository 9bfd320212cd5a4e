package graph

import (
	"fmt"
	"html"
	"strconv"
	"strings"
)

// svgStyle is the drawing's stylesheet; page.html uses the same classes.
const svgStyle = `text{font-family:monospace;font-size:12px;fill:#1f2933}
.detail{font-size:11px;fill:#52606d}
.head{font-size:11px;fill:#7b8794;font-style:italic}
.title{font-weight:bold}
.ns>rect{fill:#f5f7fa;stroke:#9aa5b1;stroke-width:1.5}
.sandbox>rect{fill:#e6f0ff;stroke:#5b8def;stroke-width:1.5}
.node>rect{stroke-width:1.2;fill-opacity:.85}
.n-port>rect{fill:#efe3ff;stroke:#7c3aed}
.n-service>rect{fill:#ffe3e3;stroke:#d64545}
.n-route>rect{fill:#ffffff;stroke:#616e7c}
.n-bridge>rect{fill:#ffefd1;stroke:#d08a00}
.n-tunnel>rect{fill:#fff3c4;stroke:#b7791f}
.n-link>rect{fill:#e4e7eb;stroke:#616e7c;stroke-dasharray:4 2}
.n-veth>rect{fill:#e3f9e5;stroke:#2f8132}
.n-interface>rect{fill:#d9f7f4;stroke:#0f766e}
.n-address>rect{fill:#ffffff;stroke:#d64545;stroke-dasharray:4 2}
.state-ok>rect{stroke:#2f8132}
.state-missing>rect{stroke:#cf1124;stroke-width:2;stroke-dasharray:5 3}
.state-unexpected>rect{stroke:#e12d39;stroke-width:2.5}
.state-attaching>rect,.state-detaching>rect{stroke-dasharray:3 3;opacity:.6}
.edge>path{fill:none;stroke:#616e7c;stroke-width:1.3}
.e-veth>path{stroke:#2f8132;stroke-width:2.5}
.e-master>path{stroke:#d08a00;stroke-width:2}
.e-dnat>path,.e-proxy>path{stroke:#7c3aed;stroke-dasharray:6 3}
.e-proxy>path{stroke-dasharray:2 3}
.e-backend>path{stroke:#d64545;stroke-dasharray:6 3}
.e-underlay>path{stroke:#b7791f;stroke-dasharray:6 3}
.edge>text{font-size:11px;fill:#52606d}
`

func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func esc(s string) string { return html.EscapeString(s) }

// SVG draws g as a standalone SVG document (see layout.go for the layout).
func (g Graph) SVG() string {
	lay := computeLayout(g)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" viewBox="0 0 %s %s">`+"\n",
		num(lay.width), num(lay.height), num(lay.width), num(lay.height))
	b.WriteString("<style>\n" + svgStyle + "</style>\n")
	b.WriteString(`<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L8,4L0,8z" fill="#616e7c"/></marker></defs>` + "\n")

	// Namespaces: the node's, then the sandboxes'.
	for _, n := range g.Nodes {
		if n.Kind != KindNamespace {
			continue
		}
		bx := lay.ns[n.ID]
		class := "sandbox"
		if n.ID == NodeNamespace {
			class = "ns"
		}
		fmt.Fprintf(&b, `<g class="%s" data-id="%s"><title>%s</title>`, class, esc(n.ID), esc(n.ID))
		fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" rx="8"/>`, num(bx.X), num(bx.Y), num(bx.W), num(bx.H))
		title := n.Label
		if n.ID == NodeNamespace {
			title = "node namespace"
		}
		fmt.Fprintf(&b, `<text class="title" x="%s" y="%s">%s</text>`, num(bx.X+padX), num(bx.Y+17), esc(title))
		if n.ID != NodeNamespace && len(n.Details) > 0 {
			fmt.Fprintf(&b, `<text class="detail" x="%s" y="%s">%s</text>`, num(bx.X+padX), num(bx.Y+31), esc(strings.Join(n.Details, ", ")))
		}
		b.WriteString("</g>\n")
	}
	for c, h := range headers {
		fmt.Fprintf(&b, `<text class="head" x="%s" y="%s">%s</text>`+"\n", num(lay.colX[c]), num(lay.headY+12), esc(h))
	}

	// Edges under the nodes, which let the long ones show through.
	for _, e := range g.Edges {
		sx, sy, ex, ey, ok := lay.anchors(e)
		if !ok {
			continue
		}
		dx := (ex - sx) / 2
		fmt.Fprintf(&b, `<g class="edge e-%s" data-from="%s" data-to="%s"><title>%s</title>`, e.Kind, esc(e.From), esc(e.To), esc(edgeTitle(e)))
		marker := ""
		if e.Kind != EdgeVeth && e.Kind != EdgeMaster {
			marker = ` marker-end="url(#arrow)"`
		}
		fmt.Fprintf(&b, `<path d="M%s,%s C%s,%s %s,%s %s,%s"%s/>`, num(sx), num(sy), num(sx+dx), num(sy), num(ex-dx), num(ey), num(ex), num(ey), marker)
		if e.Label != "" {
			fmt.Fprintf(&b, `<text x="%s" y="%s">%s</text>`, num(sx+6), num(sy-3), esc(e.Label))
		}
		b.WriteString("</g>\n")
	}

	// Nodes.
	for _, n := range g.Nodes {
		bx, ok := lay.boxes[n.ID]
		if !ok {
			continue
		}
		class := "node n-" + string(n.Kind)
		if n.State != "" {
			class += " state-" + n.State
		}
		fmt.Fprintf(&b, `<g class="%s" data-id="%s"><title>%s</title>`, class, esc(n.ID), esc(n.ID))
		fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" rx="4"/>`, num(bx.X), num(bx.Y), num(bx.W), num(bx.H))
		for i, l := range lines(n) {
			class := ""
			if i > 0 {
				class = ` class="detail"`
			}
			fmt.Fprintf(&b, `<text%s x="%s" y="%s">%s</text>`, class, num(bx.X+padX), num(bx.Y+16+lineH*float64(i)), esc(l))
		}
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// edgeTitle describes an edge in words (the tooltip of the drawings).
func edgeTitle(e Edge) string {
	s := e.From + " -> " + e.To + " (" + string(e.Kind) + ")"
	if e.Label != "" {
		s += " " + e.Label
	}
	return s
}
