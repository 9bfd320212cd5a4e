package cniplugin

import (
	"bytes"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/cniplugin/cniplugintest"
)

func TestPortMappings(t *testing.T) {
	args := &CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/proc/self/ns/net"}
	conf := func(pm string) []byte {
		return []byte(`{"cniVersion":"1.0.0","name":"n","type":"podnet-cni","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[` + pm + `]}}`)
	}
	c, err := ParseConfig(conf(`{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":53,"containerPort":53,"protocol":"UDP","hostIP":"0.0.0.0"},{"hostPort":8443,"containerPort":443,"hostIP":"192.0.2.1"}`))
	if err != nil {
		t.Fatal(err)
	}
	req, err := c.AttachRequest(args)
	if err != nil {
		t.Fatal(err)
	}
	want := []api.PortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 53, ContainerPort: 53, Protocol: "udp"},
		{HostIP: netip.MustParseAddr("192.0.2.1"), HostPort: 8443, ContainerPort: 443, Protocol: "tcp"},
	}
	if len(req.Ports) != len(want) {
		t.Fatalf("ports %+v", req.Ports)
	}
	for i := range want {
		if req.Ports[i] != want[i] {
			t.Errorf("port %d: %+v, want %+v", i, req.Ports[i], want[i])
		}
	}
	for pm, msg := range map[string]string{
		`{"hostPort":0,"containerPort":80}`:                    `runtimeConfig.portMappings[0].hostPort "0": want 1-65535`,
		`{"hostPort":80,"containerPort":70000}`:                `containerPort "70000"`,
		`{"hostPort":80,"containerPort":80,"protocol":"sctp"}`: `protocol "sctp"`,
		`{"hostPort":80,"containerPort":80,"hostIP":"x"}`:      `hostIP "x"`,
	} {
		c, err := ParseConfig(conf(pm))
		if err == nil {
			_, err = c.AttachRequest(args)
		}
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want error containing %q", pm, err, msg)
		}
	}
}

// containerdConfig is the network config of an ADD as containerd 1.6's CRI sends it:
// go-cni's PortMapping has no JSON tags, so the portMappings keys are capitalised
// (HostPort, ContainerPort, Protocol, HostIP), every key is present, HostIP is "" when
// the pod gives none, and libcni marshals runtimeConfig from a map (sorted keys). Only
// the socket, which points at the test's fake agent, is not containerd's.
func containerdConfig(socket string) []byte {
	return []byte(`{"cniVersion":"1.0.0","name":"containerd-net","type":"podnet-cni","socket":"` + socket + `",` +
		containerdPortMappings + `}`)
}

const containerdPortMappings = `"capabilities":{"portMappings":true},` +
	`"runtimeConfig":{"portMappings":[` +
	`{"ContainerPort":80,"HostIP":"","HostPort":8080,"Protocol":"tcp"},` +
	`{"ContainerPort":53,"HostIP":"127.0.0.1","HostPort":5353,"Protocol":"udp"},` +
	`{"ContainerPort":443,"HostIP":"0.0.0.0","HostPort":8443,"Protocol":"tcp"},` +
	`{"ContainerPort":9090,"HostIP":"::1","HostPort":19090,"Protocol":"tcp"}]}`

// containerdPorts are the mappings containerdConfig asks for.
var containerdPorts = []api.PortMapping{
	{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
	{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 5353, ContainerPort: 53, Protocol: "udp"},
	{HostPort: 8443, ContainerPort: 443, Protocol: "tcp"},
	{HostIP: netip.MustParseAddr("::1"), HostPort: 19090, ContainerPort: 9090, Protocol: "tcp"},
}

// TestPortMappingsContainerd pins the capitalised keys containerd sends: they are read
// only because encoding/json matches keys case-insensitively, which a change of
// decoder (a case-sensitive one, or exact-match options) would silently undo.
func TestPortMappingsContainerd(t *testing.T) {
	agent := cniplugintest.NewAgent(t)
	c, err := ParseConfig(containerdConfig(agent.Socket))
	if err != nil {
		t.Fatal(err)
	}
	wantRaw := []PortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "127.0.0.1"},
		{HostPort: 8443, ContainerPort: 443, Protocol: "tcp", HostIP: "0.0.0.0"},
		{HostPort: 19090, ContainerPort: 9090, Protocol: "tcp", HostIP: "::1"},
	}
	if !reflect.DeepEqual(c.RuntimeConfig.PortMappings, wantRaw) {
		t.Fatalf("decoded portMappings\n%+v\nwant\n%+v", c.RuntimeConfig.PortMappings, wantRaw)
	}

	// Through ADD: the agent receives the mappings.
	agent.Set(func(a *cniplugintest.Agent) { a.Result = agentResult })
	args := &CmdArgs{ContainerID: "4e6f2d0c9b1a", Netns: selfNetns, IfName: "eth0", NetnsOverride: "1", StdinData: containerdConfig(agent.Socket),
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=4e6f2d0c9b1a;K8S_POD_UID=0d5c7a43-1f7b-4c6e-9a57-3b1d2f9e8c10"}
	if err := (&Plugin{Stdout: new(bytes.Buffer)}).Add(args); err != nil {
		t.Fatal(err)
	}
	var req api.AttachRequest
	agent.Last(t).Decode(t, &req)
	if !reflect.DeepEqual(req.Ports, containerdPorts) {
		t.Errorf("agent received ports\n%v\nwant\n%v", req.Ports, containerdPorts)
	}
	if req.Name != "web-0" || req.Namespace != "default" {
		t.Errorf("name %q namespace %q, want web-0 in default", req.Name, req.Namespace)
	}
}
