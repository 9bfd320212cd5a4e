// Package kerneltest provides Fake, an in-memory kernel.Applier for tests of the agent
// that need no root: it keeps the node's links (bridges, host veths and what each
// endpoint put in its sandbox) and reports every change it is asked for as a line of
// text, the transcript the agent's golden tests compare. Tests change its state behind
// the agent's back (a link deleted by hand, drift that a repair finds) and make the
// next call of an operation fail.
package kerneltest

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/spec"
)

// Fake implements kernel.Applier in memory. Create it with New.
type Fake struct {
	// Record, when set, is called with one line per change asked for, before it is
	// applied (so that a test can stop the world there: a crash at that step). An
	// endpoint's creation is two steps, as in the kernel: the veth pair with its
	// addresses, then the host side up with its node routes (EndpointComplete).
	Record func(line string)

	mu              sync.Mutex
	nextIndex       int
	links           map[string]*link
	forwarding      bool
	gateway         bool // the routed gateway is set up
	local           []netip.Addr
	routes          []spec.NodeRoute
	tunnels         []spec.Tunnel
	bridgeNetfilter bool
	afterLinks      func()                       // AfterLinksOnce
	overlays        map[string]string            // "overlay NETWORK" or "learned routes" -> what was applied last, as recorded
	underlay        map[netip.Addr]string        // local address -> interface (SetUnderlay)
	sandboxes       map[string]bool              // paths OpenSandbox can open
	nodePaths       map[string]bool              // paths that are the node's own namespace
	sandboxIfs      map[string]map[string]string // sandbox path -> its interface -> host veth
	open            map[int]string               // handles OpenSandbox returned -> path
	fail            map[string]error             // operation -> error of its next call
	drift           map[string][]string          // host veth -> what RepairEndpoint will repair
	held            map[string]kernel.Holder     // "proto/port" -> who holds it
}

type link struct {
	index    int
	kind     string // "bridge" | "veth"
	master   string
	complete bool   // veth: host side up with its node routes
	sandbox  string // veth: the sandbox path of its peer
	peer     string // veth: the peer's name in the sandbox
}

var _ kernel.Applier = (*Fake)(nil)

// New returns a Fake without links, whose node routes are routes.
func New(routes ...spec.NodeRoute) *Fake {
	return &Fake{
		nextIndex: 2, // 1 is lo
		links:     map[string]*link{}, routes: routes,
		sandboxes: map[string]bool{}, nodePaths: map[string]bool{}, sandboxIfs: map[string]map[string]string{},
		open: map[int]string{}, fail: map[string]error{}, drift: map[string][]string{}, held: map[string]kernel.Holder{},
	}
}

// Clone returns a copy of f's kernel state, as a restarted agent finds it after a
// crash: links, sandboxes, routes; no open handles, no Record, no pending failures.
func (f *Fake) Clone() *Fake {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := New(slices.Clone(f.routes)...)
	c.nextIndex, c.forwarding, c.bridgeNetfilter, c.gateway, c.local = f.nextIndex, f.forwarding, f.bridgeNetfilter, f.gateway, slices.Clone(f.local)
	for n, l := range f.links {
		cl := *l
		c.links[n] = &cl
	}
	for p := range f.sandboxes {
		c.sandboxes[p] = true
	}
	for p := range f.nodePaths {
		c.nodePaths[p] = true
	}
	for p, ifs := range f.sandboxIfs {
		c.sandboxIfs[p] = map[string]string{}
		for k, v := range ifs {
			c.sandboxIfs[p][k] = v
		}
	}
	for k, v := range f.drift {
		c.drift[k] = slices.Clone(v)
	}
	for k, v := range f.held {
		c.held[k] = v
	}
	c.tunnels, c.overlays, c.underlay = slices.Clone(f.tunnels), maps.Clone(f.overlays), maps.Clone(f.underlay)
	return c
}

// AddSandbox makes path a sandbox namespace that OpenSandbox opens.
func (f *Fake) AddSandbox(path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sandboxes[path] = true
}

// RemoveSandbox makes the sandbox at path go away with its interfaces, as when its
// last process exits: the host veths of its endpoints vanish too.
func (f *Fake) RemoveSandbox(path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sandboxes, path)
	for _, host := range f.sandboxIfs[path] {
		delete(f.links, host)
	}
	delete(f.sandboxIfs, path)
}

