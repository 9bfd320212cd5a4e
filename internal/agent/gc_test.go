package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/podnet/podnet/api"
)

func TestStaleAttachments(t *testing.T) {
	key := func(network, id, ifName string) api.EndpointKey {
		return api.EndpointKey{Network: network, ContainerID: id, IfName: ifName}
	}
	ep := func(k api.EndpointKey) api.Endpoint { return api.Endpoint{EndpointKey: k} }
	blue1, blue1b, blue2 := key("blue", "c1", "eth0"), key("blue", "c1", "eth1"), key("blue", "c2", "eth0")
	red1 := key("red", "c1", "eth0")
	eps := []api.Endpoint{ep(blue1), ep(blue1b), ep(blue2)}
	for _, tt := range []struct {
		name  string
		eps   []api.Endpoint
		valid []api.EndpointKey
		want  []api.EndpointKey
	}{
		{name: "keeps exactly the listed", eps: eps, valid: []api.EndpointKey{blue1, blue2},
			want: []api.EndpointKey{blue1b}},
		{name: "all listed", eps: eps, valid: []api.EndpointKey{blue2, blue1b, blue1}},
		// The last container of the network is gone: everything of the network goes.
		{name: "empty list releases all", eps: eps, valid: []api.EndpointKey{},
			want: []api.EndpointKey{blue1, blue1b, blue2}},
		{name: "null list releases all", eps: eps,
			want: []api.EndpointKey{blue1, blue1b, blue2}},
		// The same container and interface on another network protects nothing here.
		{name: "other network protects nothing", eps: eps, valid: []api.EndpointKey{red1, key("red", "c2", "eth0")},
			want: []api.EndpointKey{blue1, blue1b, blue2}},
		// An entry without its network (an old client's) protects nothing either; the
		// request is refused before it gets here (TestGCRefusesBeforeReleasing).
		{name: "key without network protects nothing", eps: eps, valid: []api.EndpointKey{key("", "c1", "eth0")},
			want: []api.EndpointKey{blue1, blue1b, blue2}},
		// An endpoint of another network is never released by this network's GC.
		{name: "other network never stale", eps: []api.Endpoint{ep(blue1), ep(red1)}, valid: []api.EndpointKey{},
			want: []api.EndpointKey{blue1}},
		{name: "no endpoints", valid: []api.EndpointKey{blue1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := staleAttachments("blue", tt.eps, tt.valid)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("stale %v, want %v", got, tt.want)
			}
		})
	}
}

// A GC without a network, or with a valid attachment that does not carry its whole key
// on that network, is refused with code 7 before the agent reads or releases anything:
// the zero Agent has no store, and GC would panic if it got that far.
func TestGCRefusesBeforeReleasing(t *testing.T) {
	a := &Agent{}
	for _, tt := range []struct {
		name string
		body string
		msg  string
	}{
		{"no network", `{"valid":[{"network":"blue","containerID":"c1","ifName":"eth0"}]}`, "gc: network: missing"},
		{"empty network", `{"network":"","valid":[]}`, "gc: network: missing"},
		{"nothing", `{}`, "gc: network: missing"},
		{"attachment of another network", `{"network":"blue","valid":[{"network":"red","containerID":"c1","ifName":"eth0"}]}`,
			`gc: valid[0].network "red": want the request's network "blue"`},
		{"attachment without network", `{"network":"blue","valid":[{"containerID":"c1","ifName":"eth0"}]}`,
			`gc: valid[0].network "": want the request's network "blue"`},
		{"attachment without interface", `{"network":"blue","valid":[{"network":"blue","containerID":"c1"}]}`,
			"gc: valid[0].ifName: missing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeRequest[api.GCRequest](strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.GC(req)
			if api.ErrorCode(err) != api.CodeInvalidConfig || err == nil || !strings.HasPrefix(err.Error(), tt.msg) {
				t.Errorf("GC(%s) = %v (code %d), want code %d %q", tt.body, err, api.ErrorCode(err), api.CodeInvalidConfig, tt.msg)
			}

			// The same through the API: 400 with the CNI error, which the plugin passes on.
			w := httptest.NewRecorder()
			a.Handler().ServeHTTP(w, httptest.NewRequest("POST", api.PathGC, strings.NewReader(tt.body)))
			var ae api.Error
			if err := json.Unmarshal(w.Body.Bytes(), &ae); err != nil {
				t.Fatalf("response %d %q: %v", w.Code, w.Body, err)
			}
			if w.Code != http.StatusBadRequest || ae.Code != api.CodeInvalidConfig || !strings.HasPrefix(ae.Msg, tt.msg) {
				t.Errorf("POST %s %s: %d %+v, want 400 code %d %q", api.PathGC, tt.body, w.Code, ae, api.CodeInvalidConfig, tt.msg)
			}
		})
	}
}
