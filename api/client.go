package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// API paths. The agent serves JSON over HTTP/1.1 on its unix socket.
const (
	PathStatus        = "/v1/status"
	PathNetworks      = "/v1/networks"
	PathEndpoints     = "/v1/endpoints"
	PathEndpointsDel  = "/v1/endpoints/detach"
	PathEndpointCheck = "/v1/endpoints/check"
	PathGC            = "/v1/gc"
	PathLabels        = "/v1/endpoints/labels"
	PathServices      = "/v1/services"
	PathDNSCheck      = "/v1/dns/check"
	PathNodes         = "/v1/nodes"
	PathBGPConfig     = "/v1/bgp/config"
	PathBGPPeers      = "/v1/bgp/peers"
	PathBGPStatus     = "/v1/bgp/status"
	PathNamespaces    = "/v1/namespaces"
	PathPolicies      = "/v1/policies"
	PathPolicyExplain = "/v1/policies/explain"
	PathMirror        = "/v1/mirror"
)

// LabelsRequest replaces the labels of an endpoint.
type LabelsRequest struct {
	EndpointKey
	Labels map[string]string `json:"labels"`
}

// DNSCheck is the outcome of the agent's search-path safety check.
type DNSCheck struct {
	// Search are the search domains checked (the cluster's and the node's).
	Search []string `json:"search"`
	// Problems name each search domain that answers for a random label.
	Problems []string `json:"problems,omitempty"`
}

// Client talks to the agent over its unix socket, one connection per request. It
// speaks just enough HTTP/1.1 itself, without net/http, to keep the CNI plugin small
// and quick to start (it is exec'd once per pod and verb).
//
// A sandbox's network namespace travels with a request as an open file descriptor
// (SCM_RIGHTS on the request's first bytes): the agent needs no access to the
// namespace's path, which may live in a mount namespace it cannot see (podman's netns
// files, an agent running in a container). The server side is internal/fdpass.
type Client struct {
	socket string
}

// NewClient returns a client for the agent listening on socket ("" means DefaultSocket).
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	return &Client{socket: socket}
}

// Socket is the path the client dials.
func (c *Client) Socket() string { return c.socket }

// Status reports the agent's health.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, "GET", PathStatus, nil, &s, -1)
	return s, err
}

// Nodes lists the cluster's nodes with their liveness and blocks.
func (c *Client) Nodes(ctx context.Context) ([]NodeInfo, error) {
	var ns []NodeInfo
	err := c.do(ctx, "GET", PathNodes, nil, &ns, -1)
	return ns, err
}

// RemoveNode force-releases a dead node's blocks, addresses and records.
func (c *Client) RemoveNode(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", PathNodes+"/"+url.PathEscape(name), nil, nil, -1)
}

// BGPConfig returns the cluster's BGP settings.
func (c *Client) BGPConfig(ctx context.Context) (BGPConfig, error) {
	var cfg BGPConfig
	err := c.do(ctx, "GET", PathBGPConfig, nil, &cfg, -1)
	return cfg, err
}

// SetBGPConfig sets the cluster's AS and node mesh.
func (c *Client) SetBGPConfig(ctx context.Context, req BGPConfigRequest) (BGPConfig, error) {
	var cfg BGPConfig
	err := c.do(ctx, "PUT", PathBGPConfig, req, &cfg, -1)
	return cfg, err
}

// BGPPeers lists the configured BGP peers.
func (c *Client) BGPPeers(ctx context.Context) ([]BGPPeer, error) {
	var peers []BGPPeer
	err := c.do(ctx, "GET", PathBGPPeers, nil, &peers, -1)
	return peers, err
}

// AddBGPPeer configures a BGP peer.
func (c *Client) AddBGPPeer(ctx context.Context, p BGPPeer) (BGPPeer, error) {
	var out BGPPeer
	err := c.do(ctx, "POST", PathBGPPeers, p, &out, -1)
	return out, err
}

// RemoveBGPPeer removes a configured BGP peer.
func (c *Client) RemoveBGPPeer(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", PathBGPPeers+"/"+url.PathEscape(name), nil, nil, -1)
}

// BGPStatus lists the BGP sessions of the agent's node.
func (c *Client) BGPStatus(ctx context.Context) ([]BGPSession, error) {
	var ss []BGPSession
	err := c.do(ctx, "GET", PathBGPStatus, nil, &ss, -1)
	return ss, err
}

// Namespaces lists the namespaces with their labels.
func (c *Client) Namespaces(ctx context.Context) ([]Namespace, error) {
	var out []Namespace
	err := c.do(ctx, "GET", PathNamespaces, nil, &out, -1)
	return out, err
}

// LabelNamespace sets and removes labels of a namespace.
func (c *Client) LabelNamespace(ctx context.Context, req NamespaceLabelRequest) (Namespace, error) {
	var out Namespace
	err := c.do(ctx, "POST", PathNamespaces+"/"+url.PathEscape(req.Name)+"/labels", req, &out, -1)
	return out, err
}