// AddNodePath makes path name the node's own namespace: OpenSandbox refuses it.
func (f *Fake) AddNodePath(path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodePaths[path] = true
}

// FailNext makes the next call of op (a method name: "AddEndpoint", "EnsureBridge", ...;
// "AddEndpoint.up" for the second step of AddEndpoint) fail with err, after it was
// recorded; a failed step changes nothing, and AddEndpoint removes what its first step
// made, as the kernel applier does.
func (f *Fake) FailNext(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op] = err
}

// Drift makes the next RepairEndpoint of hostIf find and repair what (e.g. "node route
// 10.88.1.2/32"), as if someone changed it by hand.
func (f *Fake) Drift(hostIf string, what ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drift[hostIf] = append(f.drift[hostIf], what...)
}

// Hold makes PortHolder report h as the holder of proto/port.
func (f *Fake) Hold(proto string, port uint16, h kernel.Holder) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[fmt.Sprintf("%s/%d", proto, port)] = h
}

// DeleteLinkBehind removes a link without recording it: someone else did. A deleted
// bridge's ports lose their master; a deleted veth takes its sandbox end along.
func (f *Fake) DeleteLinkBehind(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteLocked(name)
}

// AddVethBehind creates a host veth that no endpoint record owns (a crash between
// creating it and recording its endpoint cannot happen: an orphan from another run).
func (f *Fake) AddVethBehind(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[name] = &link{index: f.nextIndex, kind: "veth", complete: true}
	f.nextIndex++
}

