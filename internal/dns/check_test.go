package dns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/podnet/podnet/internal/dns/dnstest"
)

// TestCheckSearchDomains reproduces the field incident: a search domain with a wildcard
// record answers for any name and must be refused.
func TestCheckSearchDomains(t *testing.T) {
	up := dnstest.NewUpstream(
		"*.c1.example.org. 300 IN A 192.0.2.99",      // the incident's wildcard
		"*.v6.example.org. 300 IN AAAA 2001:db8::99", // a wildcard of the other family
		"*.txt.example.org. 300 IN TXT \"hello\"",    // exists for every name, no address: NODATA
		"www.c2.example.org. 300 IN A 192.0.2.1",     // a healthy domain
	)
	ctx := context.Background()
	if err := CheckSearchDomains(ctx, up, []string{"c2.example.org", "example.org.", ""}); err != nil {
		t.Errorf("healthy domains refused: %v", err)
	}
	err := CheckSearchDomains(ctx, up, []string{"c2.example.org", "c1.example.org", "v6.example.org", "txt.example.org"})
	if !IsWildcard(err) {
		t.Fatalf("wildcard not detected: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{`"c1.example.org"`, "192.0.2.99", `"v6.example.org"`, "2001:db8::99", `"txt.example.org"`, "NODATA"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %s: %s", want, msg)
		}
	}
	if strings.Contains(msg, `"c2.example.org"`) {
		t.Errorf("healthy domain reported: %s", msg)
	}
	var we *WildcardError
	if errors.As(err, &we); we.Domain != "c1.example.org" || !strings.HasSuffix(we.Probe, ".c1.example.org.") {
		t.Errorf("first problem %+v, want c1.example.org", we)
	}

	up.Fail(errors.New("timeout"))
	err = CheckSearchDomains(ctx, up, []string{"c1.example.org"})
	if err == nil || IsWildcard(err) {
		t.Errorf("unreachable resolver: %v, want a plain error", err)
	}
}

// TestCheckSearchDomainsThroughServer checks a pod's whole search list through the
// server itself (the cluster's domains answered by the zone, the node's forwarded), as
// the agent does at startup.
func TestCheckSearchDomainsThroughServer(t *testing.T) {
	f := newFixture(t, nil)
	f.upstream.Add("*.c1.example.org. 300 IN A 192.0.2.99")
	_, d, err := ResolvConf(PolicyClusterFirst, "ns1", ResolvConfig{Node: "search c1.example.org\n", DNSAddress: netip.MustParseAddr("169.254.20.10")})
	if err != nil {
		t.Fatal(err)
	}
	err = CheckSearchDomains(context.Background(), f.srv, d.Search)
	var we *WildcardError
	if !errors.As(err, &we) || we.Domain != "c1.example.org" || strings.Count(err.Error(), "search domain") != 1 {
		t.Errorf("got %v, want only c1.example.org refused", err)
	}
}
