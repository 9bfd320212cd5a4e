package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// referenceCNIPath is where Debian's containernetworking-plugins installs the plugins.
const referenceCNIPath = "/usr/lib/cni"

// reference is Debian's reference bridge plugin with host-local IPAM and ipMasq. It
// configures the namespace it runs in, so it is exec'd inside the node namespace:
// there it creates the bridge, the host veths and the masquerade rules (with the
// iptables binary).
type reference struct {
	cni *cniPlugin
}

var _ runner = (*reference)(nil)

func (r *reference) Setup(tb *testbed) error {
	bridge := filepath.Join(referenceCNIPath, "bridge")
	for _, bin := range []string{bridge, filepath.Join(referenceCNIPath, "host-local")} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s missing (apt-get install containernetworking-plugins)", bin)
		}
	}
	var err error
	r.cni, err = newCNIPlugin(tb, bridge, referenceCNIPath, map[string]any{
		"cniVersion": "1.0.0",
		"name":       "bench",
		"type":       "bridge",
		"bridge":     "cni0",
		"isGateway":  true,
		"ipMasq":     true,
		"ipam": map[string]any{
			"type":    "host-local",
			"subnet":  "10.99.0.0/16",
			"dataDir": filepath.Join(tb.dir, "ipam"),
		},
	})
	return err
}

func (r *reference) Add(i int) error { return r.cni.add(i) }
func (r *reference) Del(i int) error { return r.cni.del(i) }
func (r *reference) Teardown() error { return nil }
