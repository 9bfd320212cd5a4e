package cniplugin

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/cniplugin/cniplugintest"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// selfNetns is a network namespace file any unprivileged test can open. It is the
// plugin's own namespace, which ADD and DEL refuse without CNI_NETNS_OVERRIDE: cmdArgs
// sets it.
const selfNetns = "/proc/self/ns/net"

func config(socket, cniVersion, extra string) []byte {
	s := fmt.Sprintf(`{"cniVersion":%q,"name":"podman","type":"podnet-cni","socket":%q`, cniVersion, socket)
	if extra != "" {
		s += "," + extra
	}
	return []byte(s + "}")
}

func cmdArgs(stdin []byte) *CmdArgs {
	return &CmdArgs{ContainerID: "c0ffee", Netns: selfNetns, IfName: "eth0", Path: "/opt/cni/bin", NetnsOverride: "1", StdinData: stdin}
}

// wantCode fails unless err is a *Error with code and a message containing each of msgs.
func wantCode(t *testing.T, err error, code uint, msgs ...string) *Error {
	t.Helper()
	var te *Error
	if !errors.As(err, &te) {
		t.Fatalf("err = %v (%T), want *Error code %d", err, err, code)
	}
	if te.Code != code {
		t.Fatalf("code = %d (%v), want %d", te.Code, te, code)
	}
	for _, m := range msgs {
		if !strings.Contains(te.Msg, m) {
			t.Errorf("msg %q does not contain %q", te.Msg, m)
		}
	}
	return te
}

var agentResult = api.Result{
	Interfaces: []api.Interface{
		{Name: "pn3f2a9c1e0b7d", MAC: "6a:1f:00:00:00:01"},
		{Name: "eth0", MAC: "aa:bb:cc:dd:ee:ff", MTU: 1500, Sandbox: selfNetns},
	},
	IPs: []api.IPConfig{
		{Address: netip.MustParsePrefix("10.88.0.5/16"), Gateway: netip.MustParseAddr("10.88.0.1"), Interface: 1},
		{Address: netip.MustParsePrefix("fd88::5/64"), Gateway: netip.MustParseAddr("fd88::1"), Interface: 1},
	},
	Routes: []api.Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), GW: netip.MustParseAddr("10.88.0.1")},
		{Dst: netip.MustParsePrefix("::/0"), GW: netip.MustParseAddr("fd88::1")},
		{Dst: netip.MustParsePrefix("10.89.0.0/16")},
	},
	DNS: api.DNS{Nameservers: []string{"10.88.0.1"}, Search: []string{"dns.podnet"}},
}

