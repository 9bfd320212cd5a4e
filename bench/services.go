package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
)

// The services section: how long a sandbox takes to set up a connection to a service VIP
// (TCP connect + a one-byte echo) when few and when many services are defined, and how
// long creating the services takes.
//
// Two testbeds side by side, "few" and "many", each a `podnet agent` on its node
// namespace with a bridge network, two backend sandboxes (an echo server on :8080 each)
// and a client sandbox. Services are created through the agent's API, one at a time:
// svc-<i> in namespace ns-<i mod 100>, port 80 to target port 8080 of both backends
// (manual endpoints: the backends sit in one namespace, the services spread over 100);
// svcFew in "few", -services in "many". Every VIP is then checked once. Timed: rounds of
// four connections in random order, one to the VIP of a random service of each testbed and
// one straight to a random backend of each (the same path without the VIP), so that drift
// of the machine weighs on both testbeds alike.

const (
	svcFew        = 10
	svcNetwork    = "svc-bench"
	svcSubnet     = "10.98.0.0/24"
	svcBackends   = 2
	svcPort       = 80
	svcTargetPort = 8080
	svcTarget     = 1.1 // VIP median with many services / with svcFew
	svcDialWait   = 2 * time.Second
	svcBatch      = 1000 // creations per progress line and per growth figure
	svcWarmup     = 20   // rounds of connections before the timed ones
	svcMaxFailed  = 20   // failed connections of one kind that end the rounds
	// maxServices keeps the VIPs within the agent's default service CIDR (a /16).
	maxServices = 60000
)

// svcBed is one testbed of the section.
type svcBed struct {
	tb        *testbed
	ns        []netns.NsHandle // client, then the backends
	agent     *agentproc.Proc
	c         *api.Client
	backends  []netip.AddrPort
	endpoints []string         // the backends as manual endpoints of a service
	vips      []netip.AddrPort // of the services created so far, in order
	createdAt []time.Time      // when the creation of each of them returned
	stops     []func()
}

// svcResult is the services section's outcome.
type svcResult struct {
	few, many int
	times     map[string][]time.Duration // by kind: "few-vip", "many-vip", "few-direct", "many-direct"
	failed    map[string]int             // connections that failed, by kind
	firstErr  map[string]string          // the first failure of each kind
	createFew summary                    // creating the services of "few", per call
	created   int                        // services created in "many"
	batches   []summary                  // per call, per svcBatch creations in "many"
	fill      time.Duration              // wall time of the creations in "many"
	check     []string                   // VIPs that did not answer the check after creation
	checked   int
	recheck   []string // the same VIPs once the agents reconciled
	listed    int      // services the "many" agent lists at the end
	listTook  time.Duration
	err       error
}

var svcKinds = []string{"few-vip", "many-vip", "few-direct", "many-direct"}

