package agent

import (
	"fmt"

	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/graph"
)

// Graph draws the node the agent manages (`/graph` on the metrics address): its
// networks, endpoints, published ports and services as the store records them, with
// the node's routes and overlay devices as the kernel has them (an intended route that
// is missing, or another route into a pod range, shows).
func (a *Agent) Graph() (graph.Graph, error) {
	in, err := a.graphInput()
	if err != nil {
		return graph.Graph{}, err
	}
	routes, err := a.node.Routes()
	if err != nil {
		return graph.Graph{}, fmt.Errorf("graph: read the node's routes: %w", err)
	}
	tunnels, err := a.node.Tunnels()
	if err != nil {
		return graph.Graph{}, fmt.Errorf("graph: read the node's tunnels: %w", err)
	}
	in.Kernel = &graph.Kernel{Tunnels: tunnels}
	for _, r := range routes {
		in.Kernel.Routes = append(in.Kernel.Routes, graph.Route{Dst: r.Dst, Dev: r.Dev})
	}
	return graph.Build(in), nil
}

// graphInput reads the store's records, services with their backends.
func (a *Agent) graphInput() (graph.Input, error) {
	r, err := a.records()
	if err != nil {
		return graph.Input{}, fmt.Errorf("graph: read the store: %w", err)
	}
	in := graph.Input{Networks: r.nets, Endpoints: r.eps, Services: r.svcs, Node: a.clusterNode()}
	for i := range in.Services {
		in.Services[i].Backends = driver.Backends(in.Services[i], in.Endpoints)
	}
	return in, nil
}
