package cniplugin

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/cniplugin/cniplugintest"
)

// invocation is one run of Plugin.Main: the environment and stdin it gets, what it
// printed and its exit status.
type invocation struct {
	env   map[string]string
	stdin io.Reader

	status         int
	stdout, stderr string
}

func (inv *invocation) run(t *testing.T) *invocation {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if inv.stdin == nil {
		inv.stdin = strings.NewReader("")
	}
	p := &Plugin{Stdout: &stdout}
	inv.status = p.Main(func(k string) string { return inv.env[k] }, inv.stdin, &stderr)
	inv.stdout, inv.stderr = stdout.String(), stderr.String()
	return inv
}

// wantError fails unless the invocation printed a CNI error with code, msg and details,
// and nothing else, and exited with status 1.
func (inv *invocation) wantError(t *testing.T, code uint, msg, details string) {
	t.Helper()
	var e Error
	if err := json.Unmarshal([]byte(inv.stdout), &e); err != nil {
		t.Fatalf("stdout %q is not a CNI error: %v", inv.stdout, err)
	}
	if inv.status != 1 || e != (Error{Code: code, Msg: msg, Details: details}) {
		t.Errorf("exit %d, error %+v; want exit 1, code %d msg %q details %q", inv.status, e, code, msg, details)
	}
}

// unreadable fails the test when read: VERSION must not read stdin.
type unreadable struct{ t *testing.T }

func (u unreadable) Read([]byte) (int, error) {
	u.t.Error("stdin was read")
	return 0, io.EOF
}

// cniEnv is a complete environment for cmd, with extra variables set or (when "")
// removed.
func cniEnv(cmd string, extra ...string) map[string]string {
	env := map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": selfNetns, "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			delete(env, extra[i])
		} else {
			env[extra[i]] = extra[i+1]
		}
	}
	return env
}

func TestMainAbout(t *testing.T) {
	inv := (&invocation{env: map[string]string{"CNI_PATH": "/opt/cni/bin"}}).run(t)
	want := About + "\nCNI protocol versions supported: 0.4.0, 1.0.0, 1.1.0\n"
	if inv.status != 0 || inv.stdout != "" || inv.stderr != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0, nothing, %q", inv.status, inv.stdout, inv.stderr, want)
	}
	// CNI_IFNAME is checked before anything else.
	inv = (&invocation{env: map[string]string{"CNI_IFNAME": "a/b"}}).run(t)
	inv.wantError(t, api.CodeInvalidEnv, `CNI_IFNAME "a/b": must be 1-15 bytes without '/', ':' or spaces`, "")
}

func TestMainVersion(t *testing.T) {
	// VERSION needs no other variable, ignores CNI_IFNAME and does not read stdin.
	for _, env := range []map[string]string{{"CNI_COMMAND": "VERSION"}, {"CNI_COMMAND": "VERSION", "CNI_IFNAME": "a/b"}} {
		inv := (&invocation{env: env, stdin: unreadable{t}}).run(t)
		want := `{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}` + "\n"
		if inv.status != 0 || inv.stdout != want {
			t.Errorf("exit %d, stdout %q; want 0, %q", inv.status, inv.stdout, want)
		}
	}
}