// ApplyPolicies creates or replaces network policies.
func (c *Client) ApplyPolicies(ctx context.Context, pols []NetworkPolicy) ([]NetworkPolicy, error) {
	var out []NetworkPolicy
	err := c.do(ctx, "POST", PathPolicies, pols, &out, -1)
	return out, err
}

// Policies lists the network policies of a namespace, or of all when ns is "".
func (c *Client) Policies(ctx context.Context, ns string) ([]NetworkPolicy, error) {
	var out []NetworkPolicy
	path := PathPolicies
	if ns != "" {
		path += "?" + url.Values{"namespace": {ns}}.Encode()
	}
	err := c.do(ctx, "GET", path, nil, &out, -1)
	return out, err
}

// Policy returns one network policy.
func (c *Client) Policy(ctx context.Context, ns, name string) (NetworkPolicy, error) {
	var out NetworkPolicy
	err := c.do(ctx, "GET", PathPolicies+"/"+url.PathEscape(ns)+"/"+url.PathEscape(name), nil, &out, -1)
	return out, err
}

// DeletePolicy removes a network policy.
func (c *Client) DeletePolicy(ctx context.Context, ns, name string) error {
	return c.do(ctx, "DELETE", PathPolicies+"/"+url.PathEscape(ns)+"/"+url.PathEscape(name), nil, nil, -1)
}

// ExplainPolicy decides a connection as the policies do; out receives the verdict
// (internal/policy.Verdict, which this package does not import).
func (c *Client) ExplainPolicy(ctx context.Context, req PolicyExplainRequest, out any) error {
	return c.do(ctx, "POST", PathPolicyExplain, req, out, -1)
}

// Mirror applies changes of a source (podnet controller).
func (c *Client) Mirror(ctx context.Context, req MirrorRequest) (MirrorResult, error) {
	var out MirrorResult
	err := c.do(ctx, "POST", PathMirror, req, &out, -1)
	return out, err
}

// MirrorInventory lists the objects of a source the agent's store holds.
func (c *Client) MirrorInventory(ctx context.Context, source string) (MirrorInventory, error) {
	var out MirrorInventory
	err := c.do(ctx, "GET", PathMirror+"?"+url.Values{"source": {source}}.Encode(), nil, &out, -1)
	return out, err
}

// AllEndpoints lists the endpoints of one network (or all) on every node.
func (c *Client) AllEndpoints(ctx context.Context, network string) ([]Endpoint, error) {
	var eps []Endpoint
	q := url.Values{"all": {"1"}}
	if network != "" {
		q.Set("network", network)
	}
	err := c.do(ctx, "GET", PathEndpoints+"?"+q.Encode(), nil, &eps, -1)
	return eps, err
}

// CreateNetwork creates a network from spec.
func (c *Client) CreateNetwork(ctx context.Context, spec NetworkSpec) (Network, error) {
	var n Network
	err := c.do(ctx, "POST", PathNetworks, spec, &n, -1)
	return n, err
}

// Networks lists all networks.
func (c *Client) Networks(ctx context.Context) ([]Network, error) {
	var ns []Network
	err := c.do(ctx, "GET", PathNetworks, nil, &ns, -1)
	return ns, err
}

// Network returns one network; an *Error with CodeNotFound when it does not exist.
func (c *Client) Network(ctx context.Context, name string) (Network, error) {
	var n Network
	err := c.do(ctx, "GET", PathNetworks+"/"+url.PathEscape(name), nil, &n, -1)
	return n, err
}

// DeleteNetwork removes a network; refused with CodeBusy while endpoints are attached.
func (c *Client) DeleteNetwork(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", PathNetworks+"/"+url.PathEscape(name), nil, nil, -1)
}

// Endpoints lists attachments, of one network or (network "") of all.
func (c *Client) Endpoints(ctx context.Context, network string) ([]Endpoint, error) {
	var eps []Endpoint
	p := PathEndpoints
	if network != "" {
		p += "?network=" + url.QueryEscape(network)
	}
	err := c.do(ctx, "GET", p, nil, &eps, -1)
	return eps, err
}

// Attach attaches the sandbox whose network namespace is open as netnsFD (-1: none,
// the agent opens req.Netns itself).
func (c *Client) Attach(ctx context.Context, req AttachRequest, netnsFD int) (Result, error) {
	var r Result
	err := c.do(ctx, "POST", PathEndpoints, req, &r, netnsFD)
	return r, err
}

// Detach detaches a sandbox; success when it is already gone.
func (c *Client) Detach(ctx context.Context, req DetachRequest, netnsFD int) error {
	return c.do(ctx, "POST", PathEndpointsDel, req, nil, netnsFD)
}

