package nfttest

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/podnet/podnet/internal/nft"
)

func TestFake(t *testing.T) {
	var f Fake
	r := nft.Ruleset{Networks: []nft.Network{{
		Name: "blue", Bridge: "pn-blue", Subnets: []netip.Prefix{netip.MustParsePrefix("10.88.1.0/24")}, Masquerade: true,
	}}}
	if ok, err := f.InSync(nft.Ruleset{}); ok || err != nil {
		t.Fatalf("InSync of an empty Fake = %v, %v; want false (no table)", ok, err)
	}
	if _, ok := f.Last(); ok {
		t.Fatal("Last before any Sync reports a ruleset")
	}
	for range 2 {
		if err := f.Sync(r); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := f.InSync(r); !ok {
		t.Fatal("InSync false after Sync")
	}
	if ok, _ := f.InSync(nft.Ruleset{}); ok {
		t.Fatal("InSync true for another ruleset")
	}
	if f.Syncs() != 2 || f.Dump() != nft.Render(r) {
		t.Fatalf("Syncs = %d, Dump = %q", f.Syncs(), f.Dump())
	}
	last, _ := f.Last()
	last.Networks[0].Subnets[0] = netip.Prefix{} // a copy: does not change the Fake
	if ok, _ := f.InSync(r); !ok {
		t.Fatal("changing Last's result changed the Fake")
	}

	f.Break()
	if ok, _ := f.InSync(r); ok {
		t.Fatal("InSync true after Break")
	}
	if err := f.Sync(r); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.InSync(r); !ok {
		t.Fatal("Sync did not repair Break")
	}

	for range 2 {
		if err := f.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := f.InSync(r); ok || f.Dump() != "" {
		t.Fatal("table still there after Delete")
	}

	if err := f.Sync(nft.Ruleset{Networks: []nft.Network{{Name: "x"}}}); err == nil {
		t.Fatal("Sync accepted an invalid ruleset")
	}
	boom := errors.New("boom")
	f.SetErr(boom)
	if err := f.Sync(r); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want boom", err)
	}
	if _, err := f.InSync(r); !errors.Is(err, boom) {
		t.Fatalf("InSync = %v, want boom", err)
	}
	if err := f.Delete(); !errors.Is(err, boom) {
		t.Fatalf("Delete = %v, want boom", err)
	}
}
