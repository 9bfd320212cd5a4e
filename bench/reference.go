package main

import (
	"fmt"
	"path/filepath"
)

// referenceCNIPath is where Debian's containernetworking-plugins installs the plugins.
const referenceCNIPath = "/usr/lib/cni"

// reference is Debian's reference bridge plugin with host-local IPAM and ipMasq. It
// configures the namespace it runs in, so it is exec'd inside the node namespace:
// there it creates the bridge, the host veths and the masquerade rules (with the
// iptables binary). With publish, the portmap plugin is chained after it (the usual
// podman and containerd conflist) and each pod publishes one port (podPorts): portmap
// adds a DNAT chain per pod with the iptables binary.
type reference struct {
	publish bool
	cni     *cniRuntime
	// bin is the directory holding podnet, for the doctor figure ("": not diagnosed).
	bin string
}

// doctorBin and agentSocket make the node diagnosable when bin is set: a node without a
// podnet agent.
func (r *reference) doctorBin() string {
	if r.bin == "" {
		return ""
	}
	return filepath.Join(r.bin, "podnet")
}
func (r *reference) agentSocket() string { return "" }

var _ runner = (*reference)(nil)

func (r *reference) Setup(tb *testbed) error {
	plugins := []map[string]any{{
		"type":      "bridge",
		"bridge":    "cni0",
		"isGateway": true,
		"ipMasq":    true,
		"ipam": map[string]any{
			"type":    "host-local",
			"subnet":  "10.99.0.0/16",
			"dataDir": filepath.Join(tb.dir, "ipam"),
		},
	}}
	var args capabilityArgs
	if r.publish {
		plugins = append(plugins, map[string]any{
			"type":         "portmap",
			"capabilities": map[string]bool{"portMappings": true},
			"snat":         true,
		})
		args = podPorts
	}
	for _, name := range append(pluginTypes(plugins), "host-local") {
		if bin := filepath.Join(referenceCNIPath, name); !fileExists(bin) {
			return fmt.Errorf("%s missing (apt-get install containernetworking-plugins)", bin)
		}
	}
	r.cni = newCNIRuntime(tb, referenceCNIPath, plugins, args)
	return nil
}

func (r *reference) Add(i int) error { return r.cni.add(i) }
func (r *reference) Del(i int) error { return r.cni.del(i) }
func (r *reference) Teardown() error { return nil }
