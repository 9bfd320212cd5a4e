// Package testutil holds helpers shared by podnet's tests.
package testutil

import (
	"os"
	"testing"
)

// RequireRoot skips a privileged test on a developer box without root, and fails it
// under CI (CI=true), where a missing privilege is a broken setup.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("privileged test needs root (CI=true: not skipping)")
	}
	t.Skip("privileged test: needs root")
}
