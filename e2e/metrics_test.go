package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/internal/kernel"
)

// TestPrivilegedMetrics: the agent serves Prometheus metrics on 127.0.0.1:9464 of the
// node namespace it manages; an ADD through the plugin shows in them.
func TestPrivilegedMetrics(t *testing.T) {
	n := newNode(t)
	rt := newRuntime(t, confList("1.1.0", netName, n.socket, subnets, ""))
	rt.mustAdd(t, n.newPod(t, "pod-a"))

	scrape := func() string { return n.scrapeMetrics(t) }
	wants := []string{
		`podnet_requests_total{code="0",verb="add"} 1`,
		// The record is marked attached just after the reply.
		`podnet_endpoints{network="` + netName + `",state="attached"} 1`,
		`podnet_pool_allocated_addresses{network="` + netName + `",subnet="10.87.0.0/24"} 1`,
		// The fast path's program on the pod's host veth (once the agent saw it appear).
		`podnet_fastpath_ports 1`,
	}
	var missing []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		body := scrape()
		missing = missing[:0]
		for _, want := range wants {
			if !strings.Contains(body, want+"\n") {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Errorf("scrape lacks %q", missing)
	}
}

// scrapeMetrics reads the agent's metrics on 127.0.0.1:9464 of the node namespace.
func (n *node) scrapeMetrics(t *testing.T) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return kernel.DialIn(ctx, n.lab.Node, network, addr, 5*time.Second)
		},
	}}
	resp, err := client.Get("http://127.0.0.1:9464/metrics")
	if err != nil {
		t.Fatalf("scrape the agent's metrics in the node namespace: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: HTTP %d, %v", resp.StatusCode, err)
	}
	return string(body)
}
