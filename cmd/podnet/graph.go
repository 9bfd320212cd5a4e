package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/podnet/podnet/internal/graph"
)

// graphCmd is `podnet graph`: the node drawn from the agent's records, read through its
// API (no metrics address needed); the agent's /graph page adds the kernel's routes.
func graphCmd(g *globals) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "graph [--format svg|dot|json]",
		Short: "Draw the node: namespaces, bridges, veth pairs, routes, published ports, service VIPs",
		Long: "Draw the node from the agent's records: its namespace and each sandbox's, bridges, veth pairs\n" +
			"(host veth and sandbox interface with its addresses), routes towards pod ranges, published\n" +
			"ports and service VIPs with their backends. svg (default) is drawn by podnet, dot is Graphviz\n" +
			"input, json the graph itself. The agent serves the same, live and with the kernel's routes,\n" +
			"at /graph on its metrics address.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("format") && g.json() {
				format = "json"
			}
			render, err := graphRenderer(format)
			if err != nil {
				return err
			}
			in, err := graph.Read(cmd.Context(), g.client())
			if err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), render(graph.Build(in)))
			return err
		},
	}
	c.Flags().StringVar(&format, "format", "svg", "svg, dot or json")
	return c
}

// graphRenderer returns the renderer of a --format value.
func graphRenderer(format string) (func(graph.Graph) string, error) {
	switch format {
	case "svg":
		return graph.Graph.SVG, nil
	case "dot":
		return graph.Graph.DOT, nil
	case "json":
		return func(g graph.Graph) string { return string(g.JSON()) }, nil
	}
	return nil, fmt.Errorf("--format %q: want svg, dot or json", format)
}
