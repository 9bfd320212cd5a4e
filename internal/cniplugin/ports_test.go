package cniplugin

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/podnet/podnet/api"
)

func TestPortMappings(t *testing.T) {
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/proc/self/ns/net"}
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
		`{"hostPort":0,"containerPort":80}`:                    "runtimeConfig.portMappings[0]: hostPort 0",
		`{"hostPort":80,"containerPort":70000}`:                "containerPort 70000",
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
