// Command podnet-cni is podnet's CNI plugin ("type": "podnet-cni"). It forwards each CNI
// verb to the podnet agent and prints the result; the logic lives in internal/cniplugin.
//
// The binary stays lean (a runtime execs it once per pod per verb): deps_test.go fails
// when a heavy module is linked in.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet/internal/cniplugin"
)

func main() {
	if err := cniplugin.CheckIfName(os.Getenv("CNI_IFNAME")); err != nil && os.Getenv("CNI_COMMAND") != "VERSION" {
		err.Print()
		os.Exit(1)
	}
	p := &cniplugin.Plugin{}
	skel.PluginMainFuncs(
		skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status},
		version.PluginSupports(cniplugin.SupportedVersions...),
		cniplugin.About,
	)
}
