package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/fdpass"
)

// maxBody bounds request bodies.
const maxBody = 1 << 20

// Handler is the agent's JSON API.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	m := a.metrics
	mux.HandleFunc("GET "+api.PathStatus, m.instrument("status", func(w http.ResponseWriter, r *http.Request) {
		st, err := a.Status()
		reply(w, st, err)
	}))
	mux.HandleFunc("GET "+api.PathNetworks, m.instrument("network_list", func(w http.ResponseWriter, r *http.Request) {
		ns, err := a.Networks()
		if ns == nil {
			ns = []api.Network{}
		}
		reply(w, ns, err)
	}))
	mux.HandleFunc("POST "+api.PathNetworks, m.instrument("network_create", func(w http.ResponseWriter, r *http.Request) {
		s, err := DecodeRequest[api.NetworkSpec](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		n, err := a.CreateNetwork(s)
		reply(w, n, err)
	}))
	mux.HandleFunc("GET "+api.PathNetworks+"/{name}", m.instrument("network_get", func(w http.ResponseWriter, r *http.Request) {
		n, err := a.Network(r.PathValue("name"))
		reply(w, n, err)
	}))
	mux.HandleFunc("DELETE "+api.PathNetworks+"/{name}", m.instrument("network_delete", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, a.DeleteNetwork(r.PathValue("name")))
	}))
	mux.HandleFunc("GET "+api.PathEndpoints, m.instrument("endpoint_list", func(w http.ResponseWriter, r *http.Request) {
		list := a.Endpoints
		if r.URL.Query().Get("all") == "1" {
			list = a.AllEndpoints
		}
		eps, err := list(r.URL.Query().Get("network"))
		if eps == nil {
			eps = []api.Endpoint{}
		}
		reply(w, eps, err)
	}))
	mux.HandleFunc("POST "+api.PathEndpoints, m.instrument("add", func(w http.ResponseWriter, r *http.Request) {
		fd := fdpass.TakeFD(r)
		req, err := DecodeRequest[api.AttachRequest](r.Body)
		if err != nil {
			closeFD(fd)
			reply(w, nil, err)
			return
		}
		res, err := a.Attach(req, fd)
		reply(w, res, err)
	}))
	mux.HandleFunc("POST "+api.PathEndpointsDel, m.instrument("del", func(w http.ResponseWriter, r *http.Request) {
		closeFD(fdpass.TakeFD(r)) // DEL needs no namespace: deleting the host veth removes the pair
		req, err := DecodeRequest[api.DetachRequest](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		reply(w, nil, a.Detach(req))
	}))
	mux.HandleFunc("POST "+api.PathEndpointCheck, m.instrument("check", func(w http.ResponseWriter, r *http.Request) {
		fd := fdpass.TakeFD(r)
		req, err := DecodeRequest[api.CheckRequest](r.Body)
		if err != nil {
			closeFD(fd)
			reply(w, nil, err)
			return
		}
		reply(w, nil, a.Check(req, fd))
	}))
	mux.HandleFunc("POST "+api.PathGC, m.instrument("gc", func(w http.ResponseWriter, r *http.Request) {
		req, err := DecodeRequest[api.GCRequest](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		resp, err := a.GC(req)
		reply(w, resp, err)
	}))
	mux.HandleFunc("POST "+api.PathLabels, m.instrument("labels", func(w http.ResponseWriter, r *http.Request) {
		req, err := DecodeRequest[api.LabelsRequest](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		ep, err := a.SetLabels(req.EndpointKey, req.Labels)
		reply(w, ep, err)
	}))
	mux.HandleFunc("POST "+api.PathMirror, m.instrument("mirror", func(w http.ResponseWriter, r *http.Request) {
		req, err := DecodeRequest[api.MirrorRequest](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		res, err := a.Mirror(req)
		reply(w, res, err)
	}))
	mux.HandleFunc("GET "+api.PathMirror, m.instrument("mirror_inventory", func(w http.ResponseWriter, r *http.Request) {
		inv, err := a.MirrorInventory(r.URL.Query().Get("source"))
		reply(w, inv, err)
	}))
	mux.HandleFunc("GET "+api.PathServices, m.instrument("service_list", func(w http.ResponseWriter, r *http.Request) {
		svcs, err := a.Services(r.URL.Query().Get("namespace"))
		if svcs == nil {
			svcs = []api.Service{}
		}
		reply(w, svcs, err)
	}))
	mux.HandleFunc("POST "+api.PathServices, m.instrument("service_create", func(w http.ResponseWriter, r *http.Request) {
		s, err := DecodeRequest[api.ServiceSpec](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		svc, err := a.CreateService(s)
		reply(w, svc, err)
	}))
	mux.HandleFunc("GET "+api.PathServices+"/{ns}/{name}", m.instrument("service_get", func(w http.ResponseWriter, r *http.Request) {
		svc, err := a.Service(r.PathValue("ns"), r.PathValue("name"))
		reply(w, svc, err)
	}))
	mux.HandleFunc("DELETE "+api.PathServices+"/{ns}/{name}", m.instrument("service_delete", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, a.DeleteService(r.PathValue("ns"), r.PathValue("name")))
	}))
	mux.HandleFunc("GET "+api.PathNodes, m.instrument("node_list", func(w http.ResponseWriter, r *http.Request) {
		nodes, err := a.Nodes()
		reply(w, nodes, err)
	}))
	mux.HandleFunc("DELETE "+api.PathNodes+"/{name}", m.instrument("node_delete", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, a.RemoveNode(r.PathValue("name")))
	}))
	mux.HandleFunc("GET "+api.PathBGPConfig, m.instrument("bgp_config_get", func(w http.ResponseWriter, r *http.Request) {
		c, err := a.BGPConfig()
		reply(w, c, err)
	}))
	mux.HandleFunc("PUT "+api.PathBGPConfig, m.instrument("bgp_config_set", func(w http.ResponseWriter, r *http.Request) {
		req, err := DecodeRequest[api.BGPConfigRequest](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		c, err := a.SetBGPConfig(req)
		reply(w, c, err)
	}))
	mux.HandleFunc("GET "+api.PathBGPPeers, m.instrument("bgp_peer_list", func(w http.ResponseWriter, r *http.Request) {
		peers, err := a.BGPPeers()
		reply(w, peers, err)
	}))
	mux.HandleFunc("POST "+api.PathBGPPeers, m.instrument("bgp_peer_add", func(w http.ResponseWriter, r *http.Request) {
		p, err := DecodeRequest[api.BGPPeer](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		p, err = a.AddBGPPeer(p)
		reply(w, p, err)
	}))
	mux.HandleFunc("DELETE "+api.PathBGPPeers+"/{name}", m.instrument("bgp_peer_delete", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, a.RemoveBGPPeer(r.PathValue("name")))
	}))
	mux.HandleFunc("GET "+api.PathBGPStatus, m.instrument("bgp_status", func(w http.ResponseWriter, r *http.Request) {
		ss, err := a.BGPStatus()
		reply(w, ss, err)
	}))
	mux.HandleFunc("POST "+api.PathPolicies, m.instrument("policy_apply", func(w http.ResponseWriter, r *http.Request) {
		pols, err := DecodeRequest[[]api.NetworkPolicy](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		pols, err = a.ApplyPolicies(pols)
		reply(w, pols, err)
	}))
	mux.HandleFunc("GET "+api.PathPolicies, m.instrument("policy_list", func(w http.ResponseWriter, r *http.Request) {
		pols, err := a.Policies(r.URL.Query().Get("namespace"))
		reply(w, pols, err)
	}))
	mux.HandleFunc("GET "+api.PathPolicies+"/{ns}/{name}", m.instrument("policy_get", func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Policy(r.PathValue("ns"), r.PathValue("name"))
		reply(w, p, err)
	}))
	mux.HandleFunc("DELETE "+api.PathPolicies+"/{ns}/{name}", m.instrument("policy_delete", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, a.DeletePolicy(r.PathValue("ns"), r.PathValue("name")))
	}))
	mux.HandleFunc("POST "+api.PathPolicyExplain, m.instrument("policy_explain", func(w http.ResponseWriter, r *http.Request) {
		req, err := DecodeRequest[api.PolicyExplainRequest](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		v, err := a.ExplainPolicy(req)
		reply(w, v, err)
	}))
	mux.HandleFunc("GET "+api.PathNamespaces, m.instrument("namespace_list", func(w http.ResponseWriter, r *http.Request) {
		out, err := a.Namespaces()
		reply(w, out, err)
	}))
	mux.HandleFunc("POST "+api.PathNamespaces+"/{name}/labels", m.instrument("namespace_label", func(w http.ResponseWriter, r *http.Request) {
		req, err := DecodeRequest[api.NamespaceLabelRequest](r.Body)
		if err != nil {
			reply(w, nil, err)
			return
		}
		req.Name = r.PathValue("name")
		ns, err := a.LabelNamespace(req)
		reply(w, ns, err)
	}))
	mux.HandleFunc("GET "+api.PathDNSCheck, m.instrument("dns_check", func(w http.ResponseWriter, r *http.Request) {
		res, err := a.CheckDNS(r.Context())
		reply(w, res, err)
	}))
	return mux
}

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// DecodeRequest decodes one JSON request body strictly (unknown fields and trailing
// data are errors), with the CNI decode error code.
func DecodeRequest[T any](r io.Reader) (T, error) {
	var v T
	fail := func(details string) (T, error) {
		return v, &api.Error{Code: api.CodeDecode, Msg: fmt.Sprintf("decode %T request", v), Details: details}
	}
	data, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return fail(err.Error())
	}
	if len(data) > maxBody {
		return fail(fmt.Sprintf("request larger than %d bytes", maxBody))
	}
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return fail("null is not a request object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return fail(err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail("trailing data after the JSON object")
	}
	return v, nil
}

