package cniplugin

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
)

func TestParseConfigDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Config
	}{
		{
			name: "minimal",
			in:   `{"cniVersion":"1.0.0","name":"podman","type":"podnet-cni"}`,
			want: Config{CNIVersion: "1.0.0", Name: "podman", Type: "podnet-cni", Network: "podman", Socket: api.DefaultSocket},
		},
		{
			name: "network and socket given",
			in:   `{"cniVersion":"1.0.0","name":"podman","network":"blue","socket":"/tmp/x.sock"}`,
			want: Config{CNIVersion: "1.0.0", Name: "podman", Network: "blue", Socket: "/tmp/x.sock"},
		},
		{
			name: "driver defaults with subnets",
			in:   `{"cniVersion":"1.1.0","name":"podman","subnets":["10.88.0.0/16"]}`,
			want: Config{CNIVersion: "1.1.0", Name: "podman", Network: "podman", Socket: api.DefaultSocket, Driver: "bridge", Subnets: []string{"10.88.0.0/16"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestDefine(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"podman"}`))
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Define(); d != nil {
		t.Errorf("Define without subnets = %+v, want nil", d)
	}

	c, err = ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"podman","network":"blue","subnets":["10.88.0.0/16","fd88::/64"],
		"gateways":["10.88.0.1"],"mtu":1400,"noMasquerade":true}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &api.NetworkSpec{Name: "blue", Driver: "bridge", Subnets: []string{"10.88.0.0/16", "fd88::/64"},
		Gateways: []string{"10.88.0.1"}, MTU: 1400, NoMasquerade: true}
	if d := c.Define(); !reflect.DeepEqual(d, want) {
		t.Errorf("Define = %+v, want %+v", d, want)
	}
}

// wantErr fails unless err has code (api.ErrorCode) and a message containing each of
// msgs; an invalid config or environment must be an *api.ValidationError.
func wantErr(t *testing.T, err error, code uint, msgs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want code %d", code)
	}
	if got := api.ErrorCode(err); got != int(code) {
		t.Errorf("code = %d, want %d (%v)", got, code, err)
	}
	var ve *api.ValidationError
	if (code == api.CodeInvalidConfig || code == api.CodeInvalidEnv) && !errors.As(err, &ve) {
		t.Errorf("err = %v (%T), want an *api.ValidationError", err, err)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("message %q does not contain %q", err, m)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		in   string
		code uint
		want []string // substrings of the message
	}{
		{``, api.CodeDecode, []string{"decode network config"}},
		{`{"name":`, api.CodeDecode, []string{"decode network config"}},
		{`{"name":"a",}`, api.CodeDecode, []string{"decode network config", "offset"}},
		{`[1,2]`, api.CodeDecode, []string{"want a JSON object", "array"}},
		{`{}`, api.CodeInvalidConfig, []string{"network config: name: missing"}},
		{`{"name":"a","mtu":"1500"}`, api.CodeInvalidConfig, []string{`network config: mtu: cannot use JSON string`}},
		{`{"name":"a","subnets":"10.0.0.0/8"}`, api.CodeInvalidConfig, []string{`subnets: cannot use JSON string`}},
		{`{"name":"a","runtimeConfig":{"ips":[5]}}`, api.CodeInvalidConfig, []string{`runtimeConfig.ips: cannot use JSON number`}},
		{`{"name":"a","subnets":["10.0.0.0/33"]}`, api.CodeInvalidConfig, []string{`network config: subnets[0] "10.0.0.0/33": not a CIDR prefix`}},
		{`{"name":"a","subnets":["10.0.0.0/8","bogus"]}`, api.CodeInvalidConfig, []string{"subnets[1]", `"bogus"`}},
		// The agent's rules for one subnet apply in the plugin too.
		{`{"name":"a","subnets":["10.88.0.1/16"]}`, api.CodeInvalidConfig, []string{`subnets[0] "10.88.0.1/16": host bits are set (did you mean 10.88.0.0/16?)`}},
		{`{"name":"a","subnets":["127.1.0.0/16"]}`, api.CodeInvalidConfig, []string{`subnets[0] "127.1.0.0/16": overlaps reserved range 127.0.0.0/8`}},
		{`{"name":"a","subnets":["10.0.0.0/31"]}`, api.CodeInvalidConfig, []string{`subnets[0] "10.0.0.0/31": too small: at most /30`}},
		{`{"name":"a","subnets":["10.0.0.0/8"],"gateways":["10.0.0.300"]}`, api.CodeInvalidConfig, []string{"gateways[0]", `"10.0.0.300"`}},
		{`{"name":"a","subnets":["10.0.0.0/8"],"gateways":["fd00::1%eth0"]}`, api.CodeInvalidConfig, []string{`gateways[0] "fd00::1%eth0": zones are not allowed`}},
		{`{"name":"a","subnets":["10.0.0.0/8"],"mtu":70000}`, api.CodeInvalidConfig, []string{`mtu "70000": must be between 576 and 65535`}},
		{`{"name":"a","subnets":["10.0.0.0/8"],"mtu":-1}`, api.CodeInvalidConfig, []string{`mtu "-1"`}},
		{`{"name":"a","subnets":["fd00::/64"],"mtu":1000}`, api.CodeInvalidConfig, []string{`mtu "1000": IPv6 needs at least 1280`}},
		{`{"name":"a","gateways":["10.0.0.1"]}`, api.CodeInvalidConfig, []string{`gateways "10.0.0.1": given without subnets`}},
		{`{"name":"a","mtu":1400}`, api.CodeInvalidConfig, []string{`mtu "1400": given without subnets`}},
		{`{"name":"a","driver":"bridge"}`, api.CodeInvalidConfig, []string{`driver "bridge": given without subnets`}},
		{`{"name":"a","runtimeConfig":{"ips":["10.88.0.5/16","nope"]}}`, api.CodeInvalidConfig, []string{"runtimeConfig.ips[1]", `"nope"`}},
		{`{"name":"a","runtimeConfig":{"ips":["fe80::1%eth0"]}}`, api.CodeInvalidConfig, []string{"runtimeConfig.ips[0]", `"fe80::1%eth0"`}},
		{`{"name":"a","args":{"cni":{"ips":["10.88.0.5/40"]}}}`, api.CodeInvalidConfig, []string{"args.cni.ips[0]", `"10.88.0.5/40"`}},
		{`{"name":"a","runtimeConfig":{"mac":"zz:00"}}`, api.CodeInvalidConfig, []string{"runtimeConfig.mac", `"zz:00"`}},
		{`{"name":"a","runtimeConfig":{"mac":"01:00:5e:00:00:01"}}`, api.CodeInvalidConfig, []string{"runtimeConfig.mac", "multicast"}},
		{`{"name":"a","network":"a/b"}`, api.CodeInvalidConfig, []string{`network "a/b": must be 1-63 characters`}},
		{`{"name":"a","network":" a"}`, api.CodeInvalidConfig, []string{`network " a": must be 1-63 characters`}},
		{`{"name":"a","cni.dev/valid-attachments":[{"containerID":"x"}]}`, api.CodeInvalidConfig, []string{"cni.dev/valid-attachments[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.in))
			wantErr(t, err, tt.code, tt.want...)
		})
	}
}

func TestParseEnvArgs(t *testing.T) {
	tests := []struct {
		in   string
		want EnvArgs
		code uint
	}{
		{in: "", want: EnvArgs{}},
		{in: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;IP=10.88.0.5;MAC=aa:bb:cc:dd:ee:ff",
			want: EnvArgs{IPs: []string{"10.88.0.5"}, MAC: "aa:bb:cc:dd:ee:ff", PodName: "web-1", PodNamespace: "ns"}},
		{in: "IP=10.88.0.5,fd88::5;", want: EnvArgs{IPs: []string{"10.88.0.5", "fd88::5"}}},
		{in: "SOMETHING=x=y;OTHER=", want: EnvArgs{}},
		{in: "IP=10.88.0.300", code: api.CodeInvalidEnv},
		{in: "IgnoreUnknown", code: api.CodeInvalidEnv},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseEnvArgs(tt.in)
			if tt.code != 0 {
				wantErr(t, err, tt.code, "CNI_ARGS")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAttachRequestIPs(t *testing.T) {
	tests := []struct {
		name    string
		conf    string
		cniArgs string
		ips     []string
		mac     string
		errCode uint
		errMsg  string
	}{
		{name: "none", conf: `{}`},
		{name: "runtimeConfig", conf: `{"runtimeConfig":{"ips":["10.88.0.5/16"],"mac":"AA:BB:CC:DD:EE:01"}}`,
			ips: []string{"10.88.0.5/16"}, mac: "aa:bb:cc:dd:ee:01"},
		{name: "args.cni", conf: `{"args":{"cni":{"ips":["fd88::5"]}}}`, ips: []string{"fd88::5"}},
		{name: "CNI_ARGS", conf: `{}`, cniArgs: "IgnoreUnknown=1;IP=10.88.0.5;MAC=aa:bb:cc:dd:ee:02", ips: []string{"10.88.0.5"}, mac: "aa:bb:cc:dd:ee:02"},
		{name: "podman passes both forms", conf: `{"runtimeConfig":{"ips":["10.88.0.5/16"],"mac":"aa:bb:cc:dd:ee:01"}}`,
			cniArgs: "IP=10.88.0.5;MAC=aa:bb:cc:dd:ee:01", ips: []string{"10.88.0.5/16"}, mac: "aa:bb:cc:dd:ee:01"},
		{name: "prefix found later wins over bare", conf: `{"args":{"cni":{"ips":["10.88.0.5"]}}}`, cniArgs: "IP=10.88.0.5/16",
			ips: []string{"10.88.0.5/16"}},
		{name: "all three merged", conf: `{"runtimeConfig":{"ips":["10.88.0.5/16"]},"args":{"cni":{"ips":["fd88::5/64"]}}}`,
			cniArgs: "IP=10.88.0.5,fd88::5", ips: []string{"10.88.0.5/16", "fd88::5/64"}},
		{name: "contradicting lengths", conf: `{"runtimeConfig":{"ips":["10.88.0.5/16"]}}`, cniArgs: "IP=10.88.0.5/24",
			errCode: api.CodeInvalidConfig, errMsg: `network config: CNI_ARGS IP "10.88.0.5/24": contradicts runtimeConfig.ips "10.88.0.5/16"`},
		{name: "bad CNI_ARGS MAC", conf: `{}`, cniArgs: "MAC=nope", errCode: api.CodeInvalidEnv, errMsg: `CNI_ARGS MAC "nope": not a 48-bit MAC address`},
		{name: "multicast CNI_ARGS MAC", conf: `{}`, cniArgs: "MAC=01:00:5e:00:00:01", errCode: api.CodeInvalidEnv, errMsg: `CNI_ARGS MAC "01:00:5e:00:00:01": multicast MAC address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := `{"cniVersion":"1.0.0","name":"podman"}`
			if tt.conf != `{}` {
				in = `{"cniVersion":"1.0.0","name":"podman",` + strings.TrimPrefix(tt.conf, "{")
			}
			c, err := ParseConfig([]byte(in))
			if err != nil {
				t.Fatalf("ParseConfig(%s): %v", in, err)
			}
			args := &CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/x", Args: tt.cniArgs}
			req, err := c.AttachRequest(args)
			if tt.errCode != 0 {
				wantErr(t, err, tt.errCode, tt.errMsg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(req.IPs, tt.ips) || req.MAC != tt.mac {
				t.Errorf("IPs %q MAC %q, want %q %q", req.IPs, req.MAC, tt.ips, tt.mac)
			}
			if req.Network != "podman" || req.ContainerID != "c1" || req.IfName != "eth0" || req.Netns != "/run/netns/x" {
				t.Errorf("key/netns wrong: %+v", req)
			}
		})
	}
}

func TestAttachRequestPodName(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"podman"}`))
	if err != nil {
		t.Fatal(err)
	}
	req, err := c.AttachRequest(&CmdArgs{ContainerID: "c1", IfName: "eth0", Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if req.Name != "web-1" {
		t.Errorf("Name = %q, want web-1", req.Name)
	}
	if req.Define != nil {
		t.Errorf("Define = %+v without subnets", req.Define)
	}
}

// fuzzSeeds are valid and invalid configs; they run as ordinary tests.
var fuzzSeeds = []string{
	``,
	`null`,
	`[]`,
	`"x"`,
	`{}`,
	`{"name":""}`,
	`{"cniVersion":"1.0.0","name":"podman","type":"podnet-cni"}`,
	`{"cniVersion":"1.0.0","name":"podman","type":"podnet-cni","network":"blue","socket":"/run/podnet/podnet.sock","driver":"bridge",
	  "subnets":["10.88.0.0/16","fd88::/64"],"gateways":["10.88.0.1"],"mtu":1500,"noMasquerade":false,
	  "capabilities":{"ips":true,"mac":true},"runtimeConfig":{"ips":["10.88.0.5/16"],"mac":"aa:bb:cc:dd:ee:ff"},
	  "args":{"cni":{"ips":["fd88::5"]}},"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}]}}`,
	`{"cniVersion":"1.1.0","name":"podman","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}`,
	`{"cniVersion":"1.1.0","name":"podman","cni.dev/valid-attachments":[]}`,
	`{"name":"a","mtu":1e10}`,
	`{"name":"a","mtu":-5,"subnets":["10.0.0.0/8"]}`,
	`{"name":"a","subnets":["::/0","0.0.0.0/0","1.2.3.4/32"]}`,
	`{"name":"a","subnets":[null]}`,
	`{"name":"a","runtimeConfig":null,"args":null}`,
	`{"name":"a","runtimeConfig":{"ips":["::ffff:10.0.0.1/120","10.0.0.1/-1"]}}`,
	`{"name":"a","args":{"cni":{"ips":[""]}}}`,
	`{"name":"a","args":{"cni":7}}`,
	`{"name":"\u0000","network":"\u0000"}`,
	"{\"name\":\"a\",\"mac\":\"\xff\"}",
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ParseConfig(in)
		if err != nil {
			if code := api.ErrorCode(err); (code != api.CodeDecode && code != api.CodeInvalidConfig) || err.Error() == "" {
				t.Fatalf("ParseConfig(%q) = %v (%T, code %d), want code 6 or 7", in, err, err, code)
			}
			if c != nil {
				t.Fatalf("ParseConfig(%q) returned a config with an error", in)
			}
			return
		}
		if c.Name == "" || c.Network == "" || c.Socket == "" {
			t.Fatalf("ParseConfig(%q) = %+v: defaults missing", in, c)
		}
		if (c.Define() != nil) != (len(c.Subnets) > 0) {
			t.Fatalf("ParseConfig(%q): Define does not follow subnets", in)
		}
		if _, err := c.AttachRequest(&CmdArgs{ContainerID: "c", IfName: "eth0"}); err != nil {
			t.Fatalf("AttachRequest after a valid ParseConfig(%q): %v", in, err)
		}
	})
}