// measureServices runs the services section on its two testbeds.
func measureServices(ctx context.Context, prefix, binDir string, many, conns int) (res svcResult) {
	res = svcResult{few: svcFew, many: many, times: map[string][]time.Duration{}, failed: map[string]int{}, firstErr: map[string]string{}}
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "podnet-bench: services: %s\n", fmt.Sprintf(format, args...))
	}
	beds := map[string]*svcBed{}
	defer func() {
		for _, name := range []string{"few", "many"} {
			res.err = errors.Join(res.err, beds[name].close())
		}
	}()
	for _, name := range []string{"few", "many"} {
		b, err := newSvcBed(ctx, prefix+"-"+name, binDir)
		beds[name] = b
		if err != nil {
			res.err = fmt.Errorf("testbed %s: %w", name, err)
			return res
		}
	}
	few, manyBed := beds["few"], beds["many"]

	progress("creating %d services (testbed few)", svcFew)
	took, err := few.create(ctx, 0, svcFew)
	if err != nil {
		res.err = err
		return res
	}
	res.createFew = summarize(took)
	start := time.Now()
	for from := 0; from < many; from += svcBatch {
		to := min(from+svcBatch, many)
		progress("creating services %d-%d (testbed many)", from, to-1)
		took, err := manyBed.create(ctx, from, to)
		res.created = len(manyBed.vips)
		if err != nil {
			res.err = err
			return res
		}
		res.batches = append(res.batches, summarize(took))
	}
	res.fill = time.Since(start)
	listStart := time.Now()
	all, err := manyBed.c.Services(ctx, "")
	res.listTook = time.Since(listStart)
	if err != nil {
		res.err = fmt.Errorf("list services: %w", err)
		return res
	}
	res.listed = len(all)

	progress("checking every VIP once (%d)", len(few.vips)+len(manyBed.vips))
	res.checked = len(few.vips) + len(manyBed.vips)
	res.check = append(few.checkVIPs(ctx, "few"), manyBed.checkVIPs(ctx, "many")...)
	if len(res.check) > 0 {
		wait := 12 * time.Second // more than the agents' reconcile interval (10 s)
		progress("%d VIPs did not answer; checking them again in %v", len(res.check), wait)
		select {
		case <-ctx.Done():
			return res
		case <-time.After(wait):
		}
		res.recheck = append(few.checkVIPs(ctx, "few"), manyBed.checkVIPs(ctx, "many")...)
		res.err = fmt.Errorf("right after their creation, %d of %d VIPs did not answer (%d still did not answer %v later), the first: %s",
			len(res.check), res.checked, len(res.recheck), wait, res.check[0])
	}

	settle(ctx)
	progress("%d rounds: a connection to a VIP and one to a backend in each testbed", conns)
	r := rand.New(rand.NewPCG(uint64(many), 7))
	order := []int{0, 1, 2, 3}
	for round := range svcWarmup + conns {
		if ctx.Err() != nil || slices.ContainsFunc(svcKinds, func(k string) bool { return res.failed[k] >= svcMaxFailed }) {
			break
		}
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			kind := svcKinds[k]
			b := few
			if strings.HasPrefix(kind, "many") {
				b = manyBed
			}
			to := b.backends[r.IntN(len(b.backends))]
			if strings.HasSuffix(kind, "vip") {
				to = b.vips[r.IntN(len(b.vips))]
			}
			d, err := b.connect(to, byte(round))
			if round < svcWarmup {
				continue
			}
			if err != nil {
				if res.failed[kind] == 0 {
					res.firstErr[kind] = fmt.Sprintf("round %d, %s: %v; %s; agent log: %s", round, to, err, routesOf(b.ns[0]), agentNotes(b.agent))
				}
				res.failed[kind]++
				continue
			}
			res.times[kind] = append(res.times[kind], d)
		}
	}
	for _, kind := range svcKinds {
		if res.failed[kind] > 0 {
			res.err = errors.Join(res.err, fmt.Errorf("%d connections (%s) failed, the first: %s", res.failed[kind], kind, res.firstErr[kind]))
		}
	}
	return res
}

// newSvcBed builds a testbed: agent, network, backends with their echo servers, client.
func newSvcBed(ctx context.Context, prefix, binDir string) (b *svcBed, err error) {
	b = &svcBed{}
	if b.tb, err = newTestbed(prefix, 1+svcBackends); err != nil {
		return b, err
	}
	for _, path := range b.tb.sandboxes {
		h, err := netns.GetFromPath(path)
		if err != nil {
			return b, fmt.Errorf("open %s: %w", path, err)
		}
		b.ns = append(b.ns, h)
	}
	if b.agent, err = startAgent(binDir, b.tb); err != nil {
		return b, err
	}
	b.c = b.agent.Client()
	if _, err := b.c.CreateNetwork(ctx, api.NetworkSpec{Name: svcNetwork, Driver: api.DriverBridge, Subnets: []string{svcSubnet}}); err != nil {
		return b, fmt.Errorf("create network: %w", err)
	}
	attach := func(sb int, name string, labels map[string]string) (netip.Addr, error) {
		req := api.AttachRequest{
			EndpointKey: api.EndpointKey{Network: svcNetwork, ContainerID: name, IfName: "eth0"},
			Netns:       b.tb.sandboxes[sb], Name: name, Namespace: "ns-0", Labels: labels,
		}
		r, err := b.c.Attach(ctx, req, int(b.ns[sb]))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("attach %s: %w", name, err)
		}
		if len(r.IPs) == 0 {
			return netip.Addr{}, fmt.Errorf("attach %s: result without an address", name)
		}
		return r.IPs[0].Address.Addr(), nil
	}
	for i := range svcBackends {
		addr, err := attach(1+i, fmt.Sprintf("backend-%d", i), map[string]string{"app": "echo"})
		if err != nil {
			return b, err
		}
		stop, err := echoServer(b.ns[1+i])
		if err != nil {
			return b, err
		}
		b.stops = append(b.stops, stop)
		b.backends = append(b.backends, netip.AddrPortFrom(addr, svcTargetPort))
		b.endpoints = append(b.endpoints, addr.String())
	}
	if _, err := attach(0, "client", nil); err != nil {
		return b, err
	}
	return b, nil
}

