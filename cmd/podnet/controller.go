package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/agent"
	"github.com/podnet/podnet/internal/kube"
	"github.com/podnet/podnet/internal/store/etcdstore"
)

func controllerCmd(g *globals) *cobra.Command {
	var sf storeFlags
	var kubeconfig, statusSocket, logLevel string
	cfg := kube.Config{}
	c := &cobra.Command{
		Use:   "controller --kubeconfig FILE [--store etcd://HOST:PORT,...]",
		Short: "Mirror a Kubernetes cluster's namespaces, pods, services, EndpointSlices and network policies into podnet (one active per cluster, elected through a Lease)",
		Long: `podnet controller watches the Kubernetes API and writes what podnet serves into its
store: with --store, straight into the etcd the agents share; without, through the local
agent's socket (a cluster of one node). Only the controller holding the Lease
(--lease-namespace/--lease-name) writes; others stand by and take over when it stops.
Objects podnet cannot honour are reported as Kubernetes Events on them.
With --node-pod-cidrs it mirrors the nodes too: each node claims the address blocks of a
cross-node network only inside its spec.podCIDRs (where they lie in the network's subnet).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kubeconfig == "" {
				return fmt.Errorf("--kubeconfig is required")
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %w", logLevel, err)
			}
			log := agent.DefaultLogger(level)
			rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
			}
			rc.UserAgent = "podnet-controller"
			// A burst of changes (thousands of services at start) is read through
			// informers; writes are Events only.
			rc.QPS, rc.Burst = 50, 100
			cfg.Client, err = kubernetes.NewForConfig(rc)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if sf.url != "" {
				ec, err := sf.etcdConfig()
				if err != nil {
					return err
				}
				st, err := etcdstore.Open(ctx, ec)
				if err != nil {
					return fmt.Errorf("--store %s: %w", sf.url, err)
				}
				defer st.Close()
				cfg.Sink = kube.StoreSink{Store: st}
			} else {
				cfg.Sink = g.client()
			}
			if cfg.Identity == "" {
				host, _ := os.Hostname()
				cfg.Identity = fmt.Sprintf("%s-%d", host, os.Getpid())
			}
			cfg.Log = log
			ctl := kube.New(cfg)
			if err := ctl.ServeStatus(ctx, statusSocket); err != nil {
				return err
			}
			defer os.Remove(statusSocket)
			log.Info("controller starting", "identity", cfg.Identity, "lease", cfg.LeaseNamespace+"/"+cfg.LeaseName)
			return ctl.Run(ctx)
		},
	}
	c.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster's API server")
	c.Flags().StringVar(&sf.url, "store", "", "the agents' etcd, etcd://HOST:PORT[,HOST:PORT...] (default: feed the local agent through --socket)")
	c.Flags().StringVar(&sf.caCert, "etcd-cacert", "", "CA certificate of etcd's server certificate (TLS)")
	c.Flags().StringVar(&sf.cert, "etcd-cert", "", "client certificate for etcd (TLS)")
	c.Flags().StringVar(&sf.key, "etcd-key", "", "key of --etcd-cert")
	c.Flags().DurationVar(&sf.dialTimeout, "etcd-dial-timeout", 5*time.Second, "how long to wait for etcd to answer")
	c.Flags().StringVar(&statusSocket, "status-socket", kube.DefaultStatusSocket, "unix socket answering `podnet controller status` and /metrics")
	c.Flags().StringVar(&cfg.Identity, "identity", "", "this controller's name in the Lease (default: HOSTNAME-PID)")
	c.Flags().StringVar(&cfg.LeaseNamespace, "lease-namespace", kube.DefaultLeaseNamespace, "namespace of the leader Lease")
	c.Flags().StringVar(&cfg.LeaseName, "lease-name", kube.DefaultLeaseName, "name of the leader Lease")
	c.Flags().DurationVar(&cfg.LeaseDuration, "lease-duration", kube.DefaultLeaseDuration, "how long a standby waits after the leader's last renewal")
	c.Flags().DurationVar(&cfg.RenewDeadline, "renew-deadline", kube.DefaultRenewDeadline, "how long the leader tries to renew before it stops")
	c.Flags().DurationVar(&cfg.RetryPeriod, "retry-period", kube.DefaultRetryPeriod, "how often the Lease is tried")
	c.Flags().BoolVar(&cfg.NodePodCIDRs, "node-pod-cidrs", false, "take each node's address blocks from its spec.podCIDRs (mirrors the nodes: name, InternalIP, podCIDRs)")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the controller's leader, objects mirrored per kind, last sync and lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			s, err := kube.ReadStatus(ctx, statusSocket)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(os.Stdout, s)
			}
			fmt.Printf("identity:   %s\n", s.Identity)
			role := "standby"
			if s.Leading {
				role = "leader"
			}
			fmt.Printf("role:       %s (leader: %s)\n", role, s.Leader)
			fmt.Printf("synced:     %v, %d pending\n", s.Synced, s.Pending)
			for _, kind := range []string{api.KindNamespace, api.KindPod, api.KindService, api.KindNetworkPolicy, api.KindNode} {
				fmt.Printf("%-12s%d\n", kind+":", s.Objects[kind])
			}
			last := "never"
			if !s.LastSync.IsZero() {
				last = s.LastSync.Format(time.RFC3339)
			}
			fmt.Printf("last sync:  %s (lag %.3fs, max %.3fs)\n", last, s.LagSeconds, s.MaxLagSeconds)
			fmt.Printf("reported:   %d objects with problems (Kubernetes Events), %d store errors\n", s.Reported, s.SinkErrors)
			return nil
		},
	}
	status.Flags().StringVar(&statusSocket, "status-socket", kube.DefaultStatusSocket, "the controller's status socket")
	c.AddCommand(status)
	return c
}