// State describes the node's links and the sandboxes' interfaces, one per line,
// sorted: what a test compares after a sequence of operations.
func (f *Fake) State() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for name, l := range f.links {
		s := fmt.Sprintf("link %s %s", name, l.kind)
		if l.master != "" {
			s += " master " + l.master
		}
		if l.kind == "veth" {
			if !l.complete {
				s += " down"
			}
			if l.sandbox != "" {
				s += fmt.Sprintf(" peer %s in %s", l.peer, l.sandbox)
			}
		}
		lines = append(lines, s)
	}
	if f.gateway {
		lines = append(lines, "routed gateway")
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// Veths lists the node's veths, sorted.
func (f *Fake) Veths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for name, l := range f.links {
		if l.kind == "veth" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// begin records a change and returns the failure FailNext asked for.
func (f *Fake) begin(op, format string, args ...any) error {
	if f.Record != nil {
		f.Record(fmt.Sprintf(format, args...))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.fail[op]
	delete(f.fail, op)
	return err
}

// EnableForwarding implements kernel.Applier.
func (f *Fake) EnableForwarding() error {
	f.mu.Lock()
	on := f.forwarding
	f.mu.Unlock()
	if on {
		return nil // the real one reads first and writes nothing then
	}
	if err := f.begin("EnableForwarding", "enable forwarding"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forwarding = true
	return nil
}

// BridgeNetfilter implements kernel.Applier.
func (f *Fake) BridgeNetfilter(on bool) error {
	f.mu.Lock()
	same := f.bridgeNetfilter == on
	f.mu.Unlock()
	if same {
		return nil // the real one reads first and writes nothing then
	}
	if err := f.begin("BridgeNetfilter", "bridge netfilter %v", on); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bridgeNetfilter = on
	return nil
}

// Routes implements kernel.Applier.
func (f *Fake) Routes() ([]spec.NodeRoute, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.routes), nil
}

// Tunnels implements kernel.Applier: the tunnels AddTunnel made.
func (f *Fake) Tunnels() ([]spec.Tunnel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tunnels), nil
}

// AddTunnel gives the node an overlay device that is not podnet's, as another tool
// made it.
func (f *Fake) AddTunnel(t spec.Tunnel) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tunnels = append(f.tunnels, t)
}

// SyncOverlay implements kernel.Applier: it records the overlay when it differs from
// the one applied last for its network.
func (f *Fake) SyncOverlay(o plan.Overlay) error {
	var parts []string
	if d := o.Device; d.Name != "" {
		parts = append(parts, fmt.Sprintf("vxlan %s id %d port %d local %s dev %s mtu %d mac %s", d.Name, d.VNI, d.Port, d.Local, d.Dev, d.MTU, d.MAC))
	}
	for _, p := range o.Peers {
		parts = append(parts, fmt.Sprintf("fdb %s dst %s", p.MAC, p.NodeIP))
	}
	parts = append(parts, routeTexts(o.Routes)...)
	return f.recordOverlay("SyncOverlay", "overlay "+o.Network, strings.Join(parts, "; "))
}

// SyncLearnedRoutes implements kernel.Applier: it records the routes when they differ
// from the ones applied last.
func (f *Fake) SyncLearnedRoutes(routes []plan.OverlayRoute) error {
	return f.recordOverlay("SyncLearnedRoutes", "learned routes", strings.Join(routeTexts(routes), "; "))
}

// recordOverlay records text as what key holds when it differs from what it held.
func (f *Fake) recordOverlay(op, key, text string) error {
	f.mu.Lock()
	same := f.overlays[key] == text
	f.mu.Unlock()
	if same {
		return nil
	}
	if err := f.begin(op, "%s: %s", key, text); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.overlays == nil {
		f.overlays = map[string]string{}
	}
	f.overlays[key] = text
	return nil
}

func routeTexts(routes []plan.OverlayRoute) []string {
	var parts []string
	for _, r := range routes {
		onlink := ""
		if r.Onlink {
			onlink = " onlink"
		}
		parts = append(parts, fmt.Sprintf("route %s via %s dev %s%s", r.Dst, r.Via, r.Dev, onlink))
	}
	return parts
}

// RemoveOverlay implements kernel.Applier.
func (f *Fake) RemoveOverlay(device string, subnets []netip.Prefix) error {
	if err := f.begin("RemoveOverlay", "remove overlay %s %s", device, prefixes(subnets)); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for network, text := range f.overlays {
		if device != "" && strings.Contains(text, "vxlan "+device+" ") {
			delete(f.overlays, network)
		}
	}
	return nil
}

// OnLink implements kernel.Applier: every address is on the fake's link "eth0".
func (f *Fake) OnLink(addr netip.Addr) (string, bool, error) { return "eth0", true, nil }

// SetUnderlay gives the fake node a local address on dev.
func (f *Fake) SetUnderlay(addr netip.Addr, dev string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.underlay == nil {
		f.underlay = map[netip.Addr]string{}
	}
	f.underlay[addr] = dev
}

// Underlay implements kernel.Applier: the interfaces SetUnderlay gave, MTU 1500.
func (f *Fake) Underlay(addr netip.Addr) (string, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if dev, ok := f.underlay[addr]; ok {
		return dev, 1500, nil
	}
	return "", 0, fmt.Errorf("no interface of the node has address %s", addr)
}

// LinkExists implements kernel.Applier.
func (f *Fake) LinkExists(name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.links[name]
	return ok, nil
}

// EnsureBridge implements kernel.Applier: it records a change only when the bridge is
// missing (the real one compares first, too).
func (f *Fake) EnsureBridge(b plan.Bridge) error {
	if b.Name == "" {
		return nil
	}
	f.mu.Lock()
	_, ok := f.links[b.Name]
	f.mu.Unlock()
	if ok {
		return nil
	}
	if err := f.begin("EnsureBridge", "create bridge %s %s mtu %d", b.Name, prefixes(b.Addrs), b.MTU); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[b.Name] = &link{index: f.nextIndex, kind: "bridge"}
	f.nextIndex++
	return nil
}

// EnsureRoutedGateway implements kernel.Applier.
func (f *Fake) EnsureRoutedGateway() error {
	f.mu.Lock()
	on := f.gateway
	f.mu.Unlock()
	if on {
		return nil
	}
	if err := f.begin("EnsureRoutedGateway", "set up routed gateway"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gateway = true
	return nil
}

// RemoveRoutedGateway implements kernel.Applier.
func (f *Fake) RemoveRoutedGateway() error {
	if err := f.begin("RemoveRoutedGateway", "remove routed gateway"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gateway = false
	return nil
}

// EnsureLocalAddress implements kernel.Applier.
func (f *Fake) EnsureLocalAddress(addr netip.Addr) error {
	f.mu.Lock()
	has := slices.Contains(f.local, addr)
	f.mu.Unlock()
	if has {
		return nil
	}
	if err := f.begin("EnsureLocalAddress", "add local address %s", addr); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.local = append(f.local, addr)
	return nil
}

// DeleteLink implements kernel.Applier.
func (f *Fake) DeleteLink(name string) error {
	f.mu.Lock()
	_, ok := f.links[name]
	f.mu.Unlock()
	if !ok {
		return nil // gone already: nothing to ask the kernel
	}
	if err := f.begin("DeleteLink", "delete link %s", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteLocked(name)
	return nil
}

// DeleteLinkIndex implements kernel.Applier.
func (f *Fake) DeleteLinkIndex(index int) error {
	f.mu.Lock()
	name := ""
	for n, l := range f.links {
		if l.index == index {
			name = n
		}
	}
	f.mu.Unlock()
	if name == "" {
		return nil
	}
	if err := f.begin("DeleteLinkIndex", "delete link %s (by index)", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteLocked(name)
	return nil
}

func (f *Fake) deleteLocked(name string) {
	l, ok := f.links[name]
	if !ok {
		return
	}
	delete(f.links, name)
	if l.kind == "bridge" {
		for _, o := range f.links {
			if o.master == name {
				o.master = ""
			}
		}
	}
	if l.sandbox != "" {
		delete(f.sandboxIfs[l.sandbox], l.peer)
	}
}

// LinksWithPrefix implements kernel.Applier.
func (f *Fake) LinksWithPrefix(prefix string) (map[string]int, error) {
	f.mu.Lock()
	out := map[string]int{}
	for n, l := range f.links {
		if strings.HasPrefix(n, prefix) {
			out[n] = l.index
		}
	}
	after := f.afterLinks
	f.afterLinks = nil
	f.mu.Unlock()
	if after != nil {
		after()
	}
	return out, nil
}

// AfterLinksOnce runs fn once, after the next LinksWithPrefix computed its answer and
// before it returns it: what happens in the kernel while the caller still holds an old
// list.
func (f *Fake) AfterLinksOnce(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.afterLinks = fn
}

// OpenSandbox implements kernel.Applier. The handle it returns is a real namespace
// descriptor (of the test process's own namespace, which nothing enters), so that the
// agent's Close of it is a real close.
func (f *Fake) OpenSandbox(fd int, path string) (netns.NsHandle, error) {
	if fd >= 0 {
		unix.Close(fd) // a real descriptor: the fake cannot tell where it leads
		return netns.None(), fmt.Errorf("fake kernel: sandbox descriptors are not supported, pass a path")
	}
	f.mu.Lock()
	node, known := f.nodePaths[path], f.sandboxes[path]
	f.mu.Unlock()
	switch {
	case node:
		return netns.None(), kernel.ErrNodeNamespace
	case !known:
		return netns.None(), fmt.Errorf("cannot open: %w", os.ErrNotExist)
	}
	h, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		return netns.None(), err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.open[int(h)] = path
	return h, nil
}

func (f *Fake) sandboxPath(h netns.NsHandle) (string, error) {
	p, ok := f.open[int(h)]
	if !ok {
		return "", fmt.Errorf("fake kernel: handle %d was not opened by OpenSandbox", h)
	}
	return p, nil
}

// AddEndpoint implements kernel.Applier, in two recorded steps.
func (f *Fake) AddEndpoint(sandbox netns.NsHandle, ep plan.Endpoint) error {
	f.mu.Lock()
	path, err := f.sandboxPath(sandbox)
	f.mu.Unlock()
	if err != nil {
		return err
	}
	master := ""
	if ep.Master != "" {
		master = " master " + ep.Master
	}
	if err := f.begin("AddEndpoint", "add veth %s%s, peer %s in %s: %s mac %s", ep.HostIf, master, ep.SandboxIf, path, prefixes(ep.Addrs), ep.MAC); err != nil {
		return err
	}
	f.mu.Lock()
	if _, ok := f.sandboxIfs[path][ep.SandboxIf]; ok {
		f.mu.Unlock()
		return fmt.Errorf("%w: %s", kernel.ErrSandboxIfExists, ep.SandboxIf)
	}
	if _, ok := f.links[ep.HostIf]; ok {
		f.mu.Unlock()
		return fmt.Errorf("create veth %s: %w", ep.HostIf, unix.EEXIST)
	}
	f.links[ep.HostIf] = &link{index: f.nextIndex, kind: "veth", master: ep.Master, sandbox: path, peer: ep.SandboxIf}
	f.nextIndex++
	if f.sandboxIfs[path] == nil {
		f.sandboxIfs[path] = map[string]string{}
	}
	f.sandboxIfs[path][ep.SandboxIf] = ep.HostIf
	f.mu.Unlock()
	var routes []string
	for _, r := range ep.NodeRoutes {
		routes = append(routes, r.Dst.String())
	}
	if err := f.begin("AddEndpoint.up", "set %s up, node routes [%s]", ep.HostIf, strings.Join(routes, " ")); err != nil {
		f.mu.Lock()
		f.deleteLocked(ep.HostIf) // the real one removes what it created on failure
		f.mu.Unlock()
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[ep.HostIf]; ok {
		l.complete = true
	}
	return nil
}

// CheckEndpoint implements kernel.Applier.
func (f *Fake) CheckEndpoint(sandbox netns.NsHandle, ep plan.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	path, err := f.sandboxPath(sandbox)
	if err != nil {
		return err
	}
	l, ok := f.links[ep.HostIf]
	switch {
	case !ok:
		return fmt.Errorf("host interface %s: %w", ep.HostIf, kernel.ErrHostIfGone)
	case l.sandbox != path || l.peer != ep.SandboxIf:
		return fmt.Errorf("host interface %s: peer is %s in %s, want %s in %s", ep.HostIf, l.peer, l.sandbox, ep.SandboxIf, path)
	case l.master != ep.Master:
		return fmt.Errorf("host interface %s: master %q, want %q", ep.HostIf, l.master, ep.Master)
	case !l.complete:
		return fmt.Errorf("host interface %s: down", ep.HostIf)
	}
	return nil
}

// EndpointComplete implements kernel.Applier.
func (f *Fake) EndpointComplete(hostIf string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[hostIf]
	return ok && l.complete, nil
}

// RepairEndpoint implements kernel.Applier: it repairs a lost bridge master, an
// incomplete host side and what Drift set, and records each.
func (f *Fake) RepairEndpoint(ep plan.Endpoint) ([]string, error) {
	f.mu.Lock()
	l, ok := f.links[ep.HostIf]
	var repairs []string
	if ok {
		if l.master != ep.Master {
			repairs = append(repairs, "master "+ep.Master)
		}
		if !l.complete {
			repairs = append(repairs, "up")
		}
		repairs = append(repairs, f.drift[ep.HostIf]...)
	}
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("repair %s: %w", ep.HostIf, kernel.ErrHostIfGone)
	}
	if len(repairs) == 0 {
		return nil, nil
	}
	if err := f.begin("RepairEndpoint", "repair %s: %s", ep.HostIf, strings.Join(repairs, ", ")); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[ep.HostIf]; ok {
		l.master, l.complete = ep.Master, true
	}
	delete(f.drift, ep.HostIf)
	return repairs, nil
}

// PortHolder implements kernel.Applier, from Hold.
func (f *Fake) PortHolder(proto string, ip netip.Addr, port uint16) (kernel.Holder, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.held[fmt.Sprintf("%s/%d", proto, port)]
	return h, ok, nil
}

// FlushConntrack implements kernel.Applier.
func (f *Fake) FlushConntrack(proto string, dst netip.Addr, dport uint16) (int, error) {
	host := "*"
	if dst.IsValid() {
		host = dst.String()
	}
	if err := f.begin("FlushConntrack", "flush conntrack %s to %s:%d", proto, host, dport); err != nil {
		return 0, err
	}
	return 0, nil
}

// Conntrack implements kernel.Applier: an empty table of 65,536 entries.
func (f *Fake) Conntrack() (count, limit int, err error) { return 0, 65536, nil }

// Close implements kernel.Applier.
func (f *Fake) Close() {}

// ErrInjected is a ready error for FailNext.
var ErrInjected = errors.New("injected failure")

func prefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}
