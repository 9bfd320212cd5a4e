package graph

import (
	"context"

	"github.com/podnet/podnet/api"
)

// Reader reads an agent's records; *api.Client is one (the CLI's way to the agent).
type Reader interface {
	Networks(ctx context.Context) ([]api.Network, error)
	Endpoints(ctx context.Context, network string) ([]api.Endpoint, error)
	Services(ctx context.Context, namespace string) ([]api.Service, error)
}

var _ Reader = (*api.Client)(nil)

// Read reads what Build draws from an agent: every network, endpoint and service (with
// its backends). It reads no kernel facts.
func Read(ctx context.Context, r Reader) (Input, error) {
	var in Input
	var err error
	if in.Networks, err = r.Networks(ctx); err != nil {
		return Input{}, err
	}
	if in.Endpoints, err = r.Endpoints(ctx, ""); err != nil {
		return Input{}, err
	}
	if in.Services, err = r.Services(ctx, ""); err != nil {
		return Input{}, err
	}
	return in, nil
}
