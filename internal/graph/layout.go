package graph

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// The layered layout of the SVG drawing, left to right, in five columns:
//
//	0: published ports and service VIPs (where traffic enters)
//	1: routes of the node towards pod ranges
//	2: bridges, and other interfaces of the node that routes go through
//	3: host veths
//	4: sandboxes, each a box holding its interfaces; then backends outside any sandbox
//
// Columns 0-3 sit in the node namespace's box. The sandbox column is stacked from the
// top; every other column places each node at the height of what it connects to (a
// host veth beside its sandbox interface, a bridge beside the middle of its ports, a
// route beside its device, a port or VIP beside the middle of its targets), pushed down
// where it would overlap the node above. page.html draws the JSON with the same layout
// in JavaScript: keep the two in step.

// Geometry, in pixels. Text is monospace: a 12px character is charW wide, an 11px one
// detailW.
const (
	margin     = 20.0
	nsPad      = 14.0 // inside the node namespace's box
	nsTitle    = 26.0 // the namespace's title line
	headH      = 20.0 // the column headers
	lineH      = 14.0
	padX       = 8.0
	charW      = 7.3
	detailW    = 6.7
	gapV       = 10.0 // between nodes of a column
	gapCol     = 50.0
	gapEntry   = 170.0 // after column 0: room for the labels of its edges
	gapSandbox = 70.0  // between the node namespace and the sandboxes
	sbPad      = 10.0
	sbHead     = 38.0 // a sandbox's title and netns lines
	minW       = 120.0
)

var headers = [5]string{"ports, services", "routes", "bridges, tunnels", "host veths", "sandboxes"}

// column is where a kind of node is drawn.
func column(k Kind) int {
	switch k {
	case KindPort, KindService:
		return 0
	case KindRoute:
		return 1
	case KindBridge, KindTunnel, KindLink:
		return 2
	case KindVeth:
		return 3
	}
	return 4
}

type box struct{ X, Y, W, H float64 }

func (b box) cy() float64 { return b.Y + b.H/2 }

// layout is where everything of a graph is drawn.
type layout struct {
	nodes  map[string]Node // the graph's nodes, by ID
	boxes  map[string]box  // every node but namespaces, by ID
	ns     map[string]box  // namespace boxes, by ID
	colX   [5]float64
	headY  float64
	outs   map[string][]Edge // edges out of column 0 nodes, in order
	width  float64
	height float64
}

// lines are the text lines of a node's box: its label (with its state, unless ok)
// and its details.
func lines(n Node) []string {
	l := n.Label
	if n.State != "" && n.State != StateOK {
		l += " (" + n.State + ")"
	}
	return append([]string{l}, n.Details...)
}

func textW(s string, w float64) float64 { return float64(utf8.RuneCountInString(s)) * w }

// nodeW is the width a node's text needs.
func nodeW(n Node) float64 {
	ls := lines(n)
	w := textW(ls[0], charW)
	for _, d := range ls[1:] {
		w = max(w, textW(d, detailW))
	}
	return math.Ceil(w + 2*padX)
}

// sandboxW is the width a sandbox's title and details line need.
func sandboxW(n Node) float64 {
	return math.Ceil(max(textW(n.Label, charW), textW(strings.Join(n.Details, ", "), detailW)) + 2*padX)
}

