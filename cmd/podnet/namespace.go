package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
)

// namespaceCmd is `podnet namespace`: namespaces and the labels network policies select
// them by.
func namespaceCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "namespace", Aliases: []string{"ns"}, Short: "Namespaces and their labels (network policies select namespaces by labels)"}
	var overwrite bool
	label := &cobra.Command{
		Use:   "label NS KEY=VALUE... | KEY-...",
		Short: "Set labels of a namespace (KEY- removes one); a label with another value needs --overwrite",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.NamespaceLabelRequest{Name: args[0], Overwrite: overwrite}
			var set []string
			for _, a := range args[1:] {
				if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
					req.Remove = append(req.Remove, k)
				} else {
					set = append(set, a)
				}
			}
			if len(set) > 0 {
				labels, err := spec.ParseLabels(set)
				if err != nil {
					return err
				}
				req.Labels = labels
			}
			ns, err := g.client().LabelNamespace(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), ns)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", ns.Name, selectorString(ns.Labels))
			return nil
		},
	}
	label.Flags().BoolVar(&overwrite, "overwrite", false, "replace labels that have another value")
	ls := &cobra.Command{
		Use: "ls", Short: "List the namespaces with their labels", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nss, err := g.client().Namespaces(cmd.Context())
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), g.json(), nss, []column[api.Namespace]{
				{"NAME", func(ns api.Namespace) string { return ns.Name }},
				{"LABELS", func(ns api.Namespace) string { return selectorString(ns.Labels) }},
				{"SOURCE", func(ns api.Namespace) string { return sourceString(ns.Source) }},
			})
		},
	}
	c.AddCommand(label, ls)
	return c
}
