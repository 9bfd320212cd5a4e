package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agentproc"
)

// podnet is a podnet agent managing the node namespace (started here as a child
// process with --netns) and the podnet-cni plugin exec'd per pod like a runtime would.
// With publish, the plugin declares the portMappings capability and each pod publishes
// one port (podPorts). With direct, the benchmark asks the agent over its socket itself
// instead of exec'ing the plugin (passing the sandbox's namespace descriptor as the
// plugin does): the difference between the two rows is what the plugin's exec costs.
type podnet struct {
	bin     string // directory holding podnet and podnet-cni
	publish bool
	direct  bool
	agent   *agentproc.Proc
	cni     *cniRuntime
	tb      *testbed
}

var _ runner = (*podnet)(nil)

// benchNetwork is the network every podnet row attaches its pods to.
var benchNetwork = api.NetworkSpec{Name: "bench", Driver: "bridge", Subnets: []string{"10.98.0.0/16"}}

func (p *podnet) Setup(tb *testbed) error {
	if plugin := filepath.Join(p.bin, "podnet-cni"); !fileExists(plugin) {
		return fmt.Errorf("%s missing (make build)", plugin)
	}
	p.tb = tb
	var err error
	if p.agent, err = startAgent(p.bin, tb); err != nil {
		return err
	}
	plugin := map[string]any{
		"type":    "podnet-cni",
		"network": benchNetwork.Name,
		"socket":  p.agent.Socket(),
		"driver":  benchNetwork.Driver,
		"subnets": benchNetwork.Subnets,
	}
	var args capabilityArgs
	if p.publish {
		plugin["capabilities"] = map[string]bool{"portMappings": true}
		args = podPorts
	}
	p.cni = newCNIRuntime(tb, p.bin, []map[string]any{plugin}, args)
	return nil
}

func (p *podnet) Add(i int) error {
	if !p.direct {
		return p.cni.add(i)
	}
	fd, err := unix.Open(p.tb.sandboxes[i], unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open sandbox netns: %w", err)
	}
	defer unix.Close(fd)
	def := benchNetwork
	_, err = p.agent.Client().Attach(context.Background(), api.AttachRequest{EndpointKey: p.key(i), Netns: p.tb.sandboxes[i], Define: &def}, fd)
	return err
}

func (p *podnet) Del(i int) error {
	if !p.direct {
		return p.cni.del(i)
	}
	return p.agent.Client().Detach(context.Background(), api.DetachRequest{EndpointKey: p.key(i), Netns: p.tb.sandboxes[i]}, -1)
}

// key is pod i's attachment, as the plugin names it.
func (p *podnet) key(i int) api.EndpointKey {
	return api.EndpointKey{Network: benchNetwork.Name, ContainerID: fmt.Sprintf("bench%08d", i), IfName: "eth0"}
}

// drained: the agent holds no endpoint (the DELed pods' veths are gone and their
// addresses free; nothing else is attached when it is asked).
func (p *podnet) drained() (bool, error) {
	st, err := p.agent.Client().Status(context.Background())
	return st.Endpoints == 0, err
}

// parts times, n times each and alternating, the two fixed costs inside an ADD through
// the plugin: exec'ing podnet-cni from the node namespace as the runtime does (CNI
// VERSION, which answers without the agent) and a round trip to the agent over its
// socket (STATUS).
func (p *podnet) parts(n int) (exec, roundTrip summary, err error) {
	plugin := filepath.Join(p.bin, "podnet-cni")
	var execs, trips []time.Duration
	for range n {
		start := time.Now()
		if err := inNetns(p.tb.node, func() error { return runVersion(plugin) }); err != nil {
			return summary{}, summary{}, err
		}
		execs = append(execs, time.Since(start))
		start = time.Now()
		if _, err := p.agent.Client().Status(context.Background()); err != nil {
			return summary{}, summary{}, fmt.Errorf("agent status: %w", err)
		}
		trips = append(trips, time.Since(start))
	}
	return summarize(execs), summarize(trips), nil
}

// runVersion execs a CNI plugin with CNI_COMMAND=VERSION.
func runVersion(plugin string) error {
	cmd := exec.Command(plugin)
	cmd.Env = append(pluginEnv(), "CNI_COMMAND=VERSION")
	cmd.Stdin = bytes.NewReader([]byte(`{"cniVersion":"` + cniVersion + `"}`))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s VERSION: %w: %s", plugin, err, oneLine(string(out)))
	}
	return nil
}

// doctorBin and agentSocket make the node diagnosable (the ports section's doctor figure).
func (p *podnet) doctorBin() string   { return filepath.Join(p.bin, "podnet") }
func (p *podnet) agentSocket() string { return p.agent.Socket() }

// Teardown stops the agent; see agentproc.Proc.Stop.
func (p *podnet) Teardown() error { return p.agent.Stop() }

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
