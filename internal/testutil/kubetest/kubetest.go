// Package kubetest runs a real kube-apiserver for tests: the release podnet's Kubernetes
// mode is built against (hack/kube-apiserver.sh builds it once into a cache), on free
// ports of 127.0.0.1, backed by Debian's etcd in a temporary directory. A client sees a
// real API server (validation, defaulting, ClusterIP allocation, watch semantics) and no
// controllers: nothing schedules pods, finalizes namespaces or fills EndpointSlices
// unless the test does. Both processes are children of the test, ended by their PIDs.
// Launch does the same for a program (the benchmarks), without a testing.TB.
package kubetest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/podnet/podnet/internal/agentproc"
	"github.com/podnet/podnet/internal/testutil"
)

// Version is the Kubernetes release the API server is built from; it matches the
// k8s.io/client-go and k8s.io/api versions in go.mod.
const Version = "v1.37.2"

// DefaultServiceCIDR is the service ClusterIP range when Options leaves it unset (the
// kubeadm default).
var DefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")

// apiStopGrace is how long the API server may take to end after SIGTERM before SIGKILL.
const apiStopGrace = 15 * time.Second

// readyTimeout bounds the wait for /readyz; the server is ready about 3.4 s after it
// starts on an idle machine.
const readyTimeout = 60 * time.Second

// Options tunes the cluster; the zero value is usable.
type Options struct {
	// ServiceCIDR is --service-cluster-ip-range: where ClusterIPs are allocated.
	ServiceCIDR netip.Prefix
	// RBAC authorizes requests with RBAC instead of allowing everything (the Kubeconfig
	// user stays allowed everything: it is in system:masters).
	RBAC bool
	// Users are users of no group, with a token each and a kubeconfig in
	// Cluster.UserKubeconfigs: what RBAC grants them is all they may do.
	Users []string
}

// Cluster is a running API server and its etcd.
type Cluster struct {
	// Kubeconfig is a kubeconfig file for the cluster: token auth as a member of
	// system:masters, the server certificate verified against the CA the API server
	// wrote into its --cert-dir.
	Kubeconfig string
	// Config is what Kubeconfig describes, for client-go.
	Config *rest.Config
	// Client is a clientset on Config.
	Client kubernetes.Interface
	// UserKubeconfigs are the kubeconfig files of Options.Users, by name.
	UserKubeconfigs map[string]string
	// URL is the API server's https://127.0.0.1:PORT.
	URL string
	// ServiceCIDR is the range ClusterIPs are allocated from.
	ServiceCIDR netip.Prefix

	t     testing.TB // the test of StartWith; nil for Launch
	dir   string
	bin   string
	args  []string
	token string
	opts  Options
	users map[string]string // Options.Users' tokens
	etcd  *agentproc.Etcd
	api   *agentproc.Child // nil while stopped
	// logShown says a failure message holds the tail of the server's log already.
	logShown bool
}

// Start starts etcd and kube-apiserver with default Options; see StartWith.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts etcd and kube-apiserver and waits until the API server is ready.
// Everything is stopped and removed when the test ends. A missing etcd skips the test
// on a developer box and fails it under CI (CI=true); a kube-apiserver that cannot be
// found or built always fails it.
func StartWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	testutil.RequireCommands(t, "etcd")
	c, err := Launch(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	t.Cleanup(func() {
		if t.Failed() && !c.logShown {
			t.Logf("kube-apiserver log (last lines):\n%s", agentproc.Tail(c.LogPath(), 40))
		}
		c.Stop()
	})
	return c
}

// Launch is StartWith for a program (the benchmarks): it starts etcd and kube-apiserver
// with their data, certificates and logs in dir (made if missing; left in place) and waits
// until the API server is ready. The caller ends both with Stop. On error nothing is
// left running, and an API server that did not get ready has the tail of its log in
// the error.
func Launch(dir string, opts Options) (*Cluster, error) {
	if !opts.ServiceCIDR.IsValid() {
		opts.ServiceCIDR = DefaultServiceCIDR
	}
	bin, err := Binary()
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w", err)
	}
	c := &Cluster{dir: dir, bin: bin, ServiceCIDR: opts.ServiceCIDR.Masked(), opts: opts}
	if err := c.launch(); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// launch is Launch once the Cluster is made: the caller stops what it started.
