package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/doctor"
)

func doctorCmd(g *globals) *cobra.Command {
	var nsPath, save, load string
	var opts doctor.Options
	c := &cobra.Command{
		Use:   "doctor [--netns PATH] [--resolv-conf FILE]... [--output json]",
		Short: "Diagnose a node's network namespace: what is wrong, the evidence, the fix",
		Long: `doctor reads one node network namespace (the caller's unless --netns names another):
links, addresses, routes of every table, rules, neighbours, FDB, sysctls, the nftables
tables of every owner, legacy iptables tables and ipsets, the conntrack table, the
sandboxes behind its veths, and the search domains of the resolv.conf files given and
of each sandbox's own (as a process inside it sees it, asked from inside the pod). It reports the root causes it finds,
worst first, each with the kernel object at fault, the evidence and a command that
fixes it. It changes nothing; its only packets are DNS queries for random names under
the search domains.

Classes: route-overlap, stale-plugin-leftover, ip-forward-disabled, proxy-arp-disabled,
mtu-mismatch, neighbour-wrong-mac, dns-search-wildcard, conntrack-table-full,
rp-filter-strict, podnet-state-drift.

Without --netns, the namespace is the one the podnet agent on --socket manages (the
caller's when no agent answers). When the agent manages the namespace read, its
records are read too: the ranges of its networks, its pods' addresses and MACs, and
what the kernel lacks of them (class podnet-state-drift). Otherwise pod ranges come
from the kernel alone: subnets of bridges with veth ports to other namespaces, host
routes through veths without a master.

Exit status: 0 without errors or warnings, 1 with warnings only, 2 with an error.`,
		Args: cobra.NoArgs,
		// The exit status carries the verdict: no usage text, no "Error:" line for it.
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var snap *doctor.Snapshot
			if load != "" {
				b, err := os.ReadFile(load)
				if err != nil {
					return fmt.Errorf("--from-snapshot: %w", err)
				}
				snap = &doctor.Snapshot{}
				if err := json.Unmarshal(b, snap); err != nil {
					return fmt.Errorf("--from-snapshot %s: %w", load, err)
				}
			} else {
				st, agentErr := agentStatus(cmd.Context(), g)
				if nsPath == "" && agentErr == nil {
					nsPath = st.Netns
				}
				ns, _, err := openNetns(nsPath)
				if err != nil {
					return fmt.Errorf("--netns %q: %w", nsPath, err)
				}
				defer ns.Close()
				opts.Name = nsPath
				var note string
				opts.Intended, note = intendedState(cmd.Context(), g, st, agentErr, ns)
				if snap, err = doctor.Collect(cmd.Context(), ns, opts); err != nil {
					return err
				}
				if note != "" {
					snap.Notes = append(snap.Notes, note)
				}
			}
			if save != "" {
				b, err := json.MarshalIndent(snap, "", "  ")
				if err != nil {
					return err
				}
				if err := os.WriteFile(save, append(b, '\n'), 0o600); err != nil {
					return fmt.Errorf("--save-snapshot: %w", err)
				}
			}
			rep := doctor.Diagnose(snap)
			write := doctor.WriteText
			if g.json() {
				write = doctor.WriteJSON
			}
			if err := write(cmd.OutOrStdout(), rep); err != nil {
				return err
			}
			if code := rep.ExitCode(); code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	c.Flags().StringVar(&nsPath, "netns", "", "network namespace to diagnose (e.g. /run/netns/NAME, /proc/PID/ns/net); default: the caller's")
	c.Flags().StringArrayVar(&opts.ResolvConfs, "resolv-conf", nil, "resolv.conf whose search domains to check (repeatable)")
	c.Flags().DurationVar(&opts.DNSTimeout, "dns-timeout", time.Second, "timeout of each DNS probe")
	c.Flags().StringVar(&save, "save-snapshot", "", "also write what was read to FILE as JSON (for a bug report or a test)")
	c.Flags().StringVar(&load, "from-snapshot", "", "diagnose a snapshot saved by --save-snapshot instead of a namespace")
	return c
}

// agentStatus asks the agent on the socket for its STATUS, briefly: a node without an
// agent is diagnosed all the same.
func agentStatus(ctx context.Context, g *globals) (api.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return g.client().Status(ctx)
}

// intendedState reads the agent's records when the agent (status, or statusErr when it
// did not answer) manages ns; otherwise it says in a note why they are not part of the
// diagnosis.
func intendedState(ctx context.Context, g *globals, st api.Status, statusErr error, ns netns.NsHandle) (*doctor.Intended, string) {
	if statusErr != nil {
		return nil, fmt.Sprintf("no podnet agent answered on %s: the diagnosis uses the kernel alone", g.socket)
	}
	if st.Netns == "" {
		return nil, "the podnet agent does not say which namespace it manages: its records were not read"
	}
	agentNS, err := netns.GetFromPath(st.Netns)
	if err != nil {
		return nil, fmt.Sprintf("the podnet agent's namespace %s: %v: its records were not read", st.Netns, err)
	}
	defer agentNS.Close()
	if !agentNS.Equal(ns) {
		return nil, fmt.Sprintf("the podnet agent on %s manages another namespace (%s): its records were not read", g.socket, st.Netns)
	}
	in, err := doctor.ReadIntended(ctx, g.client())
	if err != nil {
		return nil, fmt.Sprintf("the podnet agent's records: %v: the diagnosis uses the kernel alone", err)
	}
	return in, ""
}