func computeLayout(g Graph) layout {
	lay := layout{nodes: map[string]Node{}, boxes: map[string]box{}, ns: map[string]box{}, outs: map[string][]Edge{}}
	for _, n := range g.Nodes {
		lay.nodes[n.ID] = n
	}
	var cols [5][]Node
	var sandboxes []Node
	colW := [5]float64{minW, minW, minW, minW, minW}
	for _, n := range g.Nodes {
		if n.Kind == KindNamespace {
			if n.ID != NodeNamespace {
				sandboxes = append(sandboxes, n)
				colW[4] = max(colW[4], sandboxW(n)-2*sbPad)
			}
			continue
		}
		c := column(n.Kind)
		cols[c] = append(cols[c], n)
		colW[c] = max(colW[c], nodeW(n))
	}
	for i, h := range headers {
		colW[i] = max(colW[i], math.Ceil(textW(h, detailW)))
	}
	// near lists what each node is placed beside: the targets of its edges, and the
	// ports of a bridge.
	near := map[string][]string{}
	for _, e := range g.Edges {
		if n, ok := lay.nodes[e.From]; ok && column(n.Kind) == 0 {
			lay.outs[e.From] = append(lay.outs[e.From], e)
		}
		near[e.From] = append(near[e.From], e.To)
		if e.Kind == EdgeMaster {
			near[e.To] = append(near[e.To], e.From)
		}
	}
	height := func(n Node) float64 {
		h := 10 + lineH*float64(len(lines(n)))
		if k := len(lay.outs[n.ID]); k > 0 {
			h = max(h, 12+lineH*float64(k))
		}
		return h
	}

	x := margin + nsPad
	for c := range 5 {
		lay.colX[c] = x
		switch c {
		case 0:
			x += colW[c] + gapEntry
		case 3:
			x += colW[c] + nsPad + gapSandbox
		default:
			x += colW[c] + gapCol
		}
	}
	lay.colX[4] += sbPad
	lay.headY = margin + nsTitle
	top := lay.headY + headH

	// Column 4: the sandboxes with their interfaces, then the other backends.
	y := top
	for _, sb := range sandboxes {
		sbTop := y
		y += sbHead
		for _, n := range cols[4] {
			if n.Namespace != sb.ID {
				continue
			}
			lay.boxes[n.ID] = box{lay.colX[4], y, colW[4], height(n)}
			y += height(n) + gapV
		}
		y = max(y, sbTop+sbHead+gapV)
		lay.ns[sb.ID] = box{lay.colX[4] - sbPad, sbTop, colW[4] + 2*sbPad, y - gapV + sbPad - sbTop}
		y = sbTop + lay.ns[sb.ID].H + 2*gapV
	}
	for _, n := range cols[4] {
		if n.Namespace == "" {
			lay.boxes[n.ID] = box{lay.colX[4], y, colW[4], height(n)}
			y += height(n) + gapV
		}
	}

	// Columns 3 to 0, each beside what it connects to.
	for _, c := range []int{3, 2, 1, 0} {
		type item struct {
			n      Node
			want   float64
			anchor bool
		}
		var items []item
		for _, n := range cols[c] {
			it := item{n: n}
			var sum float64
			var cnt int
			for _, id := range near[n.ID] {
				if b, ok := lay.boxes[id]; ok {
					sum += b.cy()
					cnt++
				}
			}
			if cnt > 0 {
				it.want, it.anchor = sum/float64(cnt), true
			}
			items = append(items, it)
		}
		slices.SortStableFunc(items, func(a, b item) int {
			if a.anchor != b.anchor {
				if a.anchor {
					return -1
				}
				return 1
			}
			return cmp.Compare(a.want, b.want)
		})
		y := top
		for _, it := range items {
			h := height(it.n)
			t := y
			if it.anchor {
				t = max(t, math.Round(it.want-h/2))
			}
			lay.boxes[it.n.ID] = box{lay.colX[c], t, colW[c], h}
			y = t + h + gapV
		}
	}

	// The node namespace's box around columns 0-3, and the size of the drawing.
	bottom := top
	right := lay.colX[4] + colW[4] + sbPad
	nsBottom := top
	for id, b := range lay.boxes {
		bottom = max(bottom, b.Y+b.H)
		if column(lay.nodes[id].Kind) == 4 {
			right = max(right, b.X+b.W)
		} else {
			nsBottom = max(nsBottom, b.Y+b.H)
		}
	}
	lay.ns[NodeNamespace] = box{margin, margin, lay.colX[3] + colW[3] + nsPad - margin, nsBottom + nsPad - margin}
	for _, b := range lay.ns {
		bottom = max(bottom, b.Y+b.H)
	}
	lay.width, lay.height = right+margin, bottom+margin
	return lay
}

// anchors are where an edge leaves its source and reaches its target: sideways, from
// the side that faces the target; an edge out of column 0 leaves at its own line, and
// one that leads to an address:port reaches the line of that address.
func (lay layout) anchors(e Edge) (sx, sy, ex, ey float64, ok bool) {
	from, ok1 := lay.boxes[e.From]
	to, ok2 := lay.boxes[e.To]
	if !ok1 || !ok2 {
		return 0, 0, 0, 0, false
	}
	sy, ey = from.cy(), to.cy()
	if outs := lay.outs[e.From]; len(outs) > 0 {
		sy = from.Y + 12 + lineH*float64(slices.Index(outs, e))
	}
	if e.Label != "" { // an address:port: reach the line of that address, if the target has one
		host := e.Label[:max(strings.LastIndex(e.Label, ":"), 0)]
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if n, ok := lay.nodes[e.To]; ok {
			for i, l := range lines(n) {
				if l == host || strings.HasPrefix(l, host+"/") {
					ey = to.Y + 12 + lineH*float64(i)
					break
				}
			}
		}
	}
	if from.X < to.X {
		return from.X + from.W, sy, to.X, ey, true
	}
	return from.X, sy, to.X + to.W, ey, true
}
