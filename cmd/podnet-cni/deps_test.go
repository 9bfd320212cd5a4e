package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// forbidden are import path prefixes podnet-cni must not link, each with the reason: a
// runtime execs the plugin once per pod per verb, so its size and start-up cost matter.
var forbidden = map[string]string{
	"github.com/containernetworking": "internal/cniplugin speaks the CNI protocol itself: the library's init (result converters, a regexp) and size cost every exec",
	"regexp":                         "compiled at start-up by whoever imports it; the plugin's name checks are written out",
	"github.com/vishvananda":         "netlink belongs to the agent",
	"github.com/google/nftables":     "nftables belongs to the agent",
	"go.etcd.io":                     "the store belongs to the agent",
	"github.com/spf13":               "the plugin has no flags: CNI passes env and stdin",
	"github.com/miekg":               "DNS belongs to the agent",
	"net/http":                       "net/http and its TLS stack grow the binary and its start-up; api.Client speaks HTTP/1.1 itself to avoid them",
	"crypto/tls":                     "the agent's unix socket needs no TLS; api.Client speaks HTTP/1.1 itself to keep net/http and crypto/tls out",
}

// allowed are exceptions to forbidden, each with the reason it is linked; none today.
var allowed = map[string]string{}

// ownAllowed are the only podnet packages the plugin may link.
var ownAllowed = map[string]bool{
	"github.com/podnet/podnet/api":                true,
	"github.com/podnet/podnet/internal/cniplugin": true,
	"github.com/podnet/podnet/cmd/podnet-cni":     true,
}

func TestDeps(t *testing.T) {
	gobin := goTool(t)
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, stderrOf(err))
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if _, ok := allowed[dep]; ok {
			continue
		}
		for f, why := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("podnet-cni depends on %s (forbidden: %s)", dep, why)
			}
		}
		if strings.HasPrefix(dep, "github.com/podnet/podnet/") && !ownAllowed[dep] {
			t.Errorf("podnet-cni depends on %s: only api and internal/cniplugin may be linked", dep)
		}
	}
}

// goTool finds the go command (go test puts GOROOT/bin first in PATH). Without it the
// test skips, except under CI.
func goTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("go command not found: %v", err)
		}
		t.Skipf("go command not found: %v", err)
	}
	return p
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
