package agent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agent"
)

func decodeAttach(r io.Reader) (any, error) { return agent.DecodeRequest[api.AttachRequest](r) }
func decodeDetach(r io.Reader) (any, error) { return agent.DecodeRequest[api.DetachRequest](r) }
func decodeSpec(r io.Reader) (any, error)   { return agent.DecodeRequest[api.NetworkSpec](r) }
func decodeGC(r io.Reader) (any, error)     { return agent.DecodeRequest[api.GCRequest](r) }

var blueKey = api.EndpointKey{Network: "blue", ContainerID: "c1", IfName: "eth0"}

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name    string
		decode  func(io.Reader) (any, error)
		body    string
		want    any    // when the body decodes
		msg     string // when it does not: the error message
		details string // and a substring of its details
	}{
		{name: "attach minimal", decode: decodeAttach,
			body: `{"network":"blue","containerID":"c1","ifName":"eth0","netns":"/var/run/netns/c1"}`,
			want: api.AttachRequest{EndpointKey: blueKey, Netns: "/var/run/netns/c1"}},
		{name: "attach with define ips mac", decode: decodeAttach,
			body: `{"network":"blue","containerID":"c1","ifName":"eth0","netns":"","name":"web",
				"define":{"name":"blue","driver":"bridge","subnets":["10.88.1.0/24","fd00::/64"],"gateways":["10.88.1.1"],"mtu":1400,"noMasquerade":true},
				"ips":["10.88.1.5","fd00::5/64"],"mac":"02:42:ac:11:00:02"}`,
			want: api.AttachRequest{EndpointKey: blueKey, Name: "web",
				Define: &api.NetworkSpec{Name: "blue", Driver: "bridge", Subnets: []string{"10.88.1.0/24", "fd00::/64"},
					Gateways: []string{"10.88.1.1"}, MTU: 1400, NoMasquerade: true},
				IPs: []string{"10.88.1.5", "fd00::5/64"}, MAC: "02:42:ac:11:00:02"}},
		{name: "trailing white space is fine", decode: decodeAttach,
			body: "{\"network\":\"blue\",\"containerID\":\"c1\",\"ifName\":\"eth0\"}\r\n\t \n",
			want: api.AttachRequest{EndpointKey: blueKey}},
		{name: "empty object", decode: decodeAttach, body: `{}`, want: api.AttachRequest{}},
		{name: "define null", decode: decodeAttach, body: `{"define":null}`, want: api.AttachRequest{}},
		{name: "detach", decode: decodeDetach, body: `{"network":"blue","containerID":"c1","ifName":"eth0"}`,
			want: api.DetachRequest{EndpointKey: blueKey}},
		{name: "network spec", decode: decodeSpec, body: `{"name":"blue","subnets":["10.88.1.0/24"],"mtu":9000}`,
			want: api.NetworkSpec{Name: "blue", Subnets: []string{"10.88.1.0/24"}, MTU: 9000}},
		{name: "gc", decode: decodeGC, body: `{"network":"blue","valid":[{"network":"","containerID":"c1","ifName":"eth0"}]}`,
			want: api.GCRequest{Network: "blue", Valid: []api.EndpointKey{{ContainerID: "c1", IfName: "eth0"}}}},

		{name: "unknown field", decode: decodeAttach, body: `{"network":"blue","bogus":1}`,
			msg: "decode api.AttachRequest request", details: `json: unknown field "bogus"`},
		{name: "unknown field in define", decode: decodeAttach, body: `{"define":{"name":"blue","colour":"red"}}`,
			msg: "decode api.AttachRequest request", details: `json: unknown field "colour"`},
		{name: "unknown field in gc key", decode: decodeGC, body: `{"network":"blue","valid":[{"pod":"x"}]}`,
			msg: "decode api.GCRequest request", details: `json: unknown field "pod"`},
		{name: "field of another request", decode: decodeDetach, body: `{"network":"blue","ips":["10.0.0.1"]}`,
			msg: "decode api.DetachRequest request", details: `json: unknown field "ips"`},
		{name: "second object", decode: decodeAttach, body: `{"network":"blue"} {"network":"red"}`,
			msg: "decode api.AttachRequest request", details: "trailing data after the JSON object"},
		{name: "trailing garbage", decode: decodeAttach, body: `{"network":"blue"}x`,
			msg: "decode api.AttachRequest request", details: "trailing data after the JSON object"},
		{name: "trailing brace", decode: decodeSpec, body: `{"name":"blue"}}`,
			msg: "decode api.NetworkSpec request", details: "trailing data after the JSON object"},
		{name: "trailing number", decode: decodeSpec, body: `{"name":"blue"} 0`,
			msg: "decode api.NetworkSpec request", details: "trailing data after the JSON object"},
		{name: "empty body", decode: decodeAttach, body: ``,
			msg: "decode api.AttachRequest request", details: "EOF"},
		{name: "only white space", decode: decodeAttach, body: " \n",
			msg: "decode api.AttachRequest request", details: "EOF"},
		{name: "truncated", decode: decodeAttach, body: `{"network":`,
			msg: "decode api.AttachRequest request", details: "unexpected EOF"},
		{name: "syntax error", decode: decodeAttach, body: `{"network" "blue"}`,
			msg: "decode api.AttachRequest request", details: "invalid character"},
		{name: "single quotes", decode: decodeAttach, body: `{'network':'blue'}`,
			msg: "decode api.AttachRequest request", details: "invalid character"},
		{name: "array instead of object", decode: decodeAttach, body: `[]`,
			msg: "decode api.AttachRequest request", details: "cannot unmarshal array"},
		{name: "string where a list is expected", decode: decodeAttach, body: `{"ips":"10.88.1.5"}`,
			msg: "decode api.AttachRequest request", details: "cannot unmarshal string"},
		{name: "string mtu", decode: decodeSpec, body: `{"name":"blue","mtu":"1500"}`,
			msg: "decode api.NetworkSpec request", details: "cannot unmarshal string"},
		{name: "fractional mtu", decode: decodeSpec, body: `{"name":"blue","mtu":1500.5}`,
			msg: "decode api.NetworkSpec request", details: "cannot unmarshal number"},
		{name: "mtu overflows int", decode: decodeSpec, body: `{"name":"blue","mtu":99999999999999999999}`,
			msg: "decode api.NetworkSpec request", details: "cannot unmarshal number"},
		{name: "body over 1 MiB", decode: decodeAttach, body: `{"name":"` + strings.Repeat("a", 1<<20) + `"}`,
			msg: "decode api.AttachRequest request", details: "request larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.decode(strings.NewReader(tt.body))
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("decode %s: %v", tt.body, err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("decode %s\ngot  %+v\nwant %+v", tt.body, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("decode %.200s = %+v, want an error", tt.body, got)
			}
			var ae *api.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v is %T, want *api.Error", err, err)
			}
			if ae.Code != api.CodeDecode || api.ErrorCode(err) != api.CodeDecode {
				t.Errorf("error code %d, want %d (CodeDecode)", ae.Code, api.CodeDecode)
			}
			if ae.Msg != tt.msg {
				t.Errorf("error msg %q, want %q", ae.Msg, tt.msg)
			}
			if !strings.Contains(ae.Details, tt.details) {
				t.Errorf("error details %q, want them to contain %q", ae.Details, tt.details)
			}
			if want := ae.Msg + ": " + ae.Details; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
		})
	}
}

