package main

import (
	"strings"
	"testing"
	"time"
)

// dnsperfOutput is what dnsperf 2.10 prints with -v (shortened).
const dnsperfOutput = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 5300 -d q.txt -l 2 -v
[Status] Sending queries (to 127.0.0.1:5300)
> NOERROR svc-1.ns-1.svc.cluster.local A 0.000100
> NXDOMAIN nope.ns-1.svc.cluster.local A 0.000300
> NOERROR svc-2.ns-2.svc.cluster.local A 0.000200
> T svc-3.ns-3.svc.cluster.local A
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         4
  Queries completed:    3 (75.00%)
  Queries lost:         1 (25.00%)

  Response codes:       NOERROR 2 (66.67%), NXDOMAIN 1 (33.33%)
  Average packet size:  request 45, response 137
  Run time (s):         2.000519
  Queries per second:   1.499611

  Average Latency (s):  0.000200 (min 0.000100, max 0.000300)
  Latency StdDev (s):   0.000082
`

func TestParseDNSPerf(t *testing.T) {
	r, err := parseDNSPerf(strings.NewReader(dnsperfOutput))
	if err != nil {
		t.Fatal(err)
	}
	if r.sent != 4 || r.completed != 3 || r.lost != 1 || r.qps != 1.499611 {
		t.Errorf("counts: %+v", r)
	}
	if r.avg != 200*time.Microsecond || r.p50 != 200*time.Microsecond || r.p99 != 298*time.Microsecond {
		t.Errorf("latencies: avg %v p50 %v p99 %v, want 200µs 200µs 298µs", r.avg, r.p50, r.p99)
	}
	if r.rcodes["NOERROR"] != 2 || r.rcodes["NXDOMAIN"] != 1 || r.rcodes["T"] != 1 {
		t.Errorf("rcodes: %v", r.rcodes)
	}
	if _, err := parseDNSPerf(strings.NewReader("Statistics:\n")); err == nil {
		t.Error("output without figures: no error")
	}
}
