// Command podnet-cni is podnet's CNI plugin ("type": "podnet-cni"). It forwards each CNI
// verb to the podnet agent and prints the result; the logic, the CNI protocol included,
// lives in internal/cniplugin.
//
// The binary stays lean (a runtime execs it once per pod per verb): deps_test.go fails
// when a heavy module, the CNI library among them, is linked in.
package main

import (
	"os"

	"github.com/podnet/podnet/internal/cniplugin"
)

func main() {
	os.Exit((&cniplugin.Plugin{}).Main(os.Getenv, os.Stdin, os.Stderr))
}
