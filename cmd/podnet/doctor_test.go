package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/lab/labtest"
)

// runDoctor runs `podnet doctor args...` and returns its output and exit code.
func runDoctor(t *testing.T, output string, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	c := doctorCmd(&globals{output: output})
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	err := c.Execute()
	var code exitCode
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &code):
		return out.String(), int(code)
	}
	t.Fatalf("doctor %v: %v", args, err)
	return "", 0
}

func TestDoctorFromSnapshot(t *testing.T) {
	for _, c := range []struct {
		snapshot, class, culprit string
		code                     int
	}{
		{"healthy-hand-built", "", "", 0},
		{"route-overlap", "route-overlap", "route 10.88.0.0/25 via 198.18.1.2 dev corp0", 2},
		{"rp-filter-strict", "rp-filter-strict", "sysctl net.ipv4.conf.eth1.rp_filter=1", 1},
	} {
		t.Run(c.snapshot, func(t *testing.T) {
			out, code := runDoctor(t, "json", "--from-snapshot", "../../internal/doctor/testdata/"+c.snapshot+".json")
			if code != c.code {
				t.Errorf("exit code %d, want %d", code, c.code)
			}
			var rep struct {
				Findings []struct {
					Class, Severity, Culprit string
					RootCause                string `json:"root_cause"`
					Fix                      string
					Evidence                 []string
				} `json:"findings"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if c.class == "" {
				if len(rep.Findings) != 0 {
					t.Errorf("findings on a healthy node: %s", out)
				}
				return
			}
			if len(rep.Findings) == 0 || rep.Findings[0].Class != c.class || rep.Findings[0].Culprit != c.culprit || rep.Findings[0].Fix == "" {
				t.Errorf("first finding of %s: %s", c.snapshot, out)
			}
			text, _ := runDoctor(t, "table", "--from-snapshot", "../../internal/doctor/testdata/"+c.snapshot+".json")
			if !strings.Contains(text, c.culprit) || !strings.Contains(text, "Fix:") {
				t.Errorf("text report:\n%s", text)
			}
		})
	}
}

func TestPrivilegedDoctorNetns(t *testing.T) {
	l := labtest.New(t)
	if err := l.Bridge("br0", lab.NodeAddr4); err != nil { // no pod: nothing to forward
		t.Fatal(err)
	}
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(l.Node))
	out, code := runDoctor(t, "table", "--netns", path)
	if code != 0 || !strings.Contains(out, "no problem found") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	// A routed pod without proxy ARP.
	sb, err := l.Sandbox()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Routed(sb, "vethr1", netip.MustParseAddr("10.77.0.5")); err != nil {
		t.Fatal(err)
	}
	if err := kernel.WriteSysctl(l.Node, "net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if err := kernel.WriteSysctl(l.Node, "net/ipv4/conf/vethr1/proxy_arp", "0"); err != nil {
		t.Fatal(err)
	}
	snap := t.TempDir() + "/snap.json"
	out, code = runDoctor(t, "json", "--netns", path, "--save-snapshot", snap)
	if code != 2 || !strings.Contains(out, `"culprit": "sysctl net.ipv4.conf.vethr1.proxy_arp=0"`) {
		t.Errorf("exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "nsenter --net="+path+" sysctl -w net.ipv4.conf.vethr1.proxy_arp=1") {
		t.Errorf("fix does not run in the namespace:\n%s", out)
	}
	again, code2 := runDoctor(t, "json", "--from-snapshot", snap)
	if again != out || code2 != code {
		t.Errorf("from the saved snapshot:\n%s\nwant\n%s", again, out)
	}
}
