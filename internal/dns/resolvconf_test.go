package dns

import (
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/")

const nodeResolvConf = `# node
nameserver 192.0.2.53
nameserver 2001:db8::53
search corp.example example.org
options edns0 timeout:2
`

// TestResolvConfGolden renders each policy and compares with testdata/resolv-*.golden
// (the file, then the CNI result's dns as JSON).
func TestResolvConfGolden(t *testing.T) {
	base := ResolvConfig{DNSAddress: netip.MustParseAddr("169.254.20.10"), Node: nodeResolvConf}
	for _, tc := range []struct {
		name, policy, ns string
		edit             func(*ResolvConfig)
	}{
		{name: "cluster-first", policy: PolicyClusterFirst, ns: "shop"},
		{name: "cluster-first-default-policy", policy: "", ns: ""},
		{name: "cluster-first-custom-domain", policy: PolicyClusterFirst, ns: "Shop", edit: func(c *ResolvConfig) { c.Domain = "c2.example.net." }},
		{name: "cluster-first-with-pod-config", policy: PolicyClusterFirst, ns: "shop", edit: func(c *ResolvConfig) {
			c.Nameservers = []string{"192.0.2.1", "169.254.20.10", "192.0.2.2", "192.0.2.3"}
			c.Searches = []string{"shop.svc.cluster.local", "extra.example"}
			c.Options = []string{"ndots:2", "single-request-reopen"}
		}},
		{name: "cluster-first-node-without-search", policy: PolicyClusterFirst, ns: "shop", edit: func(c *ResolvConfig) { c.Node = "nameserver 192.0.2.53\n" }},
		{name: "default", policy: PolicyDefault, ns: "shop"},
		{name: "default-with-pod-config", policy: PolicyDefault, ns: "shop", edit: func(c *ResolvConfig) { c.Options = []string{"timeout:5"} }},
		{name: "none", policy: PolicyNone, ns: "shop", edit: func(c *ResolvConfig) {
			c.Nameservers = []string{"192.0.2.9"}
			c.Searches = []string{"example.net"}
			c.Options = []string{"ndots:1"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			text, d, err := ResolvConf(tc.policy, tc.ns, cfg)
			if err != nil {
				t.Fatal(err)
			}
			j, err := json.MarshalIndent(d, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got := text + "---\n" + string(j) + "\n"
			path := filepath.Join("testdata", "resolv-"+tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s:\n got:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}

// TestResolvConfErrors checks that bad input is refused with the field named.
func TestResolvConfErrors(t *testing.T) {
	for _, tc := range []struct {
		policy, ns string
		cfg        ResolvConfig
		want       string
	}{
		{"Sometimes", "shop", ResolvConfig{}, `policy "Sometimes"`},
		{PolicyNone, "shop", ResolvConfig{}, "no nameservers"},
		{PolicyClusterFirst, "bad.ns", ResolvConfig{}, `namespace "bad.ns"`},
		{PolicyClusterFirst, "shop", ResolvConfig{Nameservers: []string{"dns.example"}}, `nameserver "dns.example"`},
		{PolicyClusterFirst, "shop", ResolvConfig{Searches: []string{"bad domain"}}, `search domain "bad domain"`},
		{PolicyClusterFirst, "shop", ResolvConfig{Options: []string{"a b"}}, `option "a b"`},
	} {
		_, _, err := ResolvConf(tc.policy, tc.ns, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ResolvConf(%q, %q, %+v) = %v, want an error naming %s", tc.policy, tc.ns, tc.cfg, err, tc.want)
		}
	}
}

// TestResolvConfSearchLimits checks the kubelet's limits: 32 domains, 2048 characters.
func TestResolvConfSearchLimits(t *testing.T) {
	var many []string
	for i := range 40 {
		many = append(many, strings.Repeat("x", 60)+"-"+string(rune('a'+i%26))+string(rune('a'+i/26))+".example")
	}
	_, d, err := ResolvConf(PolicyNone, "shop", ResolvConfig{Nameservers: []string{"192.0.2.1"}, Searches: many})
	if err != nil {
		t.Fatal(err)
	}
	total := len(strings.Join(d.Search, " "))
	if len(d.Search) > 32 || total > 2048 {
		t.Errorf("%d search domains, %d characters: over the limits", len(d.Search), total)
	}
}

// TestParseResolvConf checks the reader's rules.
func TestParseResolvConf(t *testing.T) {
	f := ParseResolvConf("nameserver 192.0.2.1 # first\n; comment\nsearch a.example b.example\ndomain c.example\noptions ndots:2\noptions edns0\nnameserver\n")
	if strings.Join(f.Nameservers, ",") != "192.0.2.1" || strings.Join(f.Search, ",") != "c.example" || strings.Join(f.Options, ",") != "ndots:2,edns0" {
		t.Errorf("parsed %+v", f)
	}
}
