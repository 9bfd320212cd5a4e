package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

func serviceCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "service", Short: "Manage services (virtual IPs, load balancing, DNS names)"}
	var s api.ServiceSpec
	var portFlags, selector, endpoints []string
	create := &cobra.Command{
		Use:   "create NAME [--namespace NS] --port [NAME:]PORT[:TARGETPORT][/tcp|udp]... (--selector k=v,... | --endpoint IP[:PORT]...) [--headless] [--affinity client-ip]",
		Short: "Create a service",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s.Name = args[0]
			for _, p := range portFlags {
				sp, err := spec.ParseServicePort(p)
				if err != nil {
					return fmt.Errorf("--port: %w", err)
				}
				s.Ports = append(s.Ports, sp)
			}
			if len(selector) > 0 {
				sel, err := spec.ParseLabels(selector)
				if err != nil {
					return fmt.Errorf("--selector: %w", err)
				}
				s.Selector = sel
			}
			s.Endpoints = endpoints
			svc, err := g.client().CreateService(cmd.Context(), s)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), svc)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", svc.Namespace, svc.Name, joinMap(svc.VIPs, netip.Addr.String))
			return nil
		},
	}
	create.Flags().StringVarP(&s.Namespace, "namespace", "n", api.DefaultNamespace, "namespace")
	create.Flags().StringArrayVar(&portFlags, "port", nil, "port: [NAME:]PORT[:TARGETPORT][/tcp|udp] (repeatable)")
	create.Flags().StringArrayVar(&selector, "selector", nil, "labels the backends must carry: k=v,... (repeatable)")
	create.Flags().StringArrayVar(&endpoints, "endpoint", nil, "a backend by address: IP[:PORT] (repeatable)")
	create.Flags().BoolVar(&s.Headless, "headless", false, "no virtual IP: DNS answers with the backends' addresses")
	create.Flags().StringVar(&s.Affinity, "affinity", "", "client-ip: a client keeps its backend")

	var lsNamespace string
	ls := &cobra.Command{
		Use: "ls", Short: "List services", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			svcs, err := g.client().Services(cmd.Context(), lsNamespace)
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), svcs, serviceColumns)
		},
	}
	ls.Flags().StringVarP(&lsNamespace, "namespace", "n", "", "only this namespace")
	var nsFlag string
	inspect := &cobra.Command{
		Use: "inspect NAME", Short: "Show a service and its backends as JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, err := g.client().Service(cmd.Context(), nsFlag, args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), svc)
		},
	}
	inspect.Flags().StringVarP(&nsFlag, "namespace", "n", api.DefaultNamespace, "namespace")
	rm := &cobra.Command{
		Use: "rm NAME...", Short: "Remove services", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if err := g.client().DeleteService(cmd.Context(), nsFlag, name); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
			}
			return nil
		},
	}
	rm.Flags().StringVarP(&nsFlag, "namespace", "n", api.DefaultNamespace, "namespace")
	c.AddCommand(create, ls, inspect, rm)
	return c
}

func dnsCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "dns", Short: "Cluster DNS"}
	check := &cobra.Command{
		Use:   "check",
		Short: "Refuse search domains that answer a random label (a wildcard would hijack every search expansion)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := g.client().CheckDNS(cmd.Context())
			if err != nil {
				return err
			}
			if g.json() {
				if err := printJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "search domains checked: %s\n", strings.Join(res.Search, " "))
				for _, p := range res.Problems {
					fmt.Fprintf(cmd.OutOrStdout(), "PROBLEM: %s\n", p)
				}
			}
			if len(res.Problems) > 0 {
				return exitCode(1)
			}
			return nil
		},
	}
	c.AddCommand(check)
	return c
}
