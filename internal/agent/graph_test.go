package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/graph"
	"github.com/podnet/podnet/internal/kernel/kerneltest"
	"github.com/podnet/podnet/internal/portproxy/portproxytest"
	"github.com/podnet/podnet/internal/spec"
)

// routesKernel is the fake kernel with a routing table the test writes: the fake
// models links, not the routes the kernel derives from them (a bridge's connected
// route), so the test plays that part of the kernel.
type routesKernel struct {
	*kerneltest.Fake
	mu     sync.Mutex // guards extra
	extra  []spec.NodeRoute
	broken error // Routes fails with it when set
}

func (k *routesKernel) Routes() ([]spec.NodeRoute, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.broken != nil {
		return nil, k.broken
	}
	routes, err := k.Fake.Routes()
	return append(routes, k.extra...), err
}

func (k *routesKernel) addRoutes(dst, dev string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.extra = append(k.extra, spec.NodeRoute{Dst: netip.MustParsePrefix(dst), Dev: dev})
}

// startGraphAgent starts an agent on fakes with a bridge network blue (its
// connected routes in the kernel), a routed network green, and a service web that
// selects app=web.
func startGraphAgent(t *testing.T) (*fakeAgent, *routesKernel) {
	t.Helper()
	node := newFakeNode()
	k := &routesKernel{Fake: node.kernel}
	tr := newTranscript(t)
	proxy := &portproxytest.Fake{Record: tr.record}
	node.kernel.Record, node.tables.Record = tr.record, tr.record
	a, err := New(Config{Store: node.store, Kernel: k, Tables: node.tables, Proxy: proxy, Now: func() time.Time { return fakeNow },
		ReconcileInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), DNS: DNSConfig{Disable: true}})
	if err != nil {
		t.Fatal(err)
	}
	fa := &fakeAgent{Agent: a, node: node, proxy: proxy, tr: tr}
	t.Cleanup(func() { fa.Close() })
	fa.createNetwork(t, blueSpec)
	k.addRoutes("10.88.1.0/24", "pn-blue")
	k.addRoutes("fd00:88:1::/64", "pn-blue")
	fa.createNetwork(t, greenSpec)
	if _, err := fa.CreateService(api.ServiceSpec{Name: "web", Selector: map[string]string{"app": "web"},
		Ports: []api.ServicePort{{Port: 80, TargetPort: 8080, Protocol: "tcp"}}}); err != nil {
		t.Fatal(err)
	}
	return fa, k
}

func webReq(network, id string, ports ...api.PortMapping) api.AttachRequest {
	req := attachReq(network, id, ports...)
	req.Labels = map[string]string{"app": "web"}
	return req
}

func (fa *fakeAgent) mustAttach(t *testing.T, req api.AttachRequest) {
	t.Helper()
	if _, err := fa.Attach(req, -1); err != nil {
		t.Fatal(err)
	}
	if err := fa.idle(); err != nil {
		t.Fatal(err)
	}
}

// TestGraph: the agent's graph is its store's records with the kernel's routes; the
// CLI's, read through the API, is the same without the kernel's routes.
func TestGraph(t *testing.T) {
	fa, k := startGraphAgent(t)
	fa.mustAttach(t, webReq("blue", "c1", web))
	fa.mustAttach(t, webReq("green", "c3"))
	k.AddTunnel(spec.Tunnel{Name: "flannel.1", Kind: "vxlan", ID: 1, Port: 8472, Dev: "eth0", MTU: 1450})

	g, err := fa.Graph()
	if err != nil {
		t.Fatal(err)
	}
	c3 := spec.HostVethName(key("green", "c3"))
	for id, state := range map[string]string{
		"route:10.88.1.0/24 dev pn-blue":   graph.StateOK,
		"route:fd00:88:1::/64 dev pn-blue": graph.StateOK,
		// The fake kernel holds no endpoint routes: the routed /32 is missing there.
		"route:10.88.2.1/32 dev " + c3: graph.StateMissing,
	} {
		if n, ok := g.Node(id); !ok || n.State != state {
			t.Errorf("node %q: %+v (found %v), want state %q", id, n, ok, state)
		}
	}
	for _, e := range []graph.Edge{
		{From: "veth:" + spec.HostVethName(key("blue", "c1")), To: "if:blue/c1/eth0", Kind: graph.EdgeVeth},
		{From: "port:tcp *:8080", To: "if:blue/c1/eth0", Kind: graph.EdgeDNAT, Label: "10.88.1.2:80"},
		{From: "service:default/web 10.96.0.2:80/tcp", To: "if:blue/c1/eth0", Kind: graph.EdgeBackend, Label: "10.88.1.2:8080"},
		{From: "service:default/web 10.96.0.2:80/tcp", To: "if:green/c3/eth0", Kind: graph.EdgeBackend, Label: "10.88.2.1:8080"},
		// The kernel's tunnels, from the kernel applier.
		{From: "tunnel:flannel.1", To: "link:eth0", Kind: graph.EdgeUnderlay},
	} {
		if !slices.Contains(g.Edges, e) {
			t.Errorf("no edge %+v in\n%s", e, g.JSON())
		}
	}

	// The CLI's way: the records through the API socket.
	socket := filepath.Join(t.TempDir(), "podnet.sock")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- fa.Serve(ctx, socket) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	c := api.NewClient(socket)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := c.Status(ctx); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	in, err := graph.Read(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	own, err := fa.graphInput()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := graph.Build(in).JSON(), graph.Build(own).JSON(); string(got) != string(want) {
		t.Errorf("graph read through the API differs from the agent's:\n--- API\n%s--- agent\n%s", got, want)
	}

	k.mu.Lock()
	k.broken = errors.New("netlink: dump interrupted")
	k.mu.Unlock()
	if _, err := fa.Graph(); err == nil || !strings.Contains(err.Error(), "dump interrupted") {
		t.Errorf("Graph with a failing route dump: %v", err)
	}
}

// chromium finds the browser; without it the test skips, or fails under CI=true
// (make test-deps installs Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found (make test-deps installs it)")
	}
	t.Skip("chromium not found (make test-deps installs it)")
	return ""
}

