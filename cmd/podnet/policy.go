package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/policy"
)

// policyCmd is `podnet policy`: Kubernetes NetworkPolicies (networking.k8s.io/v1).
func policyCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "policy", Short: "Network policies with Kubernetes NetworkPolicy semantics"}
	var file string
	apply := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "Create or replace NetworkPolicies from YAML or JSON (several documents, or kind: List)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r io.Reader = cmd.InOrStdin()
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			pols, err := policy.Parse(r)
			if err != nil {
				return err
			}
			pols, err = g.client().ApplyPolicies(cmd.Context(), pols)
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), pols, policyColumns)
		},
	}
	apply.Flags().StringVarP(&file, "filename", "f", "", "file of policies, - for standard input (required)")
	apply.MarkFlagRequired("filename")

	var ns string
	ls := &cobra.Command{
		Use: "ls [-n NS]", Short: "List network policies", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pols, err := g.client().Policies(cmd.Context(), ns)
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), pols, policyColumns)
		},
	}
	ls.Flags().StringVarP(&ns, "namespace", "n", "", "only this namespace")
	inspect := &cobra.Command{
		Use: "inspect NAME [-n NS]", Short: "Show one network policy", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := g.client().Policy(cmd.Context(), ns, args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), p)
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME... [-n NS]", Short: "Remove network policies", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if err := g.client().DeletePolicy(cmd.Context(), ns, name); err != nil {
					return err
				}
				if !g.json() {
					fmt.Fprintln(cmd.OutOrStdout(), ns+"/"+name)
				}
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string][]string{"removed": args})
			}
			return nil
		},
	}
	for _, sub := range []*cobra.Command{inspect, rm} {
		sub.Flags().StringVarP(&ns, "namespace", "n", api.DefaultNamespace, "namespace")
	}

	var from, to string
	explain := &cobra.Command{
		Use:   "explain --from ENDPOINT|IP --to ENDPOINT|IP:PORT[/PROTO]",
		Short: "Whether the policies allow a connection, and which policies and rules decide it (both directions)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := explainRequest(from, to)
			if err != nil {
				return err
			}
			var v policy.Verdict
			if err := g.client().ExplainPolicy(cmd.Context(), req, &v); err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), v)
			}
			fmt.Fprintln(cmd.OutOrStdout(), v)
			return nil
		},
	}
	explain.Flags().StringVar(&from, "from", "", "source: an endpoint (NAMESPACE/NAME, NAME, container ID) or an address")
	explain.Flags().StringVar(&to, "to", "", "destination and port: ENDPOINT:PORT[/tcp|udp|sctp] or IP:PORT (IPv6 in brackets)")
	explain.MarkFlagRequired("from")
	explain.MarkFlagRequired("to")
	c.AddCommand(apply, ls, inspect, rm, explain)
	return c
}

// explainRequest parses explain's --from and --to (TARGET:PORT[/PROTO]).
func explainRequest(from, to string) (api.PolicyExplainRequest, error) {
	req := api.PolicyExplainRequest{From: from}
	target, proto, _ := strings.Cut(to, "/")
	i := strings.LastIndexByte(target, ':')
	if i < 0 {
		return req, api.AsError(api.Invalid("policy explain", "to", to, "want ENDPOINT:PORT[/PROTO] or IP:PORT[/PROTO]"))
	}
	port, err := strconv.ParseUint(target[i+1:], 10, 16)
	if err != nil || port == 0 {
		return req, api.AsError(api.Invalid("policy explain", "to", to, "port %q: want 1 to 65535", target[i+1:]))
	}
	req.To, req.Port, req.Protocol = strings.Trim(target[:i], "[]"), uint16(port), proto
	return req, nil
}

var policyColumns = []column[api.NetworkPolicy]{
	{"NAMESPACE", func(p api.NetworkPolicy) string { return p.Namespace }},
	{"NAME", func(p api.NetworkPolicy) string { return p.Name }},
	{"POD SELECTOR", func(p api.NetworkPolicy) string { return labelSelectorString(p.Spec.PodSelector) }},
	{"TYPES", func(p api.NetworkPolicy) string { return strings.Join(p.Spec.PolicyTypes, ",") }},
	{"RULES", func(p api.NetworkPolicy) string {
		return fmt.Sprintf("%d ingress, %d egress", len(p.Spec.Ingress), len(p.Spec.Egress))
	}},
	{"SOURCE", func(p api.NetworkPolicy) string { return sourceString(p.Source) }},
}

// labelSelectorString prints a label selector as kubectl does: k=v,k in (a,b),!k; the
// empty selector selects everything.
func labelSelectorString(s api.LabelSelector) string {
	parts := []string{}
	if len(s.MatchLabels) > 0 {
		parts = append(parts, selectorString(s.MatchLabels))
	}
	for _, e := range s.MatchExpressions {
		vals := strings.Join(slices.Sorted(slices.Values(e.Values)), ",")
		switch e.Operator {
		case api.SelectorIn:
			parts = append(parts, e.Key+" in ("+vals+")")
		case api.SelectorNotIn:
			parts = append(parts, e.Key+" notin ("+vals+")")
		case api.SelectorExists:
			parts = append(parts, e.Key)
		case api.SelectorDoesNotExist:
			parts = append(parts, "!"+e.Key)
		}
	}
	if len(parts) == 0 {
		return "(all)"
	}
	return strings.Join(parts, ",")
}
