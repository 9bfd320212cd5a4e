package agent

import (
	"fmt"

	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/graph"
	"github.com/podnet/podnet/internal/store"
)

// Graph draws the node the agent manages (`/graph` on the metrics address): its
// networks, endpoints, published ports and services as the store records them, with
// the node's routes as the kernel has them (an intended route that is missing, or
// another route into a pod range, shows).
func (a *Agent) Graph() (graph.Graph, error) {
	in, err := a.graphInput()
	if err != nil {
		return graph.Graph{}, err
	}
	routes, err := a.node.Routes()
	if err != nil {
		return graph.Graph{}, fmt.Errorf("graph: read the node's routes: %w", err)
	}
	in.Kernel = &graph.Kernel{}
	for _, r := range routes {
		in.Kernel.Routes = append(in.Kernel.Routes, graph.Route{Dst: r.Dst, Dev: r.Dev})
	}
	return graph.Build(in), nil
}

// graphInput reads the store's records in one view, services with their backends.
func (a *Agent) graphInput() (graph.Input, error) {
	var in graph.Input
	err := a.store.View(func(tx store.Tx) error {
		var err error
		if in.Networks, err = tx.Networks(); err != nil {
			return err
		}
		if in.Endpoints, err = tx.Endpoints(""); err != nil {
			return err
		}
		if in.Services, err = tx.Services(""); err != nil {
			return err
		}
		for i := range in.Services {
			in.Services[i].Backends = driver.Backends(in.Services[i], in.Endpoints)
		}
		return nil
	})
	if err != nil {
		return graph.Input{}, fmt.Errorf("graph: read the store: %w", err)
	}
	return in, nil
}
