// Package testutil holds helpers shared by podnet's tests.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// Command returns the path of a command that tests run as fixtures (iptables-legacy,
// ipset, nft...), found in PATH or in /usr/sbin and /sbin (root's PATH may lack
// them). A test that needs one calls RequireCommands first.
func Command(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	return name
}

// RequireCommands skips a test whose fixture commands are missing on a developer box,
// and fails it under CI (CI=true): `make test` installs their Debian packages
// (TEST_PACKAGES in the Makefile).
func RequireCommands(t testing.TB, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if !isExecutable(Command(n)) {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("missing %s (make test-deps installs them)", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
