package graph

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// representative is a node with a bridge network (dual-stack), a routed network, a
// bridge network in port mode proxy, a sandbox on two networks, an unnamed sandbox, an
// endpoint being detached, published ports of both modes, services with selector and
// manual backends and one without backends, and kernel routes of which one is missing
// and two are another plugin's inside a pod range (a stale bridge's, and one through the
// plugin's vxlan tunnel, drawn with its underlay device).
func representative(t *testing.T) Input {
	t.Helper()
	var in Input
	for _, s := range []api.NetworkSpec{
		{Name: "blue", Subnets: []string{"10.88.1.0/24", "fd00:88:1::/64"}},
		{Name: "green", Driver: api.DriverRouted, Subnets: []string{"10.88.2.0/24"}},
		{Name: "px", Subnets: []string{"10.88.3.0/24"}, PortMode: api.PortModeProxy},
	} {
		n, err := spec.Canonicalize(s)
		if err != nil {
			t.Fatal(err)
		}
		in.Networks = append(in.Networks, n)
	}
	ep := func(network, id, ifname, netns, name, state string, labels map[string]string, ports []api.PortMapping, ips ...string) api.Endpoint {
		k := api.EndpointKey{Network: network, ContainerID: id, IfName: ifname}
		e := api.Endpoint{EndpointKey: k, Name: name, Labels: labels, Netns: netns, HostIf: spec.HostVethName(k),
			Ports: ports, State: state}
		for _, s := range ips {
			e.IPs = append(e.IPs, netip.MustParsePrefix(s))
		}
		e.MAC = driver.MACFor(e.IPs).String()
		return e
	}
	web := map[string]string{"app": "web"}
	in.Endpoints = []api.Endpoint{
		ep("blue", "c1", "eth0", "/run/netns/c1", "web-1", api.StateAttached, web,
			[]api.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}, "10.88.1.2/24", "fd00:88:1::2/64"),
		ep("blue", "c2", "eth0", "/run/netns/c2", "web-2", api.StateAttached, web, nil, "10.88.1.3/24", "fd00:88:1::3/64"),
		ep("green", "c3", "eth0", "/run/netns/c3", "db", api.StateAttached, nil,
			[]api.PortMapping{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 5432, ContainerPort: 5432, Protocol: "tcp"}}, "10.88.2.2/24"),
		ep("blue", "c3", "eth1", "/run/netns/c3", "db", api.StateAttached, nil, nil, "10.88.1.4/24"),
		ep("px", "4f3c2b1a0e9d8c7b6a5f", "eth0", "/var/run/netns/cni-4f3c2b1a", "", api.StateAttached, nil,
			[]api.PortMapping{{HostPort: 8081, ContainerPort: 80, Protocol: "tcp"}}, "10.88.3.2/24"),
		ep("blue", "c5", "eth0", "/run/netns/c5", "old", api.StateDetaching, web, nil, "10.88.1.5/24"),
	}
	svcs := []api.Service{
		{Name: "web", Namespace: "default", Selector: web, Affinity: api.AffinityClientIP,
			Ports: []api.ServicePort{{Port: 80, TargetPort: 8080, Protocol: "tcp"}},
			VIPs:  []netip.Addr{netip.MustParseAddr("10.96.0.10")}},
		{Name: "ext", Namespace: "default", Manual: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.50:443")},
			Ports: []api.ServicePort{{Port: 443, TargetPort: 443, Protocol: "tcp"}},
			VIPs:  []netip.Addr{netip.MustParseAddr("10.96.0.11")}},
		{Name: "none", Namespace: "default", Selector: map[string]string{"app": "none"},
			Ports: []api.ServicePort{{Port: 53, TargetPort: 53, Protocol: "udp"}},
			VIPs:  []netip.Addr{netip.MustParseAddr("10.96.0.12")}},
		{Name: "peers", Namespace: "default", Selector: web, Headless: true,
			Ports: []api.ServicePort{{Port: 80, TargetPort: 80, Protocol: "tcp"}}},
	}
	for _, s := range svcs {
		s.Backends = driver.Backends(s, in.Endpoints)
		in.Services = append(in.Services, s)
	}
	route := func(dst, dev string) Route { return Route{Dst: netip.MustParsePrefix(dst), Dev: dev} }
	in.Kernel = &Kernel{Routes: []Route{
		route("0.0.0.0/0", "eth0"),
		route("192.0.2.0/24", "eth0"),
		route("10.88.1.0/24", "pn-blue"),
		route("fd00:88:1::/64", "pn-blue"),
		route("fe80::/64", "pn-blue"),
		route("10.88.3.0/24", "pn-px"),
		route("10.88.1.128/25", "cni0"),        // a stale bridge of another plugin
		route("10.88.1.64/26", "vxlan.calico"), // another plugin's remote block, through its tunnel
		// green/c3's /32 is missing.
	}, Tunnels: []spec.Tunnel{{Name: "vxlan.calico", Kind: "vxlan", ID: 4096, Port: 4789, Local: netip.MustParseAddr("192.0.2.10"), Dev: "eth0", MTU: 1450}}}
	return in
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s (go test ./internal/graph -update rewrites it after a deliberate change)\n--- got\n%s", name, path, got)
	}
}

