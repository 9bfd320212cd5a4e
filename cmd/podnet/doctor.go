package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

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
tables of every owner, the conntrack table, the sandboxes behind its veths, and the
search domains of the resolv.conf files given. It reports the root causes it finds,
worst first, each with the kernel object at fault, the evidence and a command that
fixes it. It changes nothing; its only packets are DNS queries for random names under
the search domains.

Classes: route-overlap, stale-plugin-leftover, ip-forward-disabled, proxy-arp-disabled,
mtu-mismatch, neighbour-wrong-mac, dns-search-wildcard, conntrack-table-full,
rp-filter-strict.

Pod ranges come from the kernel alone: subnets of bridges with veth ports to other
namespaces, host routes through veths without a master. Legacy iptables tables,
ipsets and the agent's intended state are not read yet.

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
				ns, _, err := openNetns(nsPath)
				if err != nil {
					return fmt.Errorf("--netns %q: %w", nsPath, err)
				}
				defer ns.Close()
				opts.Name = nsPath
				if snap, err = doctor.Collect(cmd.Context(), ns, opts); err != nil {
					return err
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