// close stops the echo servers and the agent and removes the testbed; calling it on nil
// or on a partial testbed is harmless.
func (b *svcBed) close() error {
	if b == nil {
		return nil
	}
	for _, stop := range b.stops {
		stop()
	}
	err := b.agent.Stop()
	for _, h := range b.ns {
		h.Close()
	}
	if b.tb != nil {
		err = errors.Join(err, b.tb.remove())
	}
	return err
}

// create creates services from..to-1 one at a time and returns how long each call took.
func (b *svcBed) create(ctx context.Context, from, to int) ([]time.Duration, error) {
	took := make([]time.Duration, 0, to-from)
	for i := from; i < to; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		name, namespace := dnsServiceName(i)
		spec := api.ServiceSpec{Name: name, Namespace: namespace, Endpoints: b.endpoints,
			Ports: []api.ServicePort{{Name: "http", Port: svcPort, TargetPort: svcTargetPort, Protocol: "tcp"}}}
		start := time.Now()
		svc, err := b.c.CreateService(ctx, spec)
		d := time.Since(start)
		if err != nil {
			return nil, fmt.Errorf("create service %s/%s: %w", namespace, name, err)
		}
		if len(svc.VIPs) != 1 || len(svc.Backends) != svcBackends {
			return nil, fmt.Errorf("create service %s/%s: VIPs %v, %d backends, want 1 VIP and %d backends", namespace, name, svc.VIPs, len(svc.Backends), svcBackends)
		}
		b.vips = append(b.vips, netip.AddrPortFrom(svc.VIPs[0], svcPort))
		b.createdAt = append(b.createdAt, start.Add(d))
		took = append(took, d)
	}
	return took, nil
}

// connect times one connection from the client sandbox: connect, send one byte, receive
// it back. The namespace switch and the close are not timed.
func (b *svcBed) connect(to netip.AddrPort, x byte) (took time.Duration, err error) {
	err = inNetns(b.ns[0], func() error {
		start := time.Now()
		c, err := net.DialTimeout("tcp4", to.String(), svcDialWait)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(start.Add(svcDialWait))
		buf := []byte{x}
		if _, err := c.Write(buf); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		took = time.Since(start)
		if buf[0] != x {
			return fmt.Errorf("echo %d, want %d", buf[0], x)
		}
		return nil
	})
	return took, err
}

// checkVIPs connects once to every VIP and describes those that fail (the first one
// with what the agent logged).
func (b *svcBed) checkVIPs(ctx context.Context, bed string) []string {
	var failed []string
	for i, vip := range b.vips {
		if ctx.Err() != nil {
			break
		}
		if _, err := b.connect(vip, byte(i)); err != nil {
			name, ns := dnsServiceName(i)
			f := fmt.Sprintf("%s: %s/%s %s (created %s): %v", bed, ns, name, vip, b.createdAt[i].Format("15:04:05.000"), err)
			if len(failed) == 0 {
				f += "; agent log: " + agentNotes(b.agent)
			}
			failed = append(failed, f)
		}
	}
	return failed
}

// routesOf describes the links and IPv4 routes of ns, for an error message.
func routesOf(ns netns.NsHandle) string {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Sprintf("client namespace: %v", err)
	}
	defer h.Close()
	var parts []string
	links, err := h.LinkList()
	if err != nil {
		return fmt.Sprintf("client links: %v", err)
	}
	for _, l := range links {
		a := l.Attrs()
		parts = append(parts, fmt.Sprintf("link %s %s", a.Name, a.OperState))
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Sprintf("client routes: %v", err)
	}
	for _, r := range routes {
		parts = append(parts, "route "+r.String())
	}
	return "client namespace now: " + strings.Join(parts, ", ")
}

// agentNotes is the agent's log lines that tell about kernel state it repaired, and its
// warnings and errors (the last few).
func agentNotes(a *agentproc.Proc) string {
	b, err := os.ReadFile(a.LogPath())
	if err != nil {
		return err.Error()
	}
	var lines []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, "restoring") || strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			lines = append(lines, line)
		}
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	if len(lines) == 0 {
		return "nothing repaired, no warnings or errors"
	}
	s := strings.Join(lines, " / ")
	if len(s) > 1500 {
		s = s[:1500] + "..."
	}
	return s
}