// Check verifies that an attachment is intact in the kernel.
func (c *Client) Check(ctx context.Context, req CheckRequest, netnsFD int) error {
	return c.do(ctx, "POST", PathEndpointCheck, req, nil, netnsFD)
}

// GC releases every attachment of a network that is not listed as valid.
func (c *Client) GC(ctx context.Context, req GCRequest) (GCResponse, error) {
	var r GCResponse
	err := c.do(ctx, "POST", PathGC, req, &r, -1)
	return r, err
}

// SetLabels replaces an endpoint's labels; services follow at once.
func (c *Client) SetLabels(ctx context.Context, req LabelsRequest) (Endpoint, error) {
	var ep Endpoint
	err := c.do(ctx, "POST", PathLabels, req, &ep, -1)
	return ep, err
}

// CreateService creates a service.
func (c *Client) CreateService(ctx context.Context, spec ServiceSpec) (Service, error) {
	var svc Service
	err := c.do(ctx, "POST", PathServices, spec, &svc, -1)
	return svc, err
}

// Services lists the services of a namespace ("" for all) with their backends.
func (c *Client) Services(ctx context.Context, namespace string) ([]Service, error) {
	var svcs []Service
	p := PathServices
	if namespace != "" {
		p += "?namespace=" + url.QueryEscape(namespace)
	}
	err := c.do(ctx, "GET", p, nil, &svcs, -1)
	return svcs, err
}

// Service returns one service with its backends.
func (c *Client) Service(ctx context.Context, namespace, name string) (Service, error) {
	var svc Service
	err := c.do(ctx, "GET", PathServices+"/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, &svc, -1)
	return svc, err
}

// DeleteService removes a service.
func (c *Client) DeleteService(ctx context.Context, namespace, name string) error {
	return c.do(ctx, "DELETE", PathServices+"/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, nil, -1)
}

// CheckDNS runs the search-path safety check.
func (c *Client) CheckDNS(ctx context.Context) (DNSCheck, error) {
	var r DNSCheck
	err := c.do(ctx, "GET", PathDNSCheck, nil, &r, -1)
	return r, err
}

// do sends one request on a new connection; fd >= 0 travels with its first bytes as
// SCM_RIGHTS. Connection failures are CodeNotAvailable, agent errors come back as the
// agent's *Error.
func (c *Client) do(ctx context.Context, method, path string, in, out any, fd int) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
	}
	unreachable := func(err error) error {
		return &Error{Code: CodeNotAvailable, Msg: fmt.Sprintf("podnet agent unreachable at %s", c.socket), Details: err.Error()}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return unreachable(err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: podnet\r\nConnection: close\r\n", method, path)
	if in != nil {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n")
	req.Write(body)
	var oob []byte
	if fd >= 0 {
		oob = syscall.UnixRights(fd)
	}
	if _, _, err := conn.(*net.UnixConn).WriteMsgUnix(req.Bytes(), oob, nil); err != nil {
		return unreachable(err)
	}
	status, data, err := readResponse(bufio.NewReader(conn))
	if err != nil {
		// The agent went away mid-request (restart, crash): worth a retry.
		return &Error{Code: CodeNotAvailable, Msg: fmt.Sprintf("podnet agent at %s closed the connection before answering", c.socket), Details: err.Error()}
	}
	if status >= 300 {
		var e Error
		if json.Unmarshal(data, &e) != nil || e.Code == 0 {
			return &Error{Code: CodeInternal, Msg: fmt.Sprintf("agent answered status %d", status), Details: string(data)}
		}
		return &e
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return &Error{Code: CodeDecode, Msg: "decode agent response", Details: err.Error()}
		}
	}
	return nil
}

// readResponse reads an HTTP/1.1 response with a Content-Length body, or a body that
// ends when the connection closes (the request asked for Connection: close).
func readResponse(r *bufio.Reader) (status int, body []byte, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, nil, err
	}
	proto, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	code, _, _ := strings.Cut(rest, " ")
	if status, err = strconv.Atoi(code); err != nil || !strings.HasPrefix(proto, "HTTP/1.") {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	length := -1
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return 0, nil, err
		}
		h = strings.TrimSpace(h)
		if h == "" {
			break
		}
		k, v, _ := strings.Cut(h, ":")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "content-length":
			if length, err = strconv.Atoi(strings.TrimSpace(v)); err != nil {
				return 0, nil, fmt.Errorf("malformed Content-Length %q", v)
			}
		case "transfer-encoding":
			return 0, nil, fmt.Errorf("unsupported Transfer-Encoding %q", strings.TrimSpace(v))
		}
	}
	if status == 204 || status == 304 {
		return status, nil, nil
	}
	if length >= 0 {
		body = make([]byte, length)
		_, err = io.ReadFull(r, body)
		return status, body, err
	}
	body, err = io.ReadAll(r)
	return status, body, err
}