func (c *Cluster) launch() (err error) {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	if c.etcd, err = agentproc.StartEtcd(c.dir); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	if c.args, c.token, err = c.prepare(); err != nil {
		return err
	}
	if err := c.startAPIServer(); err != nil {
		return err
	}

	// The server wrote its self-signed certificate (the leaf and the CA that signed it)
	// into --cert-dir on its first start; later starts reuse it.
	ca, err := os.ReadFile(filepath.Join(c.dir, "certs", "apiserver.crt"))
	if err != nil {
		return fmt.Errorf("kube-apiserver certificate: %w", err)
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.URL, ca, c.token); err != nil {
		return err
	}
	c.UserKubeconfigs = map[string]string{}
	for user, token := range c.users {
		c.UserKubeconfigs[user] = filepath.Join(c.dir, "kubeconfig-"+user)
		if err := writeKubeconfig(c.UserKubeconfigs[user], c.URL, ca, token); err != nil {
			return err
		}
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return fmt.Errorf("load %s: %w", c.Kubeconfig, err)
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	return nil
}

// Restart stops the API server and starts it again on the same port with the same
// etcd, certificate and token, so a client can prove it recovers its watches. It
// returns once the server is ready again. It is for the clusters of StartWith (it
// fails the test); a cluster of Launch panics.
func (c *Cluster) Restart() {
	if c.t == nil {
		panic("kubetest: Restart of a cluster that Launch started")
	}
	c.t.Helper()
	if c.api == nil {
		c.t.Fatal("kubetest: Restart after Stop")
	}
	c.api.Stop(apiStopGrace)
	c.api = nil
	if err := c.startAPIServer(); err != nil {
		c.t.Fatal(err)
	}
}

// Stop stops the API server, then etcd. Calling it again does nothing.
func (c *Cluster) Stop() {
	if c.api != nil {
		c.api.Stop(apiStopGrace)
		c.api = nil
	}
	if c.etcd != nil {
		c.etcd.Stop()
		c.etcd = nil
	}
}

// prepare writes the files the API server reads (service account key, token file)
// and returns its arguments and the client token.
func (c *Cluster) prepare() (args []string, token string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, "", err
	}
	// One private key serves both flags: the server derives the verifying public key.
	keyFile := filepath.Join(c.dir, "sa.key")
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, "", err
	}
	token = rand.Text()
	tokens := token + `,podnet-test,podnet-test,"system:masters"` + "\n"
	c.users = map[string]string{}
	for _, user := range c.opts.Users {
		c.users[user] = rand.Text()
		tokens += c.users[user] + "," + user + "," + user + "\n"
	}
	tokenFile := filepath.Join(c.dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		return nil, "", err
	}
	authz := "AlwaysAllow"
	if c.opts.RBAC {
		authz = "RBAC"
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	c.URL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return []string{
		"--etcd-servers=" + c.etcd.URL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(c.dir, "certs"),
		"--service-cluster-ip-range=" + c.ServiceCIDR.String(),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + keyFile,
		"--service-account-signing-key-file=" + keyFile,
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=" + authz,
		// The default reconciler publishes the advertise address as the endpoint of the
		// "kubernetes" service: with a loopback address the server refuses to start.
		"--endpoint-reconciler-type=none",
		// Without kube-controller-manager no namespace gets its "default" service
		// account, and the plugin rejects every pod that does not name another.
		"--disable-admission-plugins=ServiceAccount",
		// On SIGTERM the server lets open watches run on by default: with informers
		// connected it outlived stop's 15 s before SIGKILL. This ends them after 2 s.
		"--shutdown-watch-termination-grace-period=2s",
	}, token, nil
}

// startAPIServer starts kube-apiserver and waits for /readyz. If it exits or does not
// get ready in time, it is stopped and the error holds the tail of its log.
func (c *Cluster) startAPIServer() error {
	// One log across restarts.
	p, err := agentproc.StartChild(exec.Command(c.bin, c.args...), c.LogPath(), nil)
	if err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	if err := waitReady(p, c.URL+"/readyz", c.token, readyTimeout); err != nil {
		p.Stop(apiStopGrace)
		c.logShown = true
		return fmt.Errorf("kube-apiserver: %w; log (last lines):\n%s", err, agentproc.Tail(c.LogPath(), 40))
	}
	c.api = p
	return nil
}

// LogPath is the API server's log file.
func (c *Cluster) LogPath() string { return filepath.Join(c.dir, "kube-apiserver.log") }

// waitReady polls url until it answers 200, the process exits or timeout passes. The
// probe does not verify the server certificate: the server creates it as it starts,
// and only the clients built afterwards can trust it.
func waitReady(p *agentproc.Child, url, token string, timeout time.Duration) error {
	client := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	last := errors.New("no answer")
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := client.Do(req); err != nil {
			last = err
		} else {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s answers %s", url, resp.Status)
		}
		select {
		case <-p.Done():
			return fmt.Errorf("exited before it was ready (%v)", p.Cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready within %v: %v", timeout, last)
}

// Binary returns the path of the kube-apiserver to run: $PODNET_KUBE_APISERVER if set,
// otherwise the one hack/kube-apiserver.sh builds (once; later calls find it in the
// cache, ${PODNET_CACHE:-$XDG_CACHE_HOME/podnet}). The script is found above the
// working directory, which `go test` sets to a package directory of the module.
func Binary() (string, error) {
	if bin := os.Getenv("PODNET_KUBE_APISERVER"); bin != "" {
		return bin, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(filepath.Join(root, "hack", "kube-apiserver.sh"))
	cmd.Env = append(os.Environ(), "KUBE_VERSION="+Version)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/kube-apiserver.sh: %v: %s", err, agentproc.LastLines(stderr.String(), 20))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return lines[len(lines)-1], nil
}

// moduleRoot walks up from the working directory to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// writeKubeconfig writes a kubeconfig with one cluster, user and context.
func writeKubeconfig(path, server string, ca []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["kubetest"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest"}
	cfg.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