func TestMainEnvErrors(t *testing.T) {
	conf := `{"cniVersion":"1.1.0","name":"podman"}`
	for _, tt := range []struct {
		name         string
		env          map[string]string
		msg, details string
	}{
		{"ADD needs all", map[string]string{"CNI_COMMAND": "ADD"}, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing", ""},
		{"CHECK needs all", map[string]string{"CNI_COMMAND": "CHECK"}, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing", ""},
		{"DEL needs no netns", map[string]string{"CNI_COMMAND": "DEL"}, "required env variables [CNI_CONTAINERID,CNI_IFNAME,CNI_PATH] missing", ""},
		{"GC needs the path", map[string]string{"CNI_COMMAND": "GC"}, "required env variables [CNI_PATH] missing", ""},
		{"STATUS needs the path", map[string]string{"CNI_COMMAND": "STATUS"}, "required env variables [CNI_PATH] missing", ""},
		{"invalid container ID", cniEnv("ADD", "CNI_CONTAINERID", "-x", "CNI_PATH", ""), "invalid characters in containerID", "-x"},
		{"container ID checked only where required", cniEnv("FOO", "CNI_CONTAINERID", "-x"), "unknown CNI_COMMAND: FOO", ""},
		{"unicode space in ifname", cniEnv("DEL", "CNI_IFNAME", "a\u00a0b"), "interface name contains / or : or whitespace characters", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			(&invocation{env: tt.env, stdin: strings.NewReader(conf)}).run(t).wantError(t, api.CodeInvalidEnv, tt.msg, tt.details)
		})
	}
}

func TestMainConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		cmd, stdin   string
		code         uint
		msg, details string
	}{
		{"ADD", `{"name":`, api.CodeDecode, "error unmarshall network config: unexpected end of JSON input", ""},
		{"VERSION", `{"name":`, 0, "", ""},
		{"DEL", `{"cniVersion":"1.0.0"}`, api.CodeInvalidConfig, "missing network name", ""},
		{"GC", `{"cniVersion":"1.1.0","name":"a b"}`, api.CodeInvalidConfig, "invalid characters found in network name", "a b"},
		{"FOO", `{}`, api.CodeInvalidConfig, "missing network name", ""},
		{"ADD", `{"name":"n","cniVersion":1}`, api.CodeDecode,
			"decoding version from network config: json: cannot unmarshal number into Go struct field .cniVersion of type string", ""},
		{"ADD", `{"name":"n"}`, api.CodeIncompatibleVersion, "incompatible CNI versions", `config is "0.1.0", plugin supports ["0.4.0" "1.0.0" "1.1.0"]`},
		{"DEL", `{"name":"n","cniVersion":"0.3.1"}`, api.CodeIncompatibleVersion, "incompatible CNI versions", `config is "0.3.1", plugin supports ["0.4.0" "1.0.0" "1.1.0"]`},
		{"CHECK", `{"name":"n","cniVersion":"0.3.1"}`, api.CodeIncompatibleVersion, "config version does not allow CHECK", ""},
		{"CHECK", `{"name":"n","cniVersion":"1.1"}`, api.CodeIncompatibleVersion, "incompatible CNI versions", `config is "1.1", plugin supports ["0.4.0" "1.0.0" "1.1.0"]`},
		{"GC", `{"name":"n","cniVersion":"1.0.0"}`, api.CodeIncompatibleVersion, "config version does not allow GC", ""},
		{"STATUS", `{"name":"n","cniVersion":"2.0.0"}`, api.CodeIncompatibleVersion, "plugin version does not allow STATUS", ""},
		{"STATUS", `{"name":"n","cniVersion":"1.x"}`, api.CodeDecode, `failed to convert minor version part "x": strconv.Atoi: parsing "x": invalid syntax`, ""},
	} {
		t.Run(tt.cmd+" "+tt.stdin, func(t *testing.T) {
			inv := (&invocation{env: cniEnv(tt.cmd), stdin: strings.NewReader(tt.stdin)}).run(t)
			if tt.code == 0 {
				if inv.status != 0 {
					t.Errorf("exit %d, stdout %q", inv.status, inv.stdout)
				}
				return
			}
			inv.wantError(t, tt.code, tt.msg, tt.details)
		})
	}
}

func TestMainVerbs(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	agent.Set(func(a *cniplugintest.Agent) { a.Result = agentResult })
	conf := func(v string) io.Reader { return bytes.NewReader(config(agent.Socket, v, "")) }

	// ADD prints the result in the config's version.
	inv := (&invocation{env: cniEnv("ADD", "CNI_NETNS_OVERRIDE", "1"), stdin: conf("1.1.0")}).run(t)
	want, err := os.ReadFile(filepath.Join("testdata", "result-1.1.0.json"))
	if err != nil {
		t.Fatal(err)
	}
	if inv.status != 0 || inv.stdout != string(want) {
		t.Errorf("ADD: exit %d, stdout:\n%s", inv.status, inv.stdout)
	}

	// The plugin's own namespace: ADD refuses it before the agent hears of it, DEL
	// detaches and then reports it; CNI_NETNS_OVERRIDE=1 or true (any case) allows it.
	// (The e2e tests ADD real sandboxes without the override.)
	n := len(agent.Received())
	(&invocation{env: cniEnv("ADD"), stdin: conf("1.0.0")}).run(t).
		wantError(t, api.CodeInvalidNetns, "plugin's netns and netns from CNI_NETNS should not be the same", "")
	if got := len(agent.Received()); got != n {
		t.Errorf("ADD of the plugin's own namespace reached the agent")
	}
	(&invocation{env: cniEnv("DEL"), stdin: conf("1.0.0")}).run(t).
		wantError(t, api.CodeInvalidNetns, "plugin's netns and netns from CNI_NETNS should not be the same", "")
	if r := agent.Last(t); r.Path != api.PathEndpointsDel {
		t.Errorf("DEL of the plugin's own namespace did not detach: %+v", r)
	}
	for _, env := range []map[string]string{
		cniEnv("DEL", "CNI_NETNS_OVERRIDE", "TRUE"),
		cniEnv("DEL", "CNI_NETNS", "/nonexistent"),
		cniEnv("DEL", "CNI_NETNS", ""),
		cniEnv("CHECK"),
		cniEnv("STATUS"),
		cniEnv("GC", "CNI_CONTAINERID", "", "CNI_IFNAME", "", "CNI_NETNS", ""),
	} {
		if inv := (&invocation{env: env, stdin: conf("1.1.0")}).run(t); inv.status != 0 || inv.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q", env, inv.status, inv.stdout)
		}
	}

	// The agent's errors keep their code.
	agent.Set(func(a *cniplugintest.Agent) {
		a.Err = &api.Error{Code: api.CodeCheckFailed, Msg: "route missing", Details: "0.0.0.0/0"}
	})
	(&invocation{env: cniEnv("CHECK"), stdin: conf("1.0.0")}).run(t).wantError(t, api.CodeCheckFailed, "route missing", "0.0.0.0/0")
}
