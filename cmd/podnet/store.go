package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agent"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/store"
	"github.com/podnet/podnet/internal/store/etcdstore"
)

// storeFlags are the agent's choice of store: the bbolt file in --state-dir, or etcd.
type storeFlags struct {
	url, stateDir         string
	caCert, cert, key     string
	nodeName, nodeIP      string
	leaseTTL, dialTimeout time.Duration
}

// etcdEndpoints parses --store etcd://HOST:PORT[,HOST:PORT...] into client URLs.
func (f storeFlags) etcdEndpoints() ([]string, error) {
	rest, ok := strings.CutPrefix(f.url, "etcd://")
	if !ok || rest == "" {
		return nil, fmt.Errorf("--store %q: want etcd://HOST:PORT[,HOST:PORT...] (or no --store for the embedded file)", f.url)
	}
	scheme := "http://"
	if f.caCert != "" || f.cert != "" {
		scheme = "https://"
	}
	var eps []string
	for _, hp := range strings.Split(rest, ",") {
		if _, _, err := net.SplitHostPort(hp); err != nil {
			return nil, fmt.Errorf("--store %q: endpoint %q: %v", f.url, hp, err)
		}
		eps = append(eps, scheme+hp)
	}
	return eps, nil
}

func (f storeFlags) tls() (*tls.Config, error) {
	if f.caCert == "" && f.cert == "" && f.key == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.caCert != "" {
		pem, err := os.ReadFile(f.caCert)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cacert: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-cacert %s: no PEM certificate in it", f.caCert)
		}
	}
	if (f.cert == "") != (f.key == "") {
		return nil, fmt.Errorf("--etcd-cert and --etcd-key go together")
	}
	if f.cert != "" {
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// etcdConfig is the etcd client configuration of the flags.
func (f storeFlags) etcdConfig() (etcdstore.Config, error) {
	eps, err := f.etcdEndpoints()
	if err != nil {
		return etcdstore.Config{}, err
	}
	tc, err := f.tls()
	if err != nil {
		return etcdstore.Config{}, err
	}
	return etcdstore.Config{Endpoints: eps, TLS: tc, DialTimeout: f.dialTimeout}, nil
}

// openStore opens the agent's store. etcd that does not answer is retried every few
// seconds until ctx ends, with the agent's socket answering STATUS not ready (and every
// other request CNI error 50) meanwhile, so that runtimes see why.
func openStore(ctx context.Context, f storeFlags, socket string, log *slog.Logger) (store.Store, bool, error) {
	if f.url == "" {
		st, err := agent.OpenBoltStore(f.stateDir)
		return st, false, err
	}
	cfg, err := f.etcdConfig()
	if err != nil {
		return nil, false, err
	}
	eps := cfg.Endpoints
	st, err := etcdstore.Open(ctx, cfg)
	if err == nil {
		return st, true, nil
	}
	log.Error("etcd not reachable: retrying, STATUS reports not ready", "endpoints", strings.Join(eps, ","), "err", err)
	stop, serr := serveUnready(socket, err)
	if serr != nil {
		return nil, false, fmt.Errorf("%w (and the socket: %v)", err, serr)
	}
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil, false, err
		case <-time.After(2 * time.Second):
		}
		if st, err = etcdstore.Open(ctx, cfg); err == nil {
			log.Info("etcd reachable", "endpoints", strings.Join(eps, ","))
			return st, true, nil
		}
		log.Error("etcd not reachable", "endpoints", strings.Join(eps, ","), "err", err)
	}
}

// serveUnready answers on socket while the store cannot be opened: STATUS ready=false,
// anything else CNI error 50 (try again later) naming why.
func serveUnready(socket string, why error) (stop func(), err error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return nil, err
	}
	_ = os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	os.Chmod(socket, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ready":false,"version":%q}`+"\n", agent.Version)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"code":%d,"msg":%q}`+"\n", api.CodeNotAvailable, "agent not ready: "+why.Error())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return func() { srv.Close(); os.Remove(socket) }, nil
}

// nodeIdentity is the node's name and underlay address: the flags, else the hostname
// and the source address of the node's default route.
func nodeIdentity(f storeFlags, node netns.NsHandle, shared bool) (string, netip.Addr, error) {
	name := f.nodeName
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", netip.Addr{}, fmt.Errorf("--node-name: %w", err)
		}
		name = h
	}
	if !api.ValidName(name) {
		return "", netip.Addr{}, fmt.Errorf("--node-name %q: want letters, digits, '_', '.' and '-', starting with a letter or digit", name)
	}
	if f.nodeIP != "" {
		ip, err := netip.ParseAddr(f.nodeIP)
		if err != nil {
			return "", netip.Addr{}, fmt.Errorf("--node-ip %q: %v", f.nodeIP, err)
		}
		return name, ip, nil
	}
	n, err := kernel.OpenNode(node)
	if err != nil {
		return "", netip.Addr{}, err
	}
	defer n.Close()
	ip, err := n.DefaultRouteAddr()
	if err != nil && !shared {
		return name, netip.Addr{}, nil // a node of its own may have no route at all
	}
	return name, ip, err
}
