package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Paths of the binaries TestMain builds.
var bin struct {
	dir    string // also the CNI_PATH libcni searches
	podnet string
	cni    string
}

// helperEnv makes the test binary act as a small command instead of running tests: the
// command `podnet run` starts inside a sandbox (see runHelper).
const helperEnv = "PODNET_E2E_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
		return m.Run() // every test skips (testutil.RequireRoot): nothing to build for
	}
	dir, err := os.MkdirTemp("", "podnet-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin.dir = dir
	bin.podnet = filepath.Join(dir, "podnet")
	bin.cni = filepath.Join(dir, "podnet-cni")
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot build the binaries under test:", err)
		return 1
	}
	return m.Run()
}

// build compiles podnet and podnet-cni into dir.
func build(dir string) error {
	// go test puts the go tool that runs it first in PATH.
	gotool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go tool not found: %w", err)
	}
	start := time.Now()
	cmd := exec.Command(gotool, "build", "-o", dir+string(filepath.Separator),
		"github.com/podnet/podnet/cmd/podnet", "github.com/podnet/podnet/cmd/podnet-cni")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	for _, b := range []string{bin.podnet, bin.cni} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("go build succeeded but %w", err)
		}
	}
	fmt.Fprintf(os.Stderr, "e2e: built podnet and podnet-cni in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// helperReport is what the helper prints as its first line of output.
type helperReport struct {
	// Interfaces maps each interface name to its addresses (CIDR form).
	Interfaces map[string][]string `json:"interfaces"`
	// Saw is the source address a server reported (PODNET_E2E_DIAL), if asked.
	Saw string `json:"saw,omitempty"`
	Err string `json:"err,omitempty"`
}

// runHelper is the command run inside a `podnet run` sandbox. Mode "ifaces" prints the
// interfaces of the namespace it runs in and, when PODNET_E2E_DIAL=ip:port is set,
// connects there and reports the line the server sends back (probe-style: the client
// address the server saw).
func runHelper(mode string) int {
	if mode != "ifaces" {
		fmt.Fprintf(os.Stderr, "e2e helper: unknown mode %q\n", mode)
		return 2
	}
	rep := helperReport{Interfaces: map[string][]string{}}
	ifs, err := net.Interfaces()
	if err != nil {
		rep.Err = err.Error()
	}
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		rep.Interfaces[i.Name] = []string{}
		for _, a := range addrs {
			rep.Interfaces[i.Name] = append(rep.Interfaces[i.Name], a.String())
		}
	}
	if target := os.Getenv("PODNET_E2E_DIAL"); target != "" && rep.Err == "" {
		c, err := net.DialTimeout("tcp", target, 20*time.Second)
		if err != nil {
			rep.Err = err.Error()
		} else {
			c.SetDeadline(time.Now().Add(20 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil {
				rep.Err = err.Error()
			}
			rep.Saw = strings.TrimSpace(line)
		}
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	if rep.Err != "" {
		return 3
	}
	return 0
}