// TestGolden: the JSON, DOT and SVG renderings of the representative node, compared
// with testdata/node.{json,dot,svg}.
func TestGolden(t *testing.T) {
	g := Build(representative(t))
	golden(t, "node.json", g.JSON())
	golden(t, "node.dot", []byte(g.DOT()))
	golden(t, "node.svg", []byte(g.SVG()))
}

// TestBuild: what the representative node's graph says, checked fact by fact (the
// golden files hold the whole).
func TestBuild(t *testing.T) {
	in := representative(t)
	g := Build(in)
	vethOf := func(network, id, ifname string) string {
		return "veth:" + spec.HostVethName(api.EndpointKey{Network: network, ContainerID: id, IfName: ifname})
	}
	c3veth := vethOf("green", "c3", "eth0")
	wantNodes := map[string]string{ // id -> "kind label namespace state"
		"ns:node":                        "namespace node  ",
		"ns:/run/netns/c3":               "namespace db  ",
		"ns:/var/run/netns/cni-4f3c2b1a": "namespace 4f3c2b1a0e9d  ",
		"bridge:pn-blue":                 "bridge pn-blue ns:node ",
		"if:blue/c3/eth1":                "interface eth1 ns:/run/netns/c3 ",
		"if:green/c3/eth0":               "interface eth0 ns:/run/netns/c3 ",
		"if:blue/c5/eth0":                "interface eth0 ns:/run/netns/c5 detaching",
		c3veth:                           "veth " + strings.TrimPrefix(c3veth, "veth:") + " ns:node ",
		"route:10.88.1.0/24 dev pn-blue": "route 10.88.1.0/24 dev pn-blue ns:node ok",
		"route:10.88.2.2/32 dev " + strings.TrimPrefix(c3veth, "veth:"): "route 10.88.2.2/32 dev " + strings.TrimPrefix(c3veth, "veth:") + " ns:node missing",
		"route:10.88.1.128/25 dev cni0":                                 "route 10.88.1.128/25 dev cni0 ns:node unexpected",
		"link:cni0":                                                     "link cni0 ns:node ",
		"tunnel:vxlan.calico":                                           "tunnel vxlan.calico ns:node ",
		"link:eth0":                                                     "link eth0 ns:node ",
		"route:10.88.1.64/26 dev vxlan.calico":                          "route 10.88.1.64/26 dev vxlan.calico ns:node unexpected",
		"port:tcp *:8080":                                               "port *:8080/tcp ns:node ",
		"port:tcp 127.0.0.1:5432":                                       "port 127.0.0.1:5432/tcp ns:node ",
		"service:default/web 10.96.0.10:80/tcp":                         "service 10.96.0.10:80/tcp ns:node ",
		"addr:192.0.2.50":                                               "address 192.0.2.50  ",
	}
	for id, want := range wantNodes {
		n, ok := g.Node(id)
		if !ok {
			t.Errorf("no node %q", id)
			continue
		}
		if got := strings.Join([]string{string(n.Kind), n.Label, n.Namespace, n.State}, " "); got != want {
			t.Errorf("node %q: got %q, want %q", id, got, want)
		}
	}
	for _, id := range []string{"route:0.0.0.0/0 dev eth0", "route:192.0.2.0/24 dev eth0", "route:fe80::/64 dev pn-blue"} {
		if _, ok := g.Node(id); ok {
			t.Errorf("node %q drawn: not towards a pod range", id)
		}
	}
	for _, n := range g.Nodes {
		if n.Kind == KindService && strings.Contains(n.ID, "peers") {
			t.Errorf("headless service drawn: %q", n.ID)
		}
	}
	has := func(from, to string, kind EdgeKind, label string) bool {
		return slices.Contains(g.Edges, Edge{From: from, To: to, Kind: kind, Label: label})
	}
	wantEdges := []Edge{
		{vethOf("blue", "c1", "eth0"), "if:blue/c1/eth0", EdgeVeth, ""},
		{vethOf("blue", "c1", "eth0"), "bridge:pn-blue", EdgeMaster, ""},
		{"route:10.88.1.0/24 dev pn-blue", "bridge:pn-blue", EdgeRoute, ""},
		{"route:10.88.2.2/32 dev " + strings.TrimPrefix(c3veth, "veth:"), c3veth, EdgeRoute, ""},
		{"route:10.88.1.128/25 dev cni0", "link:cni0", EdgeRoute, ""},
		{"route:10.88.1.64/26 dev vxlan.calico", "tunnel:vxlan.calico", EdgeRoute, ""},
		{"tunnel:vxlan.calico", "link:eth0", EdgeUnderlay, ""},
		// Port mode nat: one DNAT per address of every family; proxy: one backend.
		{"port:tcp *:8080", "if:blue/c1/eth0", EdgeDNAT, "10.88.1.2:80"},
		{"port:tcp *:8080", "if:blue/c1/eth0", EdgeDNAT, "[fd00:88:1::2]:80"},
		{"port:tcp 127.0.0.1:5432", "if:green/c3/eth0", EdgeDNAT, "10.88.2.2:5432"},
		{"port:tcp *:8081", "if:px/4f3c2b1a0e9d8c7b6a5f/eth0", EdgeProxy, "10.88.3.2:80"},
		{"service:default/web 10.96.0.10:80/tcp", "if:blue/c1/eth0", EdgeBackend, "10.88.1.2:8080"},
		{"service:default/web 10.96.0.10:80/tcp", "if:blue/c2/eth0", EdgeBackend, "10.88.1.3:8080"},
		{"service:default/ext 10.96.0.11:443/tcp", "addr:192.0.2.50", EdgeBackend, "192.0.2.50:443"},
	}
	for _, e := range wantEdges {
		if !has(e.From, e.To, e.Kind, e.Label) {
			t.Errorf("no edge %+v", e)
		}
	}
	if has("service:default/web 10.96.0.10:80/tcp", "if:blue/c5/eth0", EdgeBackend, "10.88.1.5:8080") {
		t.Error("a detaching endpoint is drawn as a backend")
	}
	for _, e := range g.Edges {
		if _, ok := g.Node(e.From); !ok {
			t.Errorf("edge %+v from no node", e)
		}
		if _, ok := g.Node(e.To); !ok {
			t.Errorf("edge %+v to no node", e)
		}
	}

	// Without kernel facts: the intended routes, without a state, and nothing else.
	in.Kernel = nil
	g = Build(in)
	for _, n := range g.Nodes {
		if n.Kind == KindRoute && n.State != "" {
			t.Errorf("route %q has state %q without kernel facts", n.ID, n.State)
		}
	}
	if _, ok := g.Node("route:10.88.1.128/25 dev cni0"); ok {
		t.Error("a kernel route drawn without kernel facts")
	}
	if _, ok := g.Node("route:10.88.2.2/32 dev " + strings.TrimPrefix(c3veth, "veth:")); !ok {
		t.Error("routed endpoint's /32 not drawn")
	}
}

