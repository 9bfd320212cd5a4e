package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// API paths. The agent serves JSON over HTTP on its unix socket.
const (
	PathStatus        = "/v1/status"
	PathNetworks      = "/v1/networks"
	PathEndpoints     = "/v1/endpoints"
	PathEndpointsDel  = "/v1/endpoints/detach"
	PathEndpointCheck = "/v1/endpoints/check"
	PathGC            = "/v1/gc"
)

// Client talks to the agent over its unix socket. The zero value is not usable: use NewClient.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	tr := &http.Transport{
		// One connection per request: a descriptor passed with a request must travel on
		// that request's own connection.
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", socket)
			if err != nil {
				return nil, err
			}
			if fd, ok := ctx.Value(fdKey{}).(int); ok {
				return &sendFDConn{UnixConn: c.(*net.UnixConn), fd: fd}, nil
			}
			return c, nil
		},
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Socket is the path the client dials.
func (c *Client) Socket() string { return c.socket }

// Status reports the agent's health.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, PathStatus, nil, &s, -1)
	return s, err
}

// CreateNetwork creates a network from spec.
func (c *Client) CreateNetwork(ctx context.Context, spec NetworkSpec) (Network, error) {
	var n Network
	err := c.do(ctx, http.MethodPost, PathNetworks, spec, &n, -1)
	return n, err
}

// Networks lists all networks.
func (c *Client) Networks(ctx context.Context) ([]Network, error) {
	var ns []Network
	err := c.do(ctx, http.MethodGet, PathNetworks, nil, &ns, -1)
	return ns, err
}

// Network returns one network; an *Error with CodeNotFound when it does not exist.
func (c *Client) Network(ctx context.Context, name string) (Network, error) {
	var n Network
	err := c.do(ctx, http.MethodGet, PathNetworks+"/"+url.PathEscape(name), nil, &n, -1)
	return n, err
}

// DeleteNetwork removes a network; refused with CodeBusy while endpoints are attached.
func (c *Client) DeleteNetwork(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, PathNetworks+"/"+url.PathEscape(name), nil, nil, -1)
}

// Endpoints lists attachments, of one network or (network "") of all.
func (c *Client) Endpoints(ctx context.Context, network string) ([]Endpoint, error) {
	var eps []Endpoint
	p := PathEndpoints
	if network != "" {
		p += "?network=" + url.QueryEscape(network)
	}
	err := c.do(ctx, http.MethodGet, p, nil, &eps, -1)
	return eps, err
}

// Attach attaches the sandbox whose network namespace is open as netnsFD (-1: none,
// the agent opens req.Netns itself).
func (c *Client) Attach(ctx context.Context, req AttachRequest, netnsFD int) (Result, error) {
	var r Result
	err := c.do(ctx, http.MethodPost, PathEndpoints, req, &r, netnsFD)
	return r, err
}

// Detach detaches a sandbox; success when it is already gone.
func (c *Client) Detach(ctx context.Context, req DetachRequest, netnsFD int) error {
	return c.do(ctx, http.MethodPost, PathEndpointsDel, req, nil, netnsFD)
}

// Check verifies that an attachment is intact in the kernel.
func (c *Client) Check(ctx context.Context, req CheckRequest, netnsFD int) error {
	return c.do(ctx, http.MethodPost, PathEndpointCheck, req, nil, netnsFD)
}

// GC releases every attachment of a network that is not listed as valid.
func (c *Client) GC(ctx context.Context, req GCRequest) (GCResponse, error) {
	var r GCResponse
	err := c.do(ctx, http.MethodPost, PathGC, req, &r, -1)
	return r, err
}

// do sends one request; fd >= 0 travels with it as SCM_RIGHTS.
func (c *Client) do(ctx context.Context, method, path string, in, out any, fd int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	if fd >= 0 {
		ctx = context.WithValue(ctx, fdKey{}, fd)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://podnet"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &Error{Code: CodeNotAvailable, Msg: fmt.Sprintf("podnet agent unreachable at %s", c.socket), Details: err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return &Error{Code: CodeIOFailure, Msg: "read agent response", Details: err.Error()}
	}
	if resp.StatusCode >= 300 {
		var e Error
		if json.Unmarshal(data, &e) != nil || e.Code == 0 {
			return &Error{Code: CodeInternal, Msg: fmt.Sprintf("agent answered %s", resp.Status), Details: string(data)}
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
