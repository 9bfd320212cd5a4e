package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/cniplugin/cniplugintest"
)

// TestBinary builds podnet-cni and execs it the way a runtime does: CNI_* variables in
// the environment, the network config on stdin, the result or error on stdout.
func TestBinary(t *testing.T) {
	gobin := goTool(t)
	bin := filepath.Join(t.TempDir(), "podnet-cni")
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("VERSION", func(t *testing.T) {
		start := time.Now()
		stdout, _, err := run(t, bin, nil, "CNI_COMMAND=VERSION")
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
		t.Logf("VERSION answered in %v", time.Since(start))
		var got struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal(stdout, &got); err != nil {
			t.Fatalf("stdout %q: %v", stdout, err)
		}
		if want := []string{"0.4.0", "1.0.0", "1.1.0"}; !reflect.DeepEqual(got.SupportedVersions, want) {
			t.Errorf("supportedVersions %q, want %q", got.SupportedVersions, want)
		}
	})

	t.Run("no CNI_COMMAND", func(t *testing.T) {
		stdout, stderr, err := run(t, bin, nil)
		if err != nil || len(stdout) != 0 || !strings.Contains(string(stderr), "CNI protocol versions supported: 0.4.0, 1.0.0, 1.1.0") {
			t.Errorf("exit %v, stdout %q, stderr %q; want 0, nothing and the about text", err, stdout, stderr)
		}
	})

	t.Run("missing variables", func(t *testing.T) {
		stdout, _, err := run(t, bin, nil, "CNI_COMMAND=ADD", "CNI_IFNAME=eth0")
		wantExitFailure(t, err)
		wantCNIError(t, stdout, api.CodeInvalidEnv, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_PATH] missing")
	})

	t.Run("malformed config", func(t *testing.T) {
		stdout, _, err := run(t, bin, []byte(`{"cniVersion":"1.0.0","name":`), addEnv("/proc/self/ns/net")...)
		wantExitFailure(t, err)
		wantCNIError(t, stdout, api.CodeDecode, "")
	})

	t.Run("invalid field", func(t *testing.T) {
		conf := []byte(`{"cniVersion":"1.0.0","name":"podman","type":"podnet-cni","subnets":["10.88.0.0/16"],"mtu":99999}`)
		stdout, _, err := run(t, bin, conf, addEnv("/proc/self/ns/net")...)
		wantExitFailure(t, err)
		wantCNIError(t, stdout, api.CodeInvalidConfig, `network config: mtu "99999": must be between 576 and 65535`)
	})

	t.Run("ADD passes the netns", func(t *testing.T) {
		agent := cniplugintest.NewAgent(t)
		agent.Set(func(a *cniplugintest.Agent) {
			a.Result = api.Result{Interfaces: []api.Interface{{Name: "eth0", MAC: "aa:bb:cc:dd:ee:ff"}}}
		})
		// The test's own namespace, named by pid so that the plugin opens the same one.
		// The plugin refuses a CNI_NETNS equal to its own netns unless
		// CNI_NETNS_OVERRIDE is set; creating a real namespace needs root.
		netns := fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
		conf := fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"podman","type":"podnet-cni","socket":%q}`, agent.Socket)
		env := append(addEnv(netns), "CNI_NETNS_OVERRIDE=1", "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web-1;IP=10.88.0.5")
		stdout, stderr, err := run(t, bin, conf, env...)
		if err != nil {
			t.Fatalf("exit: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
		}
		var res struct {
			CNIVersion string `json:"cniVersion"`
			Interfaces []struct {
				Name, Mac, Sandbox string
			} `json:"interfaces"`
		}
		if err := json.Unmarshal(stdout, &res); err != nil {
			t.Fatalf("stdout %q: %v", stdout, err)
		}
		if res.CNIVersion != "1.0.0" || len(res.Interfaces) != 1 || res.Interfaces[0].Sandbox != netns || res.Interfaces[0].Mac != "aa:bb:cc:dd:ee:ff" {
			t.Errorf("result %s", stdout)
		}
		r := agent.Last(t)
		dev, ino := cniplugintest.StatFile(t, netns)
		if !r.FD || r.Dev != dev || r.Ino != ino {
			t.Errorf("descriptor did not arrive: %+v", r)
		}
		var req api.AttachRequest
		r.Decode(t, &req)
		if req.Name != "web-1" || !reflect.DeepEqual(req.IPs, []string{"10.88.0.5"}) {
			t.Errorf("request %+v", req)
		}
	})

	t.Run("STATUS agent unreachable", func(t *testing.T) {
		socket := filepath.Join(t.TempDir(), "none.sock")
		conf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"podman","type":"podnet-cni","socket":%q}`, socket)
		stdout, _, err := run(t, bin, conf, "CNI_COMMAND=STATUS", "CNI_PATH=/opt/cni/bin")
		wantExitFailure(t, err)
		wantCNIError(t, stdout, api.CodeNotAvailable, socket)
	})

	t.Run("DEL agent unreachable", func(t *testing.T) {
		socket := filepath.Join(t.TempDir(), "none.sock")
		conf := fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"podman","type":"podnet-cni","socket":%q}`, socket)
		stdout, _, err := run(t, bin, conf, "CNI_COMMAND=DEL", "CNI_CONTAINERID=c0ffee", "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin")
		wantExitFailure(t, err)
		wantCNIError(t, stdout, api.CodeTryAgainLater, socket)
	})
}

func addEnv(netns string) []string {
	return []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=c0ffee", "CNI_NETNS=" + netns, "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin"}
}

// run execs bin with only env in its environment and stdin on its standard input.
func run(t *testing.T, bin string, stdin []byte, env ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.Bytes(), e.Bytes(), err
}

func wantExitFailure(t *testing.T, err error) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("exit: %v, want a non-zero exit status", err)
	}
}

func wantCNIError(t *testing.T, stdout []byte, code uint, msg string) {
	t.Helper()
	var e struct {
		CNIVersion string `json:"cniVersion"`
		Code       uint   `json:"code"`
		Msg        string `json:"msg"`
	}
	if err := json.Unmarshal(stdout, &e); err != nil {
		t.Fatalf("stdout %q is not a CNI error: %v", stdout, err)
	}
	if e.Code != code || !strings.Contains(e.Msg, msg) {
		t.Errorf("error %s, want code %d with %q", stdout, code, msg)
	}
}