// TestBuildOrder: the graph does not depend on the order of its input.
func TestBuildOrder(t *testing.T) {
	in := representative(t)
	want := Build(in).JSON()
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		r.Shuffle(len(in.Networks), func(i, j int) { in.Networks[i], in.Networks[j] = in.Networks[j], in.Networks[i] })
		r.Shuffle(len(in.Endpoints), func(i, j int) { in.Endpoints[i], in.Endpoints[j] = in.Endpoints[j], in.Endpoints[i] })
		r.Shuffle(len(in.Services), func(i, j int) { in.Services[i], in.Services[j] = in.Services[j], in.Services[i] })
		r.Shuffle(len(in.Kernel.Routes), func(i, j int) { in.Kernel.Routes[i], in.Kernel.Routes[j] = in.Kernel.Routes[j], in.Kernel.Routes[i] })
		if got := Build(in).JSON(); !bytes.Equal(got, want) {
			t.Fatalf("shuffled input gives another graph:\n%s", got)
		}
	}
}

// TestEmpty: a node without networks is its namespace alone, in every format.
func TestEmpty(t *testing.T) {
	g := Build(Input{})
	if len(g.Nodes) != 1 || g.Nodes[0].ID != NodeNamespace {
		t.Errorf("nodes %+v", g.Nodes)
	}
	if got := string(g.JSON()); !strings.Contains(got, `"edges": []`) {
		t.Errorf("JSON of an empty graph: %s", got)
	}
	parseSVG(t, g.SVG())
	if !strings.HasPrefix(g.DOT(), "digraph podnet {") {
		t.Errorf("DOT: %s", g.DOT())
	}
}