func TestAddPassesNetnsAndPrintsGolden(t *testing.T) {
	for _, v := range SupportedVersions {
		t.Run(v, func(t *testing.T) {
			agent := cniplugintest.NewAgent(t)
			agent.Set(func(a *cniplugintest.Agent) { a.Result = agentResult })
			var out bytes.Buffer
			p := &Plugin{Stdout: &out}
			if err := p.Add(cmdArgs(config(agent.Socket, v, ""))); err != nil {
				t.Fatal(err)
			}

			r := agent.Last(t)
			if r.Path != api.PathEndpoints || r.Method != "POST" {
				t.Errorf("request %s %s, want POST %s", r.Method, r.Path, api.PathEndpoints)
			}
			dev, ino := cniplugintest.StatFile(t, selfNetns)
			if !r.FD || r.Dev != dev || r.Ino != ino {
				t.Errorf("descriptor: got fd=%v dev=%d ino=%d, want the netns dev=%d ino=%d", r.FD, r.Dev, r.Ino, dev, ino)
			}
			var req api.AttachRequest
			r.Decode(t, &req)
			want := api.AttachRequest{EndpointKey: api.EndpointKey{Network: "podman", ContainerID: "c0ffee", IfName: "eth0"}, Netns: selfNetns}
			if !reflect.DeepEqual(req, want) {
				t.Errorf("request %+v, want %+v", req, want)
			}

			golden(t, filepath.Join("testdata", "result-"+v+".json"), out.Bytes())
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestAddSendsDefineAndIPs(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	agent.Set(func(a *cniplugintest.Agent) { a.Result = agentResult })
	args := cmdArgs(config(agent.Socket, "1.0.0", `"network":"blue","subnets":["10.88.0.0/16","fd88::/64"],"gateways":["10.88.0.1"],"mtu":1450,
		"capabilities":{"ips":true,"mac":true},"runtimeConfig":{"ips":["10.88.0.5/16"],"mac":"aa:bb:cc:dd:ee:ff"},"args":{"cni":{"ips":["fd88::5"]}}`))
	args.Args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;IP=10.88.0.5,fd88::5;MAC=aa:bb:cc:dd:ee:ff"
	if err := (&Plugin{Stdout: new(bytes.Buffer)}).Add(args); err != nil {
		t.Fatal(err)
	}
	var req api.AttachRequest
	agent.Last(t).Decode(t, &req)
	want := api.AttachRequest{
		EndpointKey: api.EndpointKey{Network: "blue", ContainerID: "c0ffee", IfName: "eth0"},
		Netns:       selfNetns,
		Name:        "web-1",
		Namespace:   "default",
		Define: &api.NetworkSpec{Name: "blue", Driver: "bridge", Subnets: []string{"10.88.0.0/16", "fd88::/64"},
			Gateways: []string{"10.88.0.1"}, MTU: 1450},
		IPs: []string{"10.88.0.5/16", "fd88::5"},
		MAC: "aa:bb:cc:dd:ee:ff",
	}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("request\n%+v\nwant\n%+v", req, want)
	}
}

func TestAddFillsSandbox(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	res := agentResult
	res.Interfaces = []api.Interface{{Name: "host0"}, {Name: "eth0", MAC: "aa:bb:cc:dd:ee:ff"}}
	agent.Set(func(a *cniplugintest.Agent) { a.Result = res })
	var out bytes.Buffer
	if err := (&Plugin{Stdout: &out}).Add(cmdArgs(config(agent.Socket, "1.0.0", ""))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"sandbox": "/proc/self/ns/net"`) || strings.Count(out.String(), `"sandbox"`) != 1 {
		t.Errorf("the container interface alone should carry the sandbox:\n%s", out.String())
	}
}

func TestAddBadAgentResult(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	res := agentResult
	res.IPs = []api.IPConfig{{Address: netip.MustParsePrefix("10.88.0.5/16"), Interface: 7}}
	agent.Set(func(a *cniplugintest.Agent) { a.Result = res })
	err := (&Plugin{Stdout: new(bytes.Buffer)}).Add(cmdArgs(config(agent.Socket, "1.0.0", "")))
	wantCode(t, err, api.CodeInternal, "ips[0]", "interface index 7 out of range")
}

func TestAddNetnsErrors(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	regular := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "gone")
	for _, tt := range []struct{ netns, msg string }{
		{"", "CNI_NETNS: missing"},
		{missing, fmt.Sprintf("CNI_NETNS %q: cannot open: no such file or directory", missing)},
		{regular, fmt.Sprintf("CNI_NETNS %q: not a network namespace", regular)},
	} {
		args := cmdArgs(config(agent.Socket, "1.0.0", ""))
		args.Netns = tt.netns
		err := (&Plugin{Stdout: new(bytes.Buffer)}).Add(args)
		wantCode(t, err, api.CodeInvalidEnv, tt.msg)
	}
	if n := len(agent.Received()); n != 0 {
		t.Errorf("agent got %d requests, want none", n)
	}
}

func TestAddRefusesUnprintableVersion(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	err := (&Plugin{Stdout: new(bytes.Buffer)}).Add(cmdArgs(config(agent.Socket, "9.9.9", "")))
	wantCode(t, err, api.CodeIncompatibleVersion, `"9.9.9"`)
	if n := len(agent.Received()); n != 0 {
		t.Errorf("agent got %d requests, want none", n)
	}
}

func TestAgentErrorKeepsCode(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	agent.Set(func(a *cniplugintest.Agent) {
		a.Err = &api.Error{Code: api.CodeAddressInUse, Msg: `address 10.88.0.5 in use`, Details: "by blue/abc/eth0"}
	})
	p := &Plugin{Stdout: new(bytes.Buffer)}
	args := cmdArgs(config(agent.Socket, "1.1.0", `"cni.dev/valid-attachments":[]`))
	for verb, f := range map[string]func(*CmdArgs) error{"ADD": p.Add, "DEL": p.Del, "CHECK": p.Check, "GC": p.GC, "STATUS": p.Status} {
		te := wantCode(t, f(args), api.CodeAddressInUse, "address 10.88.0.5 in use")
		if te.Details != "by blue/abc/eth0" {
			t.Errorf("%s: details %q", verb, te.Details)
		}
	}
	agent.Set(func(a *cniplugintest.Agent) {
		a.Err = &api.Error{Code: api.CodeInvalidConfig, Msg: `network "podman": subnet 10.0.0.0/8 contradicts 10.88.0.0/16`}
	})
	wantCode(t, p.Add(args), api.CodeInvalidConfig, "contradicts")
}

func TestUnreachableAgent(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "nobody.sock")
	p := &Plugin{Stdout: new(bytes.Buffer)}
	args := cmdArgs(config(socket, "1.1.0", `"cni.dev/valid-attachments":[]`))
	for verb, f := range map[string]func(*CmdArgs) error{"ADD": p.Add, "DEL": p.Del, "CHECK": p.Check, "GC": p.GC} {
		t.Run(verb, func(t *testing.T) {
			wantCode(t, f(args), api.CodeTryAgainLater, socket)
		})
	}
	wantCode(t, p.Status(args), api.CodeNotAvailable, socket)
}

func TestStatus(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	p := &Plugin{}
	args := &CmdArgs{StdinData: config(agent.Socket, "1.1.0", "")}
	if err := p.Status(args); err != nil {
		t.Fatal(err)
	}
	if r := agent.Last(t); r.Path != api.PathStatus || r.FD {
		t.Errorf("request %+v", r)
	}
	agent.Set(func(a *cniplugintest.Agent) { a.Status.Ready = false })
	wantCode(t, p.Status(args), api.CodeNotAvailable, "not ready", agent.Socket)
}

func TestDel(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	dev, ino := cniplugintest.StatFile(t, selfNetns)
	prev := `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/proc/self/ns/net"}]}`
	for _, tt := range []struct {
		name, netns, extra string
		wantFD             bool
		wantNetns          string
	}{
		{"with netns and prevResult", selfNetns, prev, true, selfNetns},
		{"without netns", "", "", false, ""},
		{"netns gone", filepath.Join(t.TempDir(), "gone"), "", false, ""},
		// DEL needs only the network: a config that became invalid does not block it.
		{"invalid field", selfNetns, `"mtu":-3`, true, selfNetns},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := cmdArgs(config(agent.Socket, "1.0.0", tt.extra))
			args.Netns = tt.netns
			if err := (&Plugin{}).Del(args); err != nil {
				t.Fatal(err)
			}
			r := agent.Last(t)
			if r.Path != api.PathEndpointsDel || r.FD != tt.wantFD || (tt.wantFD && (r.Dev != dev || r.Ino != ino)) {
				t.Errorf("request %+v", r)
			}
			var req api.DetachRequest
			r.Decode(t, &req)
			want := api.DetachRequest{EndpointKey: api.EndpointKey{Network: "podman", ContainerID: "c0ffee", IfName: "eth0"}, Netns: tt.wantNetns}
			if req != want {
				t.Errorf("request %+v, want %+v", req, want)
			}
		})
	}
	args := cmdArgs([]byte(`{"name":`))
	wantCode(t, (&Plugin{}).Del(args), api.CodeDecode)
}

func TestCheck(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	args := cmdArgs(config(agent.Socket, "1.0.0", `"prevResult":{"cniVersion":"1.0.0"}`))
	if err := (&Plugin{}).Check(args); err != nil {
		t.Fatal(err)
	}
	r := agent.Last(t)
	dev, ino := cniplugintest.StatFile(t, selfNetns)
	if r.Path != api.PathEndpointCheck || !r.FD || r.Dev != dev || r.Ino != ino {
		t.Errorf("request %+v", r)
	}
	var req api.CheckRequest
	r.Decode(t, &req)
	if want := (api.CheckRequest{EndpointKey: api.EndpointKey{Network: "podman", ContainerID: "c0ffee", IfName: "eth0"}, Netns: selfNetns}); req != want {
		t.Errorf("request %+v, want %+v", req, want)
	}
	agent.Set(func(a *cniplugintest.Agent) {
		a.Err = &api.Error{Code: api.CodeCheckFailed, Msg: "route 0.0.0.0/0 missing"}
	})
	wantCode(t, (&Plugin{}).Check(args), api.CodeCheckFailed, "route 0.0.0.0/0 missing")
}

func TestGC(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	blue := func(id, ifName string) api.EndpointKey {
		return api.EndpointKey{Network: "blue", ContainerID: id, IfName: ifName}
	}
	for _, tt := range []struct {
		name  string
		extra string // keys added to the config of network "blue"
		want  []api.EndpointKey
	}{
		{name: "list", extra: `"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"containerID":"c2","ifname":"eth1"}]`,
			want: []api.EndpointKey{blue("c1", "eth0"), blue("c2", "eth1")}},
		// The last container of the network is gone: nothing is valid any more.
		{name: "empty list", extra: `"cni.dev/valid-attachments":[]`, want: []api.EndpointKey{}},
		// libcni with GCArgs{ValidAttachments: nil}.
		{name: "null", extra: `"cni.dev/valid-attachments":null`, want: []api.EndpointKey{}},
		// libcni with GCArgs nil, or an empty list dropped by types.NetConf's omitempty.
		{name: "absent", want: []api.EndpointKey{}},
		// The first draft's spelling, alone, is read.
		{name: "old spelling", extra: `"cni.dev/attachments":[{"containerID":"c3","ifname":"eth0"}]`,
			want: []api.EndpointKey{blue("c3", "eth0")}},
		// What libcni sends: both spellings, the same list.
		{name: "both spellings", extra: `"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]`,
			want: []api.EndpointKey{blue("c1", "eth0")}},
		// When they differ the spec's key wins, an empty list included.
		{name: "spec key wins", extra: `"cni.dev/valid-attachments":[],"cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]`,
			want: []api.EndpointKey{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			extra := `"network":"blue"`
			if tt.extra != "" {
				extra += "," + tt.extra
			}
			n := len(agent.Received())
			if err := (&Plugin{}).GC(&CmdArgs{StdinData: config(agent.Socket, "1.1.0", extra)}); err != nil {
				t.Fatal(err)
			}
			if got := len(agent.Received()); got != n+1 {
				t.Fatalf("agent received %d requests, want 1", got-n)
			}
			r := agent.Last(t)
			if r.Path != api.PathGC {
				t.Fatalf("request to %s, want %s", r.Path, api.PathGC)
			}
			// Nothing valid must travel as [], never null: the agent keeps what is listed.
			if len(tt.want) == 0 && !strings.Contains(string(r.Body), `"valid":[]`) {
				t.Errorf("body %s, want an empty valid list", r.Body)
			}
			var req api.GCRequest
			r.Decode(t, &req)
			if want := (api.GCRequest{Network: "blue", Valid: tt.want}); !reflect.DeepEqual(req, want) {
				t.Errorf("request %+v, want %+v", req, want)
			}
			if err := req.Validate(); err != nil {
				t.Errorf("the agent would refuse the request: %v", err)
			}
		})
	}
}

// A GC the plugin cannot read whole is refused before it reaches the agent: an entry
// without containerID or ifname would protect nothing and the agent would release it.
func TestGCRefused(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	for _, tt := range []struct {
		name  string
		stdin string
		code  uint
		msg   string
	}{
		{"no ifname", `"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"containerID":"c2"}]`,
			api.CodeInvalidConfig, "cni.dev/valid-attachments[1]: containerID and ifname are required"},
		{"no containerID", `"cni.dev/valid-attachments":[{"ifname":"eth0"}]`,
			api.CodeInvalidConfig, "cni.dev/valid-attachments[0]: containerID and ifname are required"},
		{"old spelling without ifname", `"cni.dev/attachments":[{"containerID":"c1"}]`,
			api.CodeInvalidConfig, "cni.dev/attachments[0]: containerID and ifname are required"},
		{"not a list", `"cni.dev/valid-attachments":{"containerID":"c1","ifname":"eth0"}`,
			api.CodeInvalidConfig, `cni.dev/valid-attachments: cannot use JSON object`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, (&Plugin{}).GC(&CmdArgs{StdinData: config(agent.Socket, "1.1.0", tt.stdin)}), tt.code, tt.msg)
		})
	}
	// A config without a name names no network: refused, not sent as a GC of all networks.
	wantCode(t, (&Plugin{}).GC(&CmdArgs{StdinData: []byte(`{"cniVersion":"1.1.0","type":"podnet-cni","cni.dev/valid-attachments":[]}`)}),
		api.CodeInvalidConfig, "name: missing")
	if n := len(agent.Received()); n != 0 {
		t.Errorf("the agent received %d requests, want none", n)
	}
	// The agent's refusal reaches the runtime with its code.
	agent.Set(func(a *cniplugintest.Agent) {
		a.Err = api.Errorf(api.CodeInvalidConfig, "gc: network: missing")
	})
	wantCode(t, (&Plugin{}).GC(&CmdArgs{StdinData: config(agent.Socket, "1.1.0", "")}), api.CodeInvalidConfig, "gc: network: missing")
}

