package api

import (
	"errors"
	"testing"
)

func TestGCRequestValidate(t *testing.T) {
	blue := func(id, ifName string) EndpointKey {
		return EndpointKey{Network: "blue", ContainerID: id, IfName: ifName}
	}
	for _, tt := range []struct {
		name string
		req  GCRequest
		msg  string // "" when valid
	}{
		{name: "valid list", req: GCRequest{Network: "blue", Valid: []EndpointKey{blue("c1", "eth0"), blue("c1", "eth1")}}},
		{name: "empty list", req: GCRequest{Network: "blue", Valid: []EndpointKey{}}},
		{name: "null list", req: GCRequest{Network: "blue"}},
		{name: "no network", req: GCRequest{Valid: []EndpointKey{blue("c1", "eth0")}},
			msg: "gc: network: missing (GC releases the attachments of one network and must name it)"},
		{name: "no network, no list", req: GCRequest{},
			msg: "gc: network: missing (GC releases the attachments of one network and must name it)"},
		{name: "attachment of another network", req: GCRequest{Network: "blue", Valid: []EndpointKey{blue("c1", "eth0"), {Network: "red", ContainerID: "c2", IfName: "eth0"}}},
			msg: `gc: valid[1].network "red": want the request's network "blue"`},
		{name: "attachment without network", req: GCRequest{Network: "blue", Valid: []EndpointKey{{ContainerID: "c1", IfName: "eth0"}}},
			msg: `gc: valid[0].network "": want the request's network "blue"`},
		{name: "attachment without container", req: GCRequest{Network: "blue", Valid: []EndpointKey{blue("", "eth0")}},
			msg: "gc: valid[0].containerID: missing"},
		{name: "attachment without interface", req: GCRequest{Network: "blue", Valid: []EndpointKey{blue("c1", "eth0"), blue("c1", "")}},
			msg: "gc: valid[1].ifName: missing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", tt.req, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Validate(%+v) = %v (%T), want an *Error", tt.req, err, err)
			}
			if e.Code != CodeInvalidConfig || e.Msg != tt.msg {
				t.Errorf("Validate(%+v) = code %d %q, want code %d %q", tt.req, e.Code, e.Msg, CodeInvalidConfig, tt.msg)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Object != "gc" {
				t.Errorf("Validate(%+v) = %v, want it to wrap the *ValidationError", tt.req, err)
			}
		})
	}
}