// svgBox is a rect of the drawing, by the data-id of its group.
type svgBox struct {
	id, class  string
	x, y, w, h float64
}

// parseSVG checks that s is well-formed XML and returns its boxes (namespaces and
// nodes) and its edges' paths, by data-id.
func parseSVG(t *testing.T, s string) (boxes []svgBox, paths map[string]string) {
	t.Helper()
	paths = map[string]string{}
	d := xml.NewDecoder(strings.NewReader(s))
	var group svgBox
	var edge string
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		attr := map[string]string{}
		for _, a := range se.Attr {
			attr[a.Name.Local] = a.Value
		}
		f := func(k string) float64 {
			v, err := strconv.ParseFloat(attr[k], 64)
			if err != nil {
				t.Fatalf("<%s %s=%q>: %v", se.Name.Local, k, attr[k], err)
			}
			return v
		}
		switch se.Name.Local {
		case "g":
			group, edge = svgBox{id: attr["data-id"], class: attr["class"]}, ""
			if attr["data-from"] != "" {
				edge = attr["data-from"] + " -> " + attr["data-to"] + " " + attr["class"]
			}
		case "rect":
			if group.id != "" {
				group.x, group.y, group.w, group.h = f("x"), f("y"), f("width"), f("height")
				boxes = append(boxes, group)
			}
		case "path":
			if edge != "" {
				paths[edge] += attr["d"] + ";"
			}
		}
	}
	return boxes, paths
}

// TestSVGLayout: every node of the representative graph is drawn once, inside the box
// of its namespace, and no two nodes overlap.
func TestSVGLayout(t *testing.T) {
	g := Build(representative(t))
	boxes, paths := parseSVG(t, g.SVG())
	byID := map[string]svgBox{}
	for _, b := range boxes {
		if _, dup := byID[b.id]; dup {
			t.Errorf("%q drawn twice", b.id)
		}
		byID[b.id] = b
	}
	for _, n := range g.Nodes {
		b, ok := byID[n.ID]
		if !ok {
			t.Errorf("%q not drawn", n.ID)
			continue
		}
		if ns, ok := byID[n.Namespace]; ok && (b.x < ns.x || b.y < ns.y || b.x+b.w > ns.x+ns.w || b.y+b.h > ns.y+ns.h) {
			t.Errorf("%q at %+v is not inside its namespace %+v", n.ID, b, ns)
		}
	}
	for i, a := range boxes {
		for _, b := range boxes[i+1:] {
			if strings.HasPrefix(a.id, "ns:") || strings.HasPrefix(b.id, "ns:") {
				continue
			}
			if a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h {
				t.Errorf("%q %+v overlaps %q %+v", a.id, a, b.id, b)
			}
		}
	}
	drawn := 0
	for _, d := range paths {
		drawn += strings.Count(d, ";")
	}
	if drawn != len(g.Edges) {
		t.Errorf("%d edges drawn, graph has %d", drawn, len(g.Edges))
	}
}

