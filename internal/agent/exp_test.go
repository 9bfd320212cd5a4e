package agent

import (
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/plan"
	"github.com/podnet/podnet/internal/spec"
)

func TestExpLatency(t *testing.T) {
	e := newEnv(t)
	n := e.network("blue", "10.89.0.0/16")
	var add, kern, floor []time.Duration
	for i := range 60 {
		ns, _ := e.lab.Sandbox()
		key := api.EndpointKey{Network: "blue", ContainerID: fmt.Sprint("c", i), IfName: "eth0"}
		fd, _ := unix.Dup(int(ns))
		s := time.Now()
		if _, err := e.agent.Attach(api.AttachRequest{EndpointKey: key}, fd); err != nil {
			t.Fatal(err)
		}
		add = append(add, time.Since(s))
		ns2, _ := e.lab.Sandbox()
		k2 := api.EndpointKey{Network: "blue", ContainerID: fmt.Sprint("k", i), IfName: "eth0"}
		p := plan.EndpointFor(n, k2, []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 89, 100, byte(i + 2)}), 16)}, nil)
		s = time.Now()
		if err := e.agent.node.AddEndpoint(ns2, p); err != nil {
			t.Fatal(err)
		}
		kern = append(kern, time.Since(s))
		_ = spec.VethPrefix
	}
	med := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	t.Logf("attach median %s, kernel AddEndpoint median %s %v", med(add), med(kern), floor)
}
