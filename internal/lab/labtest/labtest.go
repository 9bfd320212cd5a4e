// Package labtest gives privileged tests a lab (internal/lab): a node and an outside
// namespace, removed when the test ends.
package labtest

import (
	"testing"

	"github.com/podnet/podnet/internal/lab"
	"github.com/podnet/podnet/internal/testutil"
)

// New builds a lab for t, which needs root (testutil.RequireRoot), and removes it at
// t's cleanup.
func New(t testing.TB) *lab.Lab {
	t.Helper()
	testutil.RequireRoot(t)
	l, err := lab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