func TestCNIError(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status bool
		want   Error
	}{
		{&api.Error{Code: api.CodeNotAvailable, Msg: "podnet agent unreachable at /s", Details: "dial"}, false, Error{Code: 11, Msg: "podnet agent unreachable at /s", Details: "dial"}},
		{&api.Error{Code: api.CodeNotAvailable, Msg: "podnet agent unreachable at /s"}, true, Error{Code: 50, Msg: "podnet agent unreachable at /s"}},
		{fmt.Errorf("attach: %w", &api.Error{Code: api.CodePoolExhausted, Msg: "no free address"}), false, Error{Code: 103, Msg: "no free address"}},
		{&api.Error{Code: -2, Msg: "odd"}, false, Error{Code: 100, Msg: "odd"}},
		{errors.New("plain"), false, Error{Code: 100, Msg: "plain"}},
		// Validation errors get their code from api.ErrorCode, through wrapping too.
		{api.Invalid("network config", "mtu", "70000", "must be between 576 and 65535"), false,
			Error{Code: 7, Msg: `network config: mtu "70000": must be between 576 and 65535`}},
		{fmt.Errorf("attach: %w", api.InvalidEnv("CNI_IFNAME", "a/b", "bad")), false, Error{Code: 4, Msg: `attach: CNI_IFNAME "a/b": bad`}},
		{api.AsError(api.MissingEnv("CNI_NETNS")), false, Error{Code: 4, Msg: "CNI_NETNS: missing"}},
		// The agent's validation errors arrive as *api.Error with their code.
		{&api.Error{Code: api.CodeInvalidEnv, Msg: `containerID "-x": must be letters`}, false, Error{Code: 4, Msg: `containerID "-x": must be letters`}},
	} {
		if got := cniError(tt.err, tt.status); *got != tt.want {
			t.Errorf("cniError(%v) = %+v, want %+v", tt.err, *got, tt.want)
		}
	}
}

func TestCheckIfNameNamesTheValue(t *testing.T) {
	if err := CheckIfName("eth0"); err != nil {
		t.Errorf("eth0: %v", err)
	}
	err := CheckIfName("this-name-is-too-long")
	if err == nil || err.Code != 4 || err.Msg != `CNI_IFNAME "this-name-is-too-long": must be 1-15 bytes without '/', ':' or spaces` {
		t.Errorf("too long: %+v", err)
	}
}