// artifact is where a test keeps a file for people to look at after the run:
// $PODNET_ARTIFACTS, else testdata/artifacts (ignored by git).
func artifact(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("PODNET_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// drawing lists the boxes and edge paths of the drawing under root (a document or
// an element), sorted; it runs in the page.
const drawing = `root => [...root.querySelectorAll("g[data-id] > rect")]
	.map(r => r.parentNode.getAttribute("data-id") + " " + ["x", "y", "width", "height"].map(a => r.getAttribute(a)).join(","))
	.concat([...root.querySelectorAll("g.edge > path")]
		.map(p => p.parentNode.getAttribute("data-from") + " -> " + p.parentNode.getAttribute("data-to") + " " + p.getAttribute("d")))
	.sort()`

// TestGraphPageInChromium: the agent's /graph page in headless Chromium shows a
// sandbox attached after the page was loaded, and its service backend, without a
// reload; a detached one goes away; the page draws what graph.svg draws. A screenshot
// is kept (testdata/artifacts/graph.png, or $PODNET_ARTIFACTS/graph.png).
func TestGraphPageInChromium(t *testing.T) {
	browser := chromium(t)
	fa, _ := startGraphAgent(t)
	fa.mustAttach(t, webReq("blue", "c1", web))
	srv := httptest.NewServer(graph.Handler(fa.Graph))
	defer srv.Close()

	out := &lockedWriter{w: &strings.Builder{}}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(browser),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // root has no sandbox
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
		chromedp.CombinedOutput(out))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v\nchromium said:\n%s", what, err, out.String())
		}
	}
	present := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.WaitReady(chromedp.CSS(sel)) }

	run("load /graph", chromedp.Navigate(srv.URL+"/graph"), present(`g[data-id="if:blue/c1/eth0"]`))
	// A reload would lose this.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.podnetMark = 7`)); err != nil {
		t.Fatal(err)
	}

	fa.mustAttach(t, webReq("blue", "c2"))
	run("sandbox c2 attached after the page loaded",
		present(`g.sandbox[data-id="ns:/run/netns/c2"]`),
		present(`g[data-id="if:blue/c2/eth0"]`),
		present(`g.edge.e-backend[data-to="if:blue/c2/eth0"]`))
	if mark, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.podnetMark`)); err != nil || mark != 7 {
		t.Fatalf("the page was reloaded (mark %d, %v)", mark, err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := artifact(t, "graph.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)

	if err := fa.Detach(api.DetachRequest{EndpointKey: key("blue", "c1")}); err != nil {
		t.Fatal(err)
	}
	if err := fa.idle(); err != nil {
		t.Fatal(err)
	}
	run("sandbox c1 detached", chromedp.WaitNotPresent(chromedp.CSS(`g[data-id="if:blue/c1/eth0"]`)))

	// Nothing changes any more: the page's drawing is graph.svg's, box for box.
	pair, err := chromedp.Run(ctx, chromedp.Evaluate[[2][]string](`(async () => {
		const draw = `+drawing+`;
		const svg = new DOMParser().parseFromString(await (await fetch("graph.svg")).text(), "image/svg+xml");
		return [draw(document.getElementById("graph")), draw(svg)];
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	page, svg := pair[0], pair[1]
	if len(svg) == 0 || !slices.Equal(page, svg) {
		t.Errorf("the page draws otherwise than graph.svg:\n--- page\n%s\n--- graph.svg\n%s", strings.Join(page, "\n"), strings.Join(svg, "\n"))
	}
}

// lockedWriter serializes the browser's output, written from another goroutine.
type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
