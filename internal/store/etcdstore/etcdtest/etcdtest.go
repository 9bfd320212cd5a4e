// Package etcdtest starts a real etcd server inside a test process (the embed package of
// etcd 3.7), for the tests of the packages that use etcdstore: a one-member cluster on
// free ports of 127.0.0.1 with its data in the test's temporary directory.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Start starts etcd for the test and returns its client URLs; the test's cleanup stops
// it.
func Start(tb testing.TB) []string {
	tb.Helper()
	e, err := StartIn(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return []string{e.Config().AdvertiseClientUrls[0].String()}
}

// StartIn starts a one-member etcd with its data in dir (for a TestMain, which has no
// testing.TB); the caller closes it.
func StartIn(dir string) (*embed.Etcd, error) {
	client, err := freeURL()
	if err != nil {
		return nil, err
	}
	peer, err := freeURL()
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "podnet-test"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true // a throwaway test server: no need to survive a power cut
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start etcd: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, errors.New("start etcd: not ready after 30s")
	}
}

// freeURL returns an http URL on a port of 127.0.0.1 that was free a moment ago.
func freeURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}, nil
}