// A JSON null is not a request: it should be refused like an empty body, not read as
// the zero request.
func TestDecodeRequestNull(t *testing.T) {
	if v, err := agent.DecodeRequest[api.AttachRequest](strings.NewReader("null")); err == nil {
		t.Errorf(`decode "null" = %+v, nil; want a decode error`, v)
	}
}

// The body limit must not hide trailing data: an object that ends exactly at the limit
// followed by garbage is still a body with trailing data.
func TestDecodeRequestTrailingDataBeyondLimit(t *testing.T) {
	const limit = 1 << 20
	obj := `{"name":"` + strings.Repeat("a", limit-len(`{"name":""}`)) + `"}`
	if len(obj) != limit {
		t.Fatalf("object is %d bytes, want %d", len(obj), limit)
	}
	if _, err := agent.DecodeRequest[api.AttachRequest](strings.NewReader(obj)); err != nil {
		t.Fatalf("object of exactly 1 MiB: %v", err)
	}
	if _, err := agent.DecodeRequest[api.AttachRequest](strings.NewReader(obj + "garbage")); err == nil {
		t.Errorf("object of 1 MiB followed by garbage decoded without error")
	}
}

// normalize makes empty slices nil: JSON with omitempty cannot tell them apart.
func normalize(r api.AttachRequest) api.AttachRequest {
	if len(r.IPs) == 0 {
		r.IPs = nil
	}
	if r.Define != nil {
		d := *r.Define
		if len(d.Subnets) == 0 {
			d.Subnets = nil
		}
		if len(d.Gateways) == 0 {
			d.Gateways = nil
		}
		r.Define = &d
	}
	return r
}