// echoServer answers every TCP connection on :svcTargetPort inside ns with the first byte
// it gets, then waits for the client to close. stop closes the listener.
func echoServer(ns netns.NsHandle) (stop func(), err error) {
	var l net.Listener
	err = inNetns(ns, func() (err error) {
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", svcTargetPort))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("echo server: listen: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				if _, err := c.Write(b); err != nil {
					return
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return func() { l.Close() }, nil
}

// longCell is cell without the length limit of oneLine (up to 2,000 characters).
func longCell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 2000 {
		s = s[:2000] + "..."
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

// printServices prints the services table and the ratios.
func printServices(w io.Writer, many, conns int, res svcResult) {
	fmt.Fprintf(w, "### Service VIPs\n\n")
	fmt.Fprintf(w, "two testbeds side by side (an agent each), one with %d services, one with %d; in each, a client sandbox on a bridge network connects "+
		"to the VIP of a random service (port %d -> %d, %d backends on the same network, manual endpoints) and straight to a random backend: "+
		"TCP connect + one byte echoed; %d rounds of the four connections in random order; median and p90; "+
		"services svc-<i> in 100 namespaces, created one at a time through the agent's API\n\n", svcFew, many, svcPort, svcTargetPort, svcBackends, conns)
	fmt.Fprintf(w, "| services defined | VIP median | VIP p90 | direct median | direct p90 | VIP - direct (medians) | failed connections |\n")
	fmt.Fprintf(w, "|---:|---:|---:|---:|---:|---:|---:|\n")
	sums := map[string]summary{}
	for _, kind := range svcKinds {
		sums[kind] = summarize(res.times[kind])
	}
	for _, bed := range []struct {
		name     string
		services int
	}{{"few", svcFew}, {"many", many}} {
		v, d := sums[bed.name+"-vip"], sums[bed.name+"-direct"]
		failed := res.failed[bed.name+"-vip"] + res.failed[bed.name+"-direct"]
		if v.n == 0 || d.n == 0 {
			why := "not run"
			if res.err != nil {
				why = "failed: " + cell(res.err.Error())
			}
			fmt.Fprintf(w, "| %d | %s | | | | | %d |\n", bed.services, why, failed)
			continue
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %d |\n", bed.services, us(v.median), us(v.p90), us(d.median), us(d.p90),
			us(v.median-d.median), failed)
	}
	fmt.Fprintln(w)
	fv, mv, fd, md := sums["few-vip"], sums["many-vip"], sums["few-direct"], sums["many-direct"]
	if fv.n > 0 && mv.n > 0 && fd.n > 0 && md.n > 0 {
		r := float64(mv.median) / float64(fv.median)
		verdict := "meets target"
		if r > svcTarget {
			verdict = "MISSES target"
		}
		fmt.Fprintf(w, "- VIP connection median with %d services / with %d: %.2f (target <= %g, %s); the same for direct connections (the testbeds' own difference): %.2f\n",
			many, svcFew, r, svcTarget, verdict, float64(md.median)/float64(fd.median))
	} else {
		fmt.Fprintf(w, "- VIP connection median with %d services / with %d: n/a (target <= %g)\n", many, svcFew, svcTarget)
	}
	for _, kind := range svcKinds {
		if res.failed[kind] > 0 {
			fmt.Fprintf(w, "- %d connections (%s) failed, the first: %s\n", res.failed[kind], kind, longCell(res.firstErr[kind]))
		}
	}
	if res.checked > 0 {
		if len(res.check) == 0 {
			fmt.Fprintf(w, "- every VIP answered once right after the creations (%d)\n", res.checked)
		} else {
			fmt.Fprintf(w, "- right after the creations, %d of %d VIPs did not answer, e.g. %s; %d of them still did not answer 12 s later\n",
				len(res.check), res.checked, longCell(strings.Join(res.check[:min(3, len(res.check))], " / ")), len(res.recheck))
		}
	}
	if res.createFew.n > 0 {
		fmt.Fprintf(w, "- creating %d services: median %s, p90 %s per call\n", res.createFew.n, ms(res.createFew.median), ms(res.createFew.p90))
	}
	if n := len(res.batches); n > 0 && res.fill > 0 {
		first, last := res.batches[0], res.batches[n-1]
		fmt.Fprintf(w, "- creating %d services, one at a time: %.1f s wall (%.0f services/s); per call: services 0-%d median %s, p90 %s",
			res.created, res.fill.Seconds(), float64(res.created)/res.fill.Seconds(), first.n-1, ms(first.median), ms(first.p90))
		if n > 1 {
			fmt.Fprintf(w, "; services %d-%d median %s, p90 %s", res.created-last.n, res.created-1, ms(last.median), ms(last.p90))
		}
		fmt.Fprintln(w)
	}
	if res.listed > 0 {
		fmt.Fprintf(w, "- the agent lists %d services (one API call, %s)\n", res.listed, ms(res.listTook))
	}
	fmt.Fprintln(w)
}
