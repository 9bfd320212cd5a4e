package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// podnet is a podnet agent managing the node namespace (started here as a child
// process with --netns) and the podnet-cni plugin exec'd per pod like a runtime would.
// With publish, the plugin declares the portMappings capability and each pod publishes
// one port (podPorts).
type podnet struct {
	bin     string // directory holding podnet and podnet-cni
	publish bool
	agent   *agentProcess
	cni     *cniRuntime
}

var _ runner = (*podnet)(nil)

func (p *podnet) Setup(tb *testbed) error {
	if plugin := filepath.Join(p.bin, "podnet-cni"); !fileExists(plugin) {
		return fmt.Errorf("%s missing (make build)", plugin)
	}
	var err error
	if p.agent, err = startAgent(p.bin, tb); err != nil {
		return err
	}
	plugin := map[string]any{
		"type":    "podnet-cni",
		"network": "bench",
		"socket":  p.agent.socket,
		"driver":  "bridge",
		"subnets": []string{"10.98.0.0/16"},
	}
	var args capabilityArgs
	if p.publish {
		plugin["capabilities"] = map[string]bool{"portMappings": true}
		args = podPorts
	}
	p.cni = newCNIRuntime(tb, p.bin, []map[string]any{plugin}, args)
	return nil
}

func (p *podnet) Add(i int) error { return p.cni.add(i) }
func (p *podnet) Del(i int) error { return p.cni.del(i) }

// drained: the agent holds no endpoint (the DELed pods' veths are gone and their
// addresses free; nothing else is attached when it is asked).
func (p *podnet) drained() (bool, error) {
	st, err := p.agent.client().Status(context.Background())
	return st.Endpoints == 0, err
}

// Teardown stops the agent; see agentProcess.stop.
func (p *podnet) Teardown() error { return p.agent.stop() }

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