func FuzzDecodeAttachRequest(f *testing.F) {
	for _, seed := range []string{
		`{"network":"blue","containerID":"c1","ifName":"eth0","netns":"/var/run/netns/c1"}`,
		`{"network":"blue","containerID":"c1","ifName":"eth0","netns":"/proc/42/ns/net","name":"web"}`,
		`{"network":"blue","containerID":"c1","ifName":"eth0","define":{"name":"blue","subnets":["10.88.1.0/24","fd00::/64"]}}`,
		`{"network":"blue","containerID":"c1","ifName":"eth0","define":{"name":"blue","driver":"bridge","subnets":["10.88.1.0/24"],"gateways":["10.88.1.254"],"mtu":9000,"noMasquerade":true}}`,
		`{"network":"blue","containerID":"c1","ifName":"eth0","ips":["10.88.1.5","fd00::5/64"]}`,
		`{"network":"blue","containerID":"c1","ifName":"eth0","mac":"02:42:ac:11:00:02"}`,
		`{"network":"blue","containerID":"c1","ifName":"eth0","define":{"name":"blue","subnets":[]},"ips":[],"mac":""}`,
		`{"network":"bl\u00fce","containerID":"c\"1","ifName":"eth0\u0000","name":"<&>"}`,
		`{}`,
		``,
		`null`,
		`[]`,
		`{"network":`,
		`{"network":"blue"} {"network":"red"}`,
		`{"network":"blue","bogus":true}`,
		`{"define":{"name":"blue","mtu":"1500"}}`,
		`{"define":{"name":"blue","mtu":1e3}}`,
		`{"ips":"10.88.1.5"}`,
		"{\"network\":\"\xff\xfe\"}",
		`{"NETWORK":"blue","Define":{"Name":"blue"}}`,
		`{"network":"a","network":"b"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v1, err := agent.DecodeRequest[api.AttachRequest](bytes.NewReader(body))
		if err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != api.CodeDecode {
				t.Fatalf("decode %q: error %v (%T) is not an *api.Error with CodeDecode", body, err, err)
			}
			return
		}
		enc1, err := json.Marshal(v1)
		if err != nil {
			t.Fatalf("encode %+v (from %q): %v", v1, body, err)
		}
		v2, err := agent.DecodeRequest[api.AttachRequest](bytes.NewReader(enc1))
		if err != nil {
			t.Fatalf("decode re-encoded %s (from %q): %v", enc1, body, err)
		}
		if !reflect.DeepEqual(normalize(v1), normalize(v2)) {
			t.Fatalf("round trip of %q changed the request\nfirst  %+v\nsecond %+v", body, v1, v2)
		}
		enc2, err := json.Marshal(v2)
		if err != nil {
			t.Fatalf("encode %+v: %v", v2, err)
		}
		if !bytes.Equal(enc1, enc2) {
			t.Fatalf("re-encoding of %q is not stable\nfirst  %s\nsecond %s", body, enc1, enc2)
		}
	})
}
