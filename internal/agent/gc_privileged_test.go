package agent

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
)

// TestPrivilegedGCIsPerNetwork covers GC through the API: a request without a network,
// or listing an attachment of another network, is refused and releases nothing; a valid
// attachment protects only the attachment with its whole key; an empty (or null) list
// releases every attachment of its network and of no other.
func TestPrivilegedGCIsPerNetwork(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.network("blue", "10.89.10.0/24")
	e.network("red", "10.89.11.0/24")
	// The same container IDs and interface names on both networks.
	blue1, blue2 := e.mustAttach("blue", "c1"), e.mustAttach("blue", "c2")
	red1, red2 := e.mustAttach("red", "c1"), e.mustAttach("red", "c2")

	want := func(sbs ...*sandbox) {
		t.Helper()
		eps, err := e.c.Endpoints(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		var got, wantKeys, wantVeths []string
		for _, ep := range eps {
			got = append(got, ep.EndpointKey.String())
		}
		for _, sb := range sbs {
			wantKeys = append(wantKeys, sb.key.String())
			wantVeths = append(wantVeths, spec.HostVethName(sb.key))
		}
		sort.Strings(got)
		sort.Strings(wantKeys)
		if !slices.Equal(got, wantKeys) {
			t.Fatalf("endpoints %v, want %v", got, wantKeys)
		}
		veths := e.links(spec.VethPrefix)
		sort.Strings(veths)
		sort.Strings(wantVeths)
		if !slices.Equal(veths, wantVeths) {
			t.Fatalf("veths %v, want %v", veths, wantVeths)
		}
		// Every allocation has a live owner, and every endpoint its addresses.
		err = e.agent.store.View(func(tx store.Tx) error {
			for _, n := range []string{"blue", "red"} {
				allocs, err := tx.Allocations(n)
				if err != nil {
					return err
				}
				var owners []string
				for _, owner := range allocs {
					owners = append(owners, owner)
				}
				sort.Strings(owners)
				var live []string
				for _, sb := range sbs {
					if sb.key.Network == n {
						live = append(live, sb.key.String())
					}
				}
				if !slices.Equal(owners, live) {
					return fmt.Errorf("network %s: addresses owned by %v, want %v", n, owners, live)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	gc := func(req api.GCRequest, released ...*sandbox) {
		t.Helper()
		resp, err := e.c.GC(ctx, req)
		if err != nil {
			t.Fatalf("GC %+v: %v", req, err)
		}
		var wantKeys []api.EndpointKey
		for _, sb := range released {
			wantKeys = append(wantKeys, sb.key)
		}
		if !slices.Equal(resp.Released, wantKeys) {
			t.Fatalf("GC %+v released %v, want %v", req, resp.Released, wantKeys)
		}
	}
	want(blue1, blue2, red1, red2)

	// Refused, nothing released.
	_, err := e.c.GC(ctx, api.GCRequest{Valid: []api.EndpointKey{blue1.key, red1.key}})
	wantCode(t, err, api.CodeInvalidConfig)
	_, err = e.c.GC(ctx, api.GCRequest{Network: "blue", Valid: []api.EndpointKey{blue1.key, red2.key}})
	wantCode(t, err, api.CodeInvalidConfig)
	want(blue1, blue2, red1, red2)

	// blue keeps blue/c1/eth0 only; red's c2/eth0 neither protects blue's nor is touched.
	gc(api.GCRequest{Network: "blue", Valid: []api.EndpointKey{blue1.key}}, blue2)
	want(blue1, red1, red2)
	gc(api.GCRequest{Network: "blue", Valid: []api.EndpointKey{blue1.key}}) // again: nothing
	want(blue1, red1, red2)

	// The last container of red is gone: an empty list releases all of red, none of blue.
	gc(api.GCRequest{Network: "red", Valid: []api.EndpointKey{}}, red1, red2)
	want(blue1)
	assertNoAllocations(t, e, "red")

	// A null list means the same; a network without endpoints, or unknown, is a no-op.
	gc(api.GCRequest{Network: "red"})
	gc(api.GCRequest{Network: "green"})
	want(blue1)
	gc(api.GCRequest{Network: "blue"}, blue1)
	want()
	assertNoAllocations(t, e, "blue")
}
