package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Paths of the controller's status socket.
const (
	PathStatus  = "/v1/status"
	PathMetrics = "/metrics"
	// DefaultStatusSocket is where the controller answers `podnet controller status`.
	DefaultStatusSocket = "/run/podnet/controller.sock"
)

// Handler serves the status (JSON) and Prometheus metrics.
func (c *Controller) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(c.Status())
	})
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

var (
	leadingDesc  = prometheus.NewDesc("podnet_controller_leading", "1 while this controller holds the leader lease.", nil, nil)
	objectsDesc  = prometheus.NewDesc("podnet_controller_objects", "Objects mirrored from the Kubernetes API, per kind.", []string{"kind"}, nil)
	lagDesc      = prometheus.NewDesc("podnet_controller_lag_seconds", "Time from the first watch event of the last batch's oldest key to the batch applied.", nil, nil)
	maxLagDesc   = prometheus.NewDesc("podnet_controller_max_lag_seconds", "Largest lag since this controller started leading.", nil, nil)
	pendingDesc  = prometheus.NewDesc("podnet_controller_pending", "Keys waiting in the queue.", nil, nil)
	reportedDesc = prometheus.NewDesc("podnet_controller_reported_objects", "Objects with a problem reported as an Event.", nil, nil)
	errorsDesc   = prometheus.NewDesc("podnet_controller_sink_errors_total", "Batches that podnet's store or agent failed (retried).", nil, nil)
	syncDesc     = prometheus.NewDesc("podnet_controller_last_sync_timestamp_seconds", "When the last batch was applied.", nil, nil)
)

func (c *Controller) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{leadingDesc, objectsDesc, lagDesc, maxLagDesc, pendingDesc, reportedDesc, errorsDesc, syncDesc} {
		ch <- d
	}
}

func (c *Controller) Collect(ch chan<- prometheus.Metric) {
	s := c.Status()
	leading := 0.0
	if s.Leading {
		leading = 1
	}
	ch <- prometheus.MustNewConstMetric(leadingDesc, prometheus.GaugeValue, leading)
	for kind, n := range s.Objects {
		ch <- prometheus.MustNewConstMetric(objectsDesc, prometheus.GaugeValue, float64(n), kind)
	}
	ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, s.LagSeconds)
	ch <- prometheus.MustNewConstMetric(maxLagDesc, prometheus.GaugeValue, s.MaxLagSeconds)
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(reportedDesc, prometheus.GaugeValue, float64(s.Reported))
	ch <- prometheus.MustNewConstMetric(errorsDesc, prometheus.CounterValue, float64(s.SinkErrors))
	if !s.LastSync.IsZero() {
		ch <- prometheus.MustNewConstMetric(syncDesc, prometheus.GaugeValue, float64(s.LastSync.UnixNano())/1e9)
	}
}

// ServeStatus serves Handler on a unix socket until ctx ends.
func (c *Controller) ServeStatus(ctx context.Context, socket string) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return err
	}
	if conn, err := net.DialTimeout("unix", socket, 200*time.Millisecond); err == nil {
		conn.Close()
		return fmt.Errorf("status socket %s: another controller is listening (pass --status-socket)", socket)
	}
	_ = os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	srv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go srv.Serve(l)
	return nil
}

// ReadStatus asks the controller at socket for its status.
func ReadStatus(ctx context.Context, socket string) (Status, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://controller"+PathStatus, nil)
	if err != nil {
		return Status{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("controller status socket %s: %w (is podnet controller running?)", socket, err)
	}
	defer resp.Body.Close()
	var s Status
	return s, json.NewDecoder(resp.Body).Decode(&s)
}