// TestHandler: the page and the three formats over HTTP; the page loads nothing from
// elsewhere; an error of the source is a 500 that says it.
func TestHandler(t *testing.T) {
	g := Build(representative(t))
	var fail error
	srv := httptest.NewServer(Handler(func() (Graph, error) { return g, fail }))
	defer srv.Close()
	get := func(path string) (int, string, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}
	for _, tt := range []struct{ path, ctype, body string }{
		{"/graph.json", "application/json", string(g.JSON())},
		{"/graph.svg", "image/svg+xml", g.SVG()},
		{"/graph.dot", "text/vnd.graphviz; charset=utf-8", g.DOT()},
	} {
		code, ctype, body := get(tt.path)
		if code != http.StatusOK || ctype != tt.ctype || body != tt.body {
			t.Errorf("GET %s: %d %q, body equal %v", tt.path, code, ctype, body == tt.body)
		}
	}
	code, ctype, page := get("/graph")
	if code != http.StatusOK || ctype != "text/html; charset=utf-8" {
		t.Errorf("GET /graph: %d %q", code, ctype)
	}
	for _, want := range []string{`fetch("graph.json"`, "setTimeout(refresh, 1000)", ".n-veth>rect", `"nodeNamespace":"ns:node"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "/*LAYOUT*/") || strings.Contains(page, "/*SVG STYLE*/") {
		t.Error("page has an unfilled placeholder")
	}
	for _, external := range []string{"src=", "https:", "@import", "url(http"} {
		if strings.Contains(page, external) {
			t.Errorf("page refers to something outside itself: %q", external)
		}
	}
	var k map[string]any
	i := strings.Index(page, "const K = ")
	if err := json.NewDecoder(strings.NewReader(page[i+len("const K = "):])).Decode(&k); err != nil || k["charW"] != charW {
		t.Errorf("page's layout constants: %v, %v", k, err)
	}
	if code, _, _ := get("/metrics"); code != http.StatusNotFound {
		t.Errorf("GET /metrics: %d, want 404", code)
	}

	fail = errors.New("store closed")
	if code, _, body := get("/graph.json"); code != http.StatusInternalServerError || !strings.Contains(body, "store closed") {
		t.Errorf("GET /graph.json with a failing source: %d %q", code, body)
	}
}

// BenchmarkLiveGraph1000: what one refresh of the live page costs the agent on a node
// with 1,000 endpoints and a service over all of them: Build and the JSON the page
// fetches, and the SVG of /graph.svg.
func BenchmarkLiveGraph1000(b *testing.B) {
	n, err := spec.Canonicalize(api.NetworkSpec{Name: "big", Subnets: []string{"10.64.0.0/16"}})
	if err != nil {
		b.Fatal(err)
	}
	in := Input{Networks: []api.Network{n}}
	for i := range 1000 {
		id := "c" + strconv.Itoa(i)
		k := api.EndpointKey{Network: "big", ContainerID: id, IfName: "eth0"}
		addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 64, byte((i + 2) >> 8), byte(i + 2)}), 16)
		in.Endpoints = append(in.Endpoints, api.Endpoint{EndpointKey: k, Netns: "/run/netns/" + id, HostIf: spec.HostVethName(k),
			IPs: []netip.Prefix{addr}, Labels: map[string]string{"app": "web"}, State: api.StateAttached})
	}
	svc := api.Service{Name: "web", Namespace: "default", Selector: map[string]string{"app": "web"},
		Ports: []api.ServicePort{{Port: 80, TargetPort: 80, Protocol: "tcp"}}, VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}}
	svc.Backends = driver.Backends(svc, in.Endpoints)
	in.Services = []api.Service{svc}
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			Build(in).JSON()
		}
	})
	b.Run("svg", func(b *testing.B) {
		g := Build(in)
		for b.Loop() {
			g.SVG()
		}
	})
}
