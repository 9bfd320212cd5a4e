package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/probe"
)

// A program left on a pod's host veth by another datapath (here one that drops
// everything, as a stale one can) cuts the pod off, and neither nftables nor a trace
// shows why: the doctor names the program and the veth.
func TestPrivilegedForeignBPFProgram(t *testing.T) {
	n := newNode(t).healthy()
	rep, _ := n.diagnose("")
	wantClean(t, rep)
	ctx := context.Background()
	a := n.pods["a"]
	if _, err := probe.TCP(ctx, a.ns, n.lab.Node, netip.AddrPortFrom(netip.MustParseAddr("10.88.0.1"), 8080), probeTimeout); err != nil {
		t.Fatalf("healthy: pod a -> node: %v", err)
	}

	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "stale_drop", Type: ebpf.SchedCLS, AttachType: ebpf.AttachTCXIngress, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // TCX_DROP
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	var l link.Link
	if err := kernel.Do(n.lab.Node, func() (err error) {
		l, err = link.AttachTCX(link.TCXOptions{Interface: n.link(a.hostIf).Attrs().Index, Program: prog, Attach: ebpf.AttachTCXIngress})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := probe.Blocked(ctx, a.ns, n.lab.Node, netip.AddrPortFrom(netip.MustParseAddr("10.88.0.1"), 8081), time.Second); err != nil {
		t.Errorf("pod a -> node with the program: %v", err)
	}
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	linkInfo, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	rep, _ = n.diagnose("")
	f := wantFinding(t, rep, ClassForeignBPF, fmt.Sprintf("tcx ingress program stale_drop (id %d) on veth %s", id, a.hostIf), SeverityWarning)
	if want := fmt.Sprintf("bpftool link detach id %d", linkInfo.ID); !strings.Contains(f.Fix, want) {
		t.Errorf("fix %q, want %q in it", f.Fix, want)
	}
}