// reply writes v (or err as an *api.Error) as JSON with a Content-Length: the api
// client reads plain Content-Length bodies.
func reply(w http.ResponseWriter, v any, err error) {
	status := http.StatusOK
	if err != nil {
		ae := api.AsError(err)
		status, v = httpStatus(ae.Code), ae
		if cw, ok := w.(*codeWriter); ok {
			cw.code = ae.Code
		}
	} else if v == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	data, merr := json.Marshal(v)
	if merr != nil {
		status, data = http.StatusInternalServerError, []byte(`{"code":100,"msg":"encode response"}`)
	}
	data = append(data, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	w.Write(data)
}

func httpStatus(code int) int {
	switch code {
	case api.CodeNotFound, api.CodeUnknownContainer:
		return http.StatusNotFound
	case api.CodeBusy, api.CodeAddressInUse:
		return http.StatusConflict
	case api.CodeInternal, api.CodeIOFailure:
		return http.StatusInternalServerError
	case api.CodeTryAgainLater, api.CodeNotAvailable, api.CodePoolExhausted:
		return http.StatusServiceUnavailable
	default:
		return http.StatusBadRequest
	}
}

// Serve listens on the unix socket (mode 0600) and serves the API and the reconcile
// loop until ctx ends, then shuts down gracefully.
func (a *Agent) Serve(ctx context.Context, socket string) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return err
	}
	if c, err := net.DialTimeout("unix", socket, 200*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another agent is listening", socket)
	}
	_ = os.Remove(socket)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen %s: %w", socket, err)
	}
	// Connecting needs write permission, which the usual umask already withholds from
	// group and others; 0600 makes it explicit (umask is process-wide: not touched).
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("chmod %s: %w", socket, err)
	}
	l.SetUnlinkOnClose(true)
	srv := &http.Server{Handler: a.Handler(), ConnContext: fdpass.ConnContext, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go a.Run(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(fdpass.FDListener{UnixListener: l}) }()
	a.log.Info("agent listening", "socket", socket)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	return srv.Shutdown(sctx)
}
